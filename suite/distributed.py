"""Data-parallel set-up for static programs launched by `python -m paddle.distributed.launch`.

One process per card. Gradients are summed across ranks by an all-reduce appended between
backward and the optimizer update, then divided by the number of ranks. Communication runs on
ring 0: NCCL set up by paddle.distributed.init_parallel_env() on GPU, a gloo context on CPU.
"""
import os
from dataclasses import dataclass, field

import numpy as np
import paddle

from sparsity.ops import pir_enabled


def world():
    """(rank, number of ranks) from the launcher's environment; (0, 1) for a plain `python train.py`."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0")), int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


@dataclass
class World:
    rank: int
    nranks: int
    place: object
    _barrier: object = field(default=None, repr=False)

    def barrier(self):
        """Every rank waits here until all arrive (a one-element all-reduce on ring 0)."""
        if self.nranks == 1:
            return
        if self._barrier is None:
            prog, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(prog, startup):
                token = paddle.full([1], 1.0, "float32")
                token = _all_reduce_sum(token)
            self._barrier = (prog, token, paddle.static.Executor(self.place))
        prog, token, exe = self._barrier
        total = exe.run(prog, fetch_list=[token])[0]
        if int(np.asarray(total).reshape(-1)[0]) != self.nranks:
            raise RuntimeError(f"barrier counted {total} ranks, expected {self.nranks}")


def init(place, rank, nranks):
    """Set up ring 0 for this process (call before paddle.enable_static()); returns the World."""
    if nranks > 1:
        if isinstance(place, paddle.CUDAPlace):
            paddle.distributed.init_parallel_env()
        else:
            core = paddle.base.core
            core.CommContextManager.create_gloo_comm_context(core.create_or_get_global_tcp_store(), "0", rank, nranks)
    return World(rank, nranks, place)


def minimize(optimizer, loss, nranks):
    """optimizer.minimize(loss), with gradients averaged over ranks when nranks > 1.

    SUITE_SKIP_GRAD_ALLREDUCE=1 leaves the all-reduce out: only for tests showing that ranks then diverge.
    """
    if nranks == 1 or os.environ.get("SUITE_SKIP_GRAD_ALLREDUCE") == "1":
        optimizer.minimize(loss)
        return
    params_grads = optimizer.backward(loss)
    optimizer.apply_gradients([(p, _all_reduce_sum(g) * (1.0 / nranks)) for p, g in params_grads])


def _all_reduce_sum(x):
    """In-graph sum of x over all ranks on ring 0."""
    if pir_enabled():
        paddle.distributed.all_reduce(x)
        return x
    x.block.append_op(type="all_reduce", inputs={"x": [x]}, outputs={"out": [x]}, attrs={"ring_id": 0, "reduce_type": 0})
    return x

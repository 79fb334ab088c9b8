"""Data-parallel set-up for static programs launched by `python -m paddle.distributed.launch`.

One process per card. Gradients are summed across ranks by an all-reduce appended between
backward and the optimizer update, then divided by the number of ranks. Communication runs on
ring 0: an NCCL communicator on GPU, gloo on CPU.
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
    _summer: object = field(default=None, repr=False)

    def _sum(self, values):
        """Element-wise sum of a small float vector over all ranks (an all-reduce on ring 0)."""
        if self._summer is None:
            prog, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(prog, startup):
                vector = paddle.static.data("rank_values", [2], "float64")
                total = _all_reduce_sum(vector * 1.0)
            self._summer = (prog, total, paddle.static.Executor(self.place))
        prog, total, exe = self._summer
        return np.asarray(exe.run(prog, feed={"rank_values": np.asarray(values, "float64")}, fetch_list=[total])[0])

    def barrier(self):
        """Every rank waits here until all arrive."""
        if self.nranks > 1:
            self._sum([1.0, 0.0])

    def all_ok(self, ok):
        """True when `ok` is true on every rank (each rank calls it; it is a barrier too): how ranks agree to go on
        or to stop together when only one of them (rank 0, which writes) could fail."""
        if self.nranks == 1:
            return bool(ok)
        return self._sum([1.0 if ok else 0.0, 0.0])[0] == self.nranks

    def same_on_all_ranks(self, value):
        """True when every rank passes the same number (sum of squares equals square of sum / n)."""
        if self.nranks == 1:
            return True
        total, squares = self._sum([float(value), float(value) ** 2])
        return abs(total**2 - self.nranks * squares) < 1e-6


def init(place, rank, nranks):
    """Set up ring 0 for this process (call before paddle.enable_static()); returns the World.

    Paddle's static collectives look up the communicator of ring 0. On GPU, the private
    `_init_parallel_env("nccl")` (the same in Paddle 2.6 and 3.x) creates it from the launcher's
    environment; on CPU that helper needs a device id, so the gloo context it would make is made here.
    """
    if nranks > 1:
        if isinstance(place, paddle.CUDAPlace):
            from paddle.distributed.collective import _init_parallel_env

            _init_parallel_env("nccl")
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

"""Binding to paddle.static Programs and Scopes, the same for PIR and the legacy IR.

Reads parameters and normalization inputs off a program, creates mask variables, appends the
in-graph masking ops, runs the shared mask computation as a small program of its own, and moves
single tensors between a scope and NumPy.

Masks are named `<param>_mask` and are persistable variables that are not parameters, like
PaddleSlim's: `program.all_parameters()` does not list them and `paddle.static.save` writes them
to `.pdopt`. The legacy IR makes them with `create_global_var`; PIR cannot (its `full` refuses the
call), so there they are persistable values made like the optimizer's accumulators
(`paddle.pir.core.create_persistable_value`), which PIR saves and loads the same way.
"""
import os
from dataclasses import dataclass

import numpy as np
import paddle

from . import ops
from .ops import pir_enabled

MASK_SUFFIX = "_mask"
NORM_OPS = {"batch_norm", "sync_batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"}


@dataclass(frozen=True)
class Param:
    """A parameter of a program: its name, static shape, handle in that program, and whether it trains."""

    name: str
    shape: tuple
    handle: object
    trainable: bool = True


def mask_name(param_name):
    return param_name + MASK_SUFFIX


def is_mask_name(name):
    return name.endswith(MASK_SUFFIX)


def _op_type(op):
    """Op type without dialect prefix or in-place suffix: 'pd_op.batch_norm_' -> 'batch_norm'."""
    name = op.name() if pir_enabled() else op.type
    return name.split(".")[-1].rstrip("_")


def parameters(program):
    """Every parameter of the program in creation order, masks included."""
    if not pir_enabled():
        return [Param(p.name, tuple(p.shape), p, p.trainable) for p in program.global_block().all_parameters()]
    found = []
    for op in program.global_block().ops:
        if op.name() == "builtin.parameter":
            value = op.result(0)
            attrs = op.attrs()
            trainable = all(attrs.get("trainable", [False]))  # the LR variable has no such attribute
            found.append(Param(attrs["parameter_name"], tuple(value.shape), value, trainable))
    return found[::-1]  # PIR inserts each new parameter op at the top of the block


def _source_parameter(value, depth=3):
    """Name of the parameter a PIR value comes from, looking through up to `depth` single-input ops (casts)."""
    op = value.get_defining_op()
    for _ in range(depth + 1):
        if op is None:
            return None
        if op.name() == "builtin.parameter":
            return op.attrs()["parameter_name"]
        sources = op.operands_source()
        if len(sources) != 1:
            return None
        op = sources[0].get_defining_op()
    return None


def normalization_inputs(program):
    """Names of the parameters read by normalization ops (scales, shifts, running statistics)."""
    names = set()
    for op in program.global_block().ops:
        if _op_type(op) not in NORM_OPS:
            continue
        if pir_enabled():
            names.update(n for n in map(_source_parameter, op.operands_source()) if n)
        else:
            names.update(op.input_arg_names)
    return names


def model_params(program):
    """A static program's own parameters: trainable ones and normalization statistics (not the LR variable)."""
    norm_inputs = normalization_inputs(program)
    return [p for p in parameters(program) if p.trainable or p.name in norm_inputs]


def updates_parameters(program, names):
    """True when the program holds ops that update any of these parameters (optimizer ops)."""
    names = set(names)
    for op in program.global_block().ops:
        if pir_enabled():
            kind = op.name()
            if not kind.endswith("_") or _op_type(op) in ("assign", "assign_out", "batch_norm"):
                continue
            if any(_source_parameter(v, depth=0) in names for v in op.operands_source()):
                return True
        elif "ParamOut" in op.output_names and set(op.input("Param")) & names:
            return True
    return False


def create_mask(param, main, startup):
    """A persistable mask of ones named `<param>_mask` beside `param` (initialized by `startup`)."""
    name = mask_name(param.name)
    with paddle.static.program_guard(main, startup):
        if pir_enabled():
            from paddle.pir.core import create_persistable_value

            mask = create_persistable_value("float32", list(param.shape), name, initializer=paddle.nn.initializer.Constant(1.0))
        else:
            mask = paddle.static.create_global_var(list(param.shape), 1.0, "float32", persistable=True, name=name)
    mask.stop_gradient = True
    return Param(name, tuple(param.shape), mask, trainable=False)


def append_masking(pairs, main, startup):
    """Append `w = w * mask` for each (weight, mask) at the end of `main` (after the optimizer ops)."""
    with paddle.static.program_guard(main, startup):
        for weight, mask in pairs:
            paddle.assign(ops.masked(weight.handle, mask.handle), output=weight.handle)


def reference(var, dtype="float32"):
    """Handle to an existing persistable variable (weight or mask) inside the program being built, by name."""
    if pir_enabled():
        value = paddle.static.data(var.name, list(var.shape), dtype)
        value.persistable = True
        return value
    block = paddle.static.default_main_program().global_block()
    return block.create_var(name=var.name, shape=list(var.shape), dtype=dtype, persistable=True)


def structural_names(layer):
    """{variable name: structural name} of a paddle.nn.Layer built in static mode ('conv2d_3.w_0': 'features.0.weight')."""
    return {value.name: key for key, value in layer.state_dict().items()}


def default_place():
    """This process's GPU when Paddle has CUDA and a device is visible (FLAGS_selected_gpus under launch), else CPU."""
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return paddle.CUDAPlace(int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0]))
    return paddle.CPUPlace()


def is_initialized(scope, name):
    """True when the scope holds an initialized dense tensor of that name (feed/fetch lists are not)."""
    var = scope.find_var(name)
    try:
        return var is not None and var.get_tensor()._is_initialized()
    except ValueError:
        return False


def read(scope, name):
    """A copy of a scope tensor as a NumPy array."""
    var = scope.find_var(name)
    if var is None or not var.get_tensor()._is_initialized():
        raise KeyError(f"variable {name!r} is not initialized in the scope; run the startup program first")
    return np.array(var.get_tensor())


def write(scope, name, array, place):
    """Set a scope tensor to a NumPy array, shape kept (np.ascontiguousarray would make a 0-d array, such as the
    LR, one of shape [1])."""
    scope.var(name).get_tensor().set(np.require(array, requirements="C"), place)


def persistable_handles(program):
    """{name: variable (legacy IR) or Value (PIR)} of every persistable of the program."""
    if pir_enabled():
        from paddle.static.pir_io import get_pir_parameters

        params, opts = get_pir_parameters(program)
        return {v.name: v for v in params + opts if v.persistable}
    from paddle.static.io import is_persistable

    return {v.name: v for v in program.list_vars() if is_persistable(v)}


def persistables(program):
    """{name: shape} of every persistable of the program: parameters, masks, optimizer state, LR."""
    return {name: tuple(v.shape) for name, v in persistable_handles(program).items()}


FEED_NAME = "sparsity_selection_feed"


class StaticBinding:
    """The pruner's view of a static Program and Scope: parameters, mask variables, and programs of its own
    that compute masks or apply them (each built once, then run by an Executor when needed)."""

    def __init__(self, program, scope=None, place=None, startup_program=None):
        self.program = program
        self.startup_program = startup_program or paddle.static.default_startup_program()
        self.scope = scope or paddle.static.global_scope()
        self.place = place or default_place()
        self.model_params = model_params(program)
        self.norm_names = normalization_inputs(program)
        self.structural_names = {}
        self._executor = paddle.static.Executor(self.place)
        self._programs = {}
        self._masking_attached = False
        self.masks, self.pruned = {}, []
        self.layer_params = {}  # a static program has no layers: a skip set names parameters

    def create_masks(self, pruned):
        """A mask beside every model parameter, as PaddleSlim makes them; only the pruned ones are ever applied.
        Returns PaddleSlim's `pruner.masks`: {parameter name: mask variable name}, for `scope.find_var(...)`
        (`self.masks` keeps {parameter name: Param of the mask})."""
        existing = persistable_handles(self.program)
        for p in self.model_params:
            name = mask_name(p.name)
            self.masks[p.name] = (
                Param(name, tuple(p.shape), existing[name], trainable=False) if name in existing else create_mask(p, self.program, self.startup_program)
            )
        self.pruned = list(pruned)
        if all(is_initialized(self.scope, p.name) for p in self.model_params):  # the startup program already ran
            self.ensure_initialized()
        self.attach_masking()
        return {name: m.name for name, m in self.masks.items()}

    @property
    def no_grad_set(self):
        """What optimizer.minimize(no_grad_set=...) accepts: Values under PIR, names under the legacy IR."""
        return {m.handle if pir_enabled() else m.name for m in self.masks.values()}

    def ensure_initialized(self):
        """Masks the startup program has not set (the pruner came after it ran) start as ones; a mask that user
        code wrote in another dtype (a bool array, say) becomes float32 0/1 again.

        Programs read the masks as the float32 they were declared: PIR picks each kernel by the declared dtype and
        the legacy executor keeps the kernel of a program's first run, so an in-graph cast cannot follow a tensor
        whose dtype changed in the scope. This runs before every program of the pruner (not at a step() that
        runs none: a check costs several microseconds a mask, where that step costs nothing)."""
        for m in self.masks.values():
            if not is_initialized(self.scope, m.name):
                write(self.scope, m.name, np.ones(m.shape, "float32"), self.place)
                continue
            tensor = self.scope.find_var(m.name).get_tensor()
            if tensor._dtype() != paddle.base.core.VarDesc.VarType.FP32:  # what a scope tensor reports in both IRs
                write(self.scope, m.name, (np.array(tensor) != 0).astype("float32"), self.place)

    def attach_masking(self):
        """Append the in-graph masking once the program has its optimizer ops; True when just attached."""
        if self._masking_attached or not updates_parameters(self.program, [p.name for p in self.pruned]):
            return False
        append_masking([(p, self.masks[p.name]) for p in self.pruned], self.program, self.startup_program)
        self._masking_attached = True
        return True

    def run(self, key, build, feed=None, feed_dtype=None):
        """Run `build(weights, masks, feed)` (Paddle ops over the pruned weights and their masks) as a
        program of its own, built on first use; returns its outputs (1-element tensors) as floats."""
        self.ensure_initialized()
        if key not in self._programs:
            program, scratch = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(program, scratch):
                weights = [reference(p) for p in self.pruned]
                masks = [reference(self.masks[p.name]) for p in self.pruned]
                feed_var = None if feed is None else paddle.static.data(FEED_NAME, [len(feed)], feed_dtype)
                outputs = build(weights, masks, feed_var)
            self._programs[key] = (program, outputs)
        program, outputs = self._programs[key]
        fetched = self._executor.run(program, feed={} if feed is None else {FEED_NAME: feed}, fetch_list=outputs, scope=self.scope)
        return [float(np.asarray(t).reshape(-1)[0]) for t in fetched]

    def after_step(self, apply_masks):
        """The training program masks the weights itself; on the step that attaches that masking, apply the masks now."""
        if self.attach_masking():
            apply_masks()

    def read(self, name):
        return read(self.scope, name)

    def write_mask(self, name, mask):
        """Set the mask of parameter `name` (0/1, its shape); it applies from the next masking on."""
        self.ensure_initialized()
        write(self.scope, mask_name(name), np.asarray(mask, "float32"), self.place)

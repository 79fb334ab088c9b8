"""Binding to paddle.static Programs and Scopes, the same for PIR and the legacy IR.

Reads parameters and normalization inputs off a program, creates mask parameters, appends the
in-graph masking ops, and moves single tensors between a scope and NumPy.
"""
import os
from dataclasses import dataclass

import numpy as np
import paddle

from .ops import pir_enabled  # noqa: F401 - re-exported for the pruner

MASK_SUFFIX = "_sparsity_mask"
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
    """A persistable, non-trainable mask of ones beside `param`, saved with the program's parameters."""
    with paddle.static.program_guard(main, startup):
        mask = paddle.static.create_parameter(
            list(param.shape),
            "float32",
            attr=paddle.ParamAttr(name=mask_name(param.name), trainable=False),
            default_initializer=paddle.nn.initializer.Constant(1.0),
        )
    mask.stop_gradient = True
    return Param(mask_name(param.name), tuple(param.shape), mask)


def append_masking(pairs, main, startup):
    """Append `w = w * mask` for each (weight, mask) at the end of `main` (after the optimizer ops)."""
    with paddle.static.program_guard(main, startup):
        for weight, mask in pairs:
            paddle.assign(masked(weight.handle, mask.handle), output=weight.handle)


def masked(weight, mask):
    """weight * mask with pruned entries +0.0 (a negative weight times 0 is -0.0, which a sparse file would keep)."""
    return weight * mask + 0.0


def reference(param, dtype="float32"):
    """Handle to an existing persistable parameter inside the program being built (same name, same scope)."""
    return paddle.static.create_parameter(
        list(param.shape), dtype, attr=paddle.ParamAttr(name=param.name, trainable=False)
    )


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
    scope.var(name).get_tensor().set(np.ascontiguousarray(array), place)


def persistables(program):
    """{name: shape} of every persistable of the program: parameters, masks, optimizer state, LR."""
    if pir_enabled():
        from paddle.static.pir_io import get_pir_parameters

        params, opts = get_pir_parameters(program)
        return {v.name: tuple(v.shape) for v in params + opts if v.persistable}
    from paddle.static.io import is_persistable

    return {v.name: tuple(v.shape) for v in program.list_vars() if is_persistable(v)}

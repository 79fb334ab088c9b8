"""FLOPs and parameters of a static program, counted from its ops, as `paddle.flops` counts them.

`paddle.flops` raises a TypeError on Paddle 3.3.1 with NumPy 2 and does not read PIR programs, and a channel
budget needs FLOPs as a function of the channels kept; so the suite counts itself, with paddle.flops'
conventions (per image, batch 1): a convolution costs its output size x (input channels / groups x kernel
size, + 1 with a bias), a linear layer its inputs x outputs, a BatchNorm 2 per element of a 4-D input, an
average pool 1 per output (an adaptive one: kernel + 1); activations, max pooling, residual additions and
other element-wise ops cost nothing.

Each cost is a `Term`: a constant times the channel counts of at most two channel spaces (a convolution's
input and output). Evaluated with the full widths it is the model's count; evaluated with the widths a channel
selection keeps, it is exactly the count of the slimmed model, so a FLOPs budget can be met before anything
is cut.
"""
from dataclasses import dataclass

import numpy as np

from . import graph


@dataclass(frozen=True)
class Term:
    """coefficient x the channel count of each space in `spaces`; a space is (group index or None, full count)."""

    kind: str
    coefficient: int
    spaces: tuple


@dataclass(frozen=True)
class Count:
    flops: int
    params: int
    by_kind: dict


def _spatial(value, op):
    dims = value.shape[2:]
    if any(d is None or d < 0 for d in dims):
        raise ValueError(f"{op.describe()}: its output size {list(value.shape)} is not static; FLOPs need a fixed input size")
    return int(np.prod(dims, dtype=np.int64))


def terms(ops, spaces=None):
    """The Terms of the forward ops. `spaces` ({value key: (group index, repeat)}, from sparsity.groups) makes a
    value's channel count that of its group; without it (or for a value not in it) its own count is used."""
    spaces = spaces or {}

    def space(value):
        """((group index or None, full channel count), features per channel) of an activation."""
        group, repeat = spaces.get(value.key, (None, 1))
        return (group, int(value.shape[1]) // repeat), repeat

    biased = set()
    producers = {op.out.key: op for op in ops if op.outputs.get("out")}
    for op in ops:
        if op.type == "add" and any(v.param for v in (op.input("x"), op.input("y")) if v is not None):
            source = producers.get(next(v.key for v in (op.input("x"), op.input("y")) if v is not None and not v.param))
            if source is not None and source.type in ("conv2d", "depthwise_conv2d"):
                biased.add(source.out.key)
    found = []
    for op in ops:
        if op.type in ("conv2d", "depthwise_conv2d"):
            x, weight, out = op.input("x"), op.input("filter"), op.out
            area, kernel = _spatial(out, op), int(np.prod(weight.shape[2:]))
            out_space = space(out)[0]
            if int(op.attrs.get("groups", 1)) == 1:
                found.append(Term("conv", area * kernel, (space(x)[0], out_space)))
            else:  # depthwise: one input channel per output channel
                found.append(Term("conv", area * kernel * weight.shape[1], (out_space,)))
            if out.key in biased:
                found.append(Term("conv", area, (out_space,)))
        elif op.type == "matmul" and op.input("y") is not None and op.input("y").param:
            (x_space, repeat), out_space = space(op.input("x")), space(op.out)[0]
            found.append(Term("linear", repeat, (x_space, out_space)))
        elif op.type == "batch_norm" and len(op.input("x").shape) == 4:
            found.append(Term("batch_norm", 2 * _spatial(op.input("x"), op), (space(op.input("x"))[0],)))
        elif op.type == "pool2d" and op.attrs.get("pooling_type") == "avg":
            x, out = op.input("x"), op.out
            per_output = 1
            if op.attrs.get("adaptive") or op.attrs.get("global_pooling"):
                kernel = np.array(x.shape[2:]) // np.array(out.shape[2:])
                per_output = int(np.prod(kernel)) + 1
            found.append(Term("pool", per_output * _spatial(out, op), (space(out)[0],)))
    return found


def total(found, kept=None, by_kind=False):
    """Sum of the Terms with `kept` ({group index: channels}) channels in those groups (the others: all of
    theirs); with by_kind, also {kind: FLOPs}."""
    kept = kept or {}
    result, kinds = 0, {}
    for t in found:
        value = t.coefficient
        for group, full in t.spaces:
            value *= kept.get(group, full)
        result += value
        kinds[t.kind] = kinds.get(t.kind, 0) + value
    return (result, kinds) if by_kind else result


def count(ops, params):
    """Count of a program's forward ops (sparsity.graph.read) and its parameters ({name: shape})."""
    flops, kinds = total(terms(ops), by_kind=True)
    return Count(int(flops), int(sum(int(np.prod(shape, dtype=np.int64)) for shape in params.values())), kinds)


def count_program(program):
    """Count of a static program: FLOPs of its forward part and every model parameter (BatchNorm statistics included)."""
    from .static import model_params

    return count(graph.read(program), {p.name: p.shape for p in model_params(program)})

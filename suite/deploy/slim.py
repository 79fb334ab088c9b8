"""Slimming: a channel-pruned model rebuilt smaller for real, every removed channel cut out of every member.

A channel of a group is removed when every member slice is zero (its producer filters and biases, BatchNorm
scale and shift, depthwise filters, the consumers' input slices): what `--granularity channel` training
leaves. The slim model is the registry model built at the kept widths (models/widths.py), so it is an
ordinary dense model that every runtime runs faster; its outputs are checked against the masked model's on a
batch before anything is written, and its widths travel with its weights (`spec["widths"]`), so evaluate.py,
export.py and train.py --pretrained_model rebuild it without being told.
"""
from dataclasses import dataclass

import numpy as np
import paddle

from sparsity import flops, groups, static
from suite.errors import ConfigError, WriteError
from suite.training.program import build_test

SAMPLE_BATCH = 8
RELATIVE_TOLERANCE = 1e-4  # of the largest logit: removing exact zeros only changes the order of float sums


@dataclass
class Slimmed:
    """A slimmed model: its program and scope, widths, what was removed, and the measured before/after."""

    graph: object
    scope: object
    spec: dict
    removed: dict  # {group name: (channels kept, channels)} of the groups that lost channels
    before: flops.Count
    after: flops.Count
    max_abs_diff: float
    relative_diff: float


def kept_channels(channels, arrays, names):
    """{group index: indices of the channels kept} of every prunable group, from the weights: a channel goes when
    every member slice is zero. Raises ConfigError when the zeros do not form whole groups."""
    kept = {}
    for g in channels.prunable:
        zeros = [(m, ~np.any(np.moveaxis(arrays[m.param], m.axis, 0).reshape(g.channels, -1) != 0, axis=1)) for m in g.masked_members()]
        dead = np.logical_and.reduce([zero for _, zero in zeros] or [np.ones(g.channels, bool)])
        dead_filters = np.logical_and.reduce([zero for m, zero in zeros if m.role == groups.PRODUCER] or [np.ones(g.channels, bool)])
        partial = np.flatnonzero(dead_filters & ~dead)
        if partial.size:
            live = next(m for m, zero in zeros if not zero[partial[0]])
            raise ConfigError(
                f"the zeros do not form whole channel groups: channel {int(partial[0])} of group {names.get(g.name, g.name)} has zero filters "
                f"but {names.get(live.param, live.param)} still reads or shifts it ({partial.size} such channel(s) in that group); "
                "slim a model pruned with train.py --granularity channel"
            )
        if dead.all():
            dead[0] = False  # never seen from the pruner (it keeps min_channels); a dead group keeps one zero channel
        kept[g.index] = np.flatnonzero(~dead)
    return kept


def slim(graph, scope, spec, place):
    """The Slimmed model of the weights in `scope` (loaded into `graph`, a program.TestGraph of `spec`'s model)."""
    names = {var: key for key, var in graph.structure.items()}
    try:
        channels = groups.analyze(graph.test)
    except groups.GroupError as exc:
        raise ConfigError(f"{spec['model']} cannot be slimmed: {exc}") from exc
    arrays = {var: static.read(scope, var) for var in graph.structure.values()}
    kept = kept_channels(channels, arrays, names)
    shrunk = {i: k for i, k in kept.items() if k.size < channels.groups[i].channels}
    if not shrunk:
        raise ConfigError("nothing to remove: no channel of any group is zero in every member (filters, BatchNorm scale and shift, "
                          "the consumers' input slices); prune with train.py --granularity channel first")
    thin = groups.slice_arrays(channels.prunable, shrunk, arrays)
    widths = dict(spec.get("widths") or {})
    widths.update({names[var]: list(thin[var].shape) for var in thin if names[var].endswith(".weight") and thin[var].shape != arrays[var].shape})
    thin_spec = {**spec, "widths": widths}
    thin_graph = build_test(spec["model"], spec["scale"], spec["image_size"], spec["in_channels"], spec["num_classes"], widths)
    thin_scope = paddle.static.Scope()
    exe = paddle.static.Executor(place)
    with paddle.static.scope_guard(thin_scope):
        exe.run(thin_graph.startup)
    for key, var in thin_graph.structure.items():
        expected = static.read(thin_scope, var).shape
        value = thin[graph.structure[key]]
        if value.shape != expected:
            raise WriteError(f"slimming {key} gave shape {list(value.shape)}, the slim model needs {list(expected)}; this is a bug, please report it")
        static.write(thin_scope, var, value, place)
    sample = np.random.default_rng(0).standard_normal((SAMPLE_BATCH, spec["in_channels"], spec["image_size"], spec["image_size"])).astype("float32")
    (masked_out,) = exe.run(graph.test, feed={"image": sample}, fetch_list=[graph.logits], scope=scope)
    (thin_out,) = exe.run(thin_graph.test, feed={"image": sample}, fetch_list=[thin_graph.logits], scope=thin_scope)
    diff = float(np.max(np.abs(thin_out - masked_out)))
    relative = diff / max(float(np.max(np.abs(masked_out))), 1e-12)
    if not relative <= RELATIVE_TOLERANCE:
        raise WriteError(f"the slim model's outputs differ from the masked model's by {diff:.3g} ({relative:.2g} of the largest logit, "
                         f"allowed {RELATIVE_TOLERANCE:g}); nothing was written; this is a bug, please report it")
    removed = {names.get(channels.groups[i].name, channels.groups[i].name): (int(k.size), channels.groups[i].channels) for i, k in shrunk.items()}
    return Slimmed(thin_graph, thin_scope, thin_spec, removed, flops.count_program(graph.test), flops.count_program(thin_graph.test), diff, relative)

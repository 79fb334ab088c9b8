"""Sensitivity analysis: prune each unit alone, one-shot, at several ratios; measure top-1; propose per-layer ratios
that reach a target sparsity (or, for channel groups, a FLOPs budget) where accuracy suffers least.

A unit is a parameter (element, block, N:M, random pruning) or a channel group (--granularity channel: a
group's channels go from every member at once, as sparsity.ChannelPruner prunes them)."""
from dataclasses import dataclass

import numpy as np

from sparsity import channels as channel_selection
from sparsity import flops, groups, masks, rules
from suite.training.log import Eta

GRANULARITY_OPTIONS = {  # the numbers `--granularity NAME ...` may follow NAME with, in order
    "element": (),
    "block": ("m", "n"),
    "nm": ("n", "m"),
    "channel": (),
    "random": ("seed",),
}


def parse_granularity(tokens):
    """`element`, `block 2 1`, `nm 2 4`, `random 3` -> a sparsity.rules rule; `channel` -> None (channel groups);
    ValueError if bad."""
    name, values = tokens[0], tokens[1:]
    if name not in GRANULARITY_OPTIONS:
        raise ValueError(f"--granularity {name!r} is not one of {', '.join(GRANULARITY_OPTIONS)}")
    options = GRANULARITY_OPTIONS[name]
    if len(values) > len(options):
        raise ValueError(f"--granularity {name} takes at most {len(options)} number(s) ({' '.join(options) or 'none'}), got {' '.join(values)}")
    if name == "channel":
        return None
    try:
        numbers = [int(v) for v in values]
    except ValueError as exc:
        raise ValueError(f"--granularity {' '.join(tokens)}: {', '.join(options)} must be numbers") from exc
    return rules.create(name, **dict(zip(options, numbers)))


@dataclass(frozen=True)
class Unit:
    """What a scan prunes alone: a name, the layer it belongs to, its size (weights, or a group's channels), and
    prune(ratio) -> ({parameter: pruned array}, the ratio actually pruned)."""

    name: str
    layer: str
    size: int
    prune: object


def parameter_units(weights, rule):
    """Units of single parameters: (parameter, layer, array) each pruned by `rule` (N:M: its own pattern)."""
    def pruner(name, array):  # a fixed pattern (N:M) prunes its own ratio
        return lambda ratio: ({name: masks.prune_once(array, rule, ratio)}, 1.0 - rule.n / rule.m if rule.fixed_pattern else ratio)

    return [Unit(name, layer, int(array.size), pruner(name, array)) for name, layer, array in weights]


def group_units(prunable, arrays, names, score, min_channels=1, channel_multiple=8):
    """Units of channel groups: each keeps its highest-scoring channels at the allowed width nearest the ratio
    (the ratio actually pruned is reported); `arrays` holds every member, `names` maps variables to layers."""
    def pruner(group):
        scored = channel_selection.scores(group, arrays, score)
        allowed = channel_selection.allowed_widths(group.channels, min_channels, channel_multiple)

        def prune(ratio):
            width = channel_selection.nearest_width(allowed, group.channels, ratio)
            keep = channel_selection.keep_vector(scored, width)
            member_masks = groups.member_masks([group], {group.index: keep}, {n: arrays[n].shape for n in arrays})
            return {n: arrays[n] * m for n, m in member_masks.items()}, 1.0 - width / group.channels

        return prune

    return [Unit(g.name, names.get(g.name, g.name), g.channels, pruner(g)) for g in prunable]


@dataclass(frozen=True)
class Point:
    parameter: str
    layer: str
    size: int
    ratio: float
    top1: float
    drop: float


def scan(units, ratios, accuracy, dense_top1, fixed_pattern=False, progress=print, kind="parameter"):
    """For each Unit and each ratio: that unit alone pruned, `accuracy({parameter: pruned array})` measured (the
    caller restores the weights). A fixed pattern (N:M) has one ratio of its own; a ratio a unit cannot prune
    differently from the one before (a channel group's allowed widths) is not measured twice. Progress lines show
    `kind` i/N, the ratio and an ETA."""
    ratios = [None] if fixed_pattern else list(ratios)
    points, done, total = [], 0, len(units) * len(ratios)
    eta = Eta(total)
    for i, unit in enumerate(units, start=1):
        seen = set()
        for ratio in ratios:
            pruned, actual = unit.prune(ratio)
            done += 1
            if actual in seen:
                continue
            seen.add(actual)
            top1 = accuracy(pruned)
            points.append(Point(unit.name, unit.layer, unit.size, actual, top1, dense_top1 - top1))
            progress(f"{kind} {i}/{len(units)} {unit.layer or unit.name} ratio {actual:.2f}: top1 {top1:.4f} (drop {dense_top1 - top1:+.4f}) "
                     f"{done}/{total} {eta.update(done)}")
    return points


def propose(points, target, max_drop):
    """Per-layer ratios {parameter: ratio} whose weighted mean over the scanned parameters is exactly `target`.

    Each parameter's drop curve is made monotone (the worst drop at or below each ratio) and only ratios
    whose drop is within `max_drop` are allowed. Starting from 0, the step with the smallest drop per
    pruned weight is taken next, so large insensitive layers are pruned most; the last step stops part of
    the way, at the target. Raises ValueError when the target cannot be reached within max_drop.
    """
    curves = _curves(points)
    chosen = dict.fromkeys(curves, 0)  # index into each curve
    total = sum(c["size"] for c in curves.values())
    wanted = target * total
    pruned = 0.0
    while pruned < wanted:
        steps = []
        for name, c in curves.items():
            k = chosen[name]
            if k + 1 < len(c["ratios"]) and c["drops"][k + 1] <= max_drop:
                gained = c["size"] * (c["ratios"][k + 1] - c["ratios"][k])
                steps.append(((c["drops"][k + 1] - c["drops"][k]) / gained, -c["size"], name, gained))
        if not steps:
            reach = pruned / total
            raise ValueError(f"--target_sparsity {target} cannot be reached within --max_drop {max_drop}: at most {reach:.4f}; "
                             "raise --max_drop or lower --target_sparsity")
        _, _, name, gained = min(steps)
        if pruned + gained >= wanted:
            c = curves[name]
            base = c["ratios"][chosen[name]]
            return {**{n: curves[n]["ratios"][k] for n, k in chosen.items()}, name: base + (wanted - pruned) / c["size"]}
        chosen[name] += 1
        pruned += gained
    return {n: curves[n]["ratios"][k] for n, k in chosen.items()}


def weighted_sparsity(ratios, sizes):
    """Sparsity over the parameters: sum of ratio x size over sum of sizes."""
    return float(np.dot([ratios[n] for n in sizes], list(sizes.values())) / sum(sizes.values()))


def _curves(points):
    """{unit: {"size", "ratios", "drops"}} from 0, each drop made monotone (the worst drop at or below the ratio)."""
    curves = {}
    for p in sorted(points, key=lambda p: (p.parameter, p.ratio)):
        curve = curves.setdefault(p.parameter, {"size": p.size, "ratios": [0.0], "drops": [0.0]})
        if p.ratio > curve["ratios"][-1]:
            curve["ratios"].append(p.ratio)
            curve["drops"].append(max(curve["drops"][-1], p.drop))
    return curves


def propose_flops(points, prunable, terms, target_flops, max_drop):
    """Per-group ratios {group: ratio} that keep at most `target_flops` of the dense FLOPs (sparsity.flops Terms over
    the groups) where the measured drops are smallest: from nothing pruned, the step with the smallest drop per FLOP
    saved goes next (each curve monotone, no step past `max_drop`), until the budget is met. Raises ValueError when
    it cannot be met within max_drop. Ratios are the scanned ones (whole widths), so the result may be just below."""
    curves = _curves(points)
    index_of = {g.name: g.index for g in prunable}
    channels_of = {g.name: g.channels for g in prunable}
    chosen = dict.fromkeys(curves, 0)
    kept = {index_of[n]: channels_of[n] for n in curves}
    dense = flops.total(terms)
    goal = dense * target_flops
    current = dense

    def width(name, k):
        return round(channels_of[name] * (1.0 - curves[name]["ratios"][k]))

    while current > goal:
        steps = []
        for name, c in curves.items():
            k = chosen[name]
            if k + 1 < len(c["ratios"]) and c["drops"][k + 1] <= max_drop:
                saved = channel_selection.flops_saved(terms, kept, index_of[name], width(name, k + 1))
                if saved > 0:
                    steps.append(((c["drops"][k + 1] - c["drops"][k]) / saved, name, saved))
        if not steps:
            raise ValueError(f"--target_flops {target_flops} cannot be reached within --max_drop {max_drop}: at most down to "
                             f"{current / dense:.4f} of the FLOPs; raise --max_drop or --target_flops")
        _, name, saved = min(steps)
        chosen[name] += 1
        kept[index_of[name]] = width(name, chosen[name])
        current -= saved
    return {n: curves[n]["ratios"][k] for n, k in chosen.items()}

"""Sensitivity analysis: prune each parameter alone, one-shot, at several ratios; measure top-1; propose
per-layer ratios that reach a target sparsity where accuracy suffers least."""
from dataclasses import dataclass

import numpy as np

from sparsity import masks, rules
from suite.training.log import Eta

GRANULARITY_OPTIONS = {  # the numbers `--granularity NAME ...` may follow NAME with, in order
    "element": (),
    "block": ("m", "n"),
    "nm": ("n", "m"),
    "channel": ("dim", "norm"),
    "random": ("seed",),
}


def parse_granularity(tokens):
    """`element`, `block 2 1`, `nm 2 4`, `channel 0 2`, `random 3` -> a sparsity.rules rule (ValueError if bad)."""
    name, values = tokens[0], tokens[1:]
    if name not in GRANULARITY_OPTIONS:
        raise ValueError(f"--granularity {name!r} is not one of {', '.join(GRANULARITY_OPTIONS)}")
    options = GRANULARITY_OPTIONS[name]
    if len(values) > len(options):
        raise ValueError(f"--granularity {name} takes at most {len(options)} number(s) ({' '.join(options) or 'none'}), got {' '.join(values)}")
    try:
        numbers = [float(v) if key == "norm" else int(v) for key, v in zip(options, values)]
    except ValueError as exc:
        raise ValueError(f"--granularity {' '.join(tokens)}: {', '.join(options)} must be numbers") from exc
    return rules.create(name, **dict(zip(options, numbers)))


@dataclass(frozen=True)
class Point:
    parameter: str
    layer: str
    size: int
    ratio: float
    top1: float
    drop: float


def scan(weights, rule, ratios, accuracy, dense_top1, progress=print):
    """For each (parameter, layer, array) in `weights` and each ratio: that parameter alone pruned by `rule`,
    `accuracy({parameter: pruned array})` measured (the caller restores the weights). N:M rules have one
    ratio of their own. Progress lines show parameter i/N, the ratio and an ETA."""
    ratios = [1.0 - rule.n / rule.m] if rule.fixed_pattern else list(ratios)
    points, done, total = [], 0, len(weights) * len(ratios)
    eta = Eta(total)
    for i, (name, layer, array) in enumerate(weights, start=1):
        for ratio in ratios:
            top1 = accuracy({name: masks.prune_once(array, rule, ratio)})
            points.append(Point(name, layer, int(array.size), ratio, top1, dense_top1 - top1))
            done += 1
            progress(f"parameter {i}/{len(weights)} {layer or name} ratio {ratio:.2f}: top1 {top1:.4f} (drop {dense_top1 - top1:+.4f}) "
                     f"{done}/{total} {eta.update(done)}")
    return points


def propose(points, target, max_drop):
    """Per-layer ratios {parameter: ratio} whose weighted mean over the scanned parameters is exactly `target`.

    Each parameter's drop curve is made monotone (the worst drop at or below each ratio) and only ratios
    whose drop is within `max_drop` are allowed. Starting from 0, the step with the smallest drop per
    pruned weight is taken next, so large insensitive layers are pruned most; the last step stops part of
    the way, at the target. Raises ValueError when the target cannot be reached within max_drop.
    """
    curves = {}
    for p in points:
        curves.setdefault(p.parameter, {"size": p.size, "ratios": [0.0], "drops": [0.0]})
        curve = curves[p.parameter]
        if p.ratio > curve["ratios"][-1]:
            curve["ratios"].append(p.ratio)
            curve["drops"].append(max(curve["drops"][-1], p.drop))
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

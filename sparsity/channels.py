"""Which channels of each group to keep: a score per channel, then a selection under a budget (NumPy, on the host).

Scores (higher = more important) of a group's channel, every one divided by the group's mean score so that
groups with more members, wider inputs or differently scaled weights compare fairly in one global selection:
  l1, l2    the sum over the group's weights (producer filters, consumer input slices, depthwise filters) of
            the channel slice's mean |w| (l1) or root-mean-square (l2): magnitude, size-normalised
  bn_scale  the sum of |scale| over the group's BatchNorms (Network Slimming, Liu et al. 2017)
  fpgm      the sum over producer filters of the filter's distance to the group's other filters (FPGM, He et al.
            2019: a filter near the geometric median is replaceable by the others)
A channel whose every member slice is already zero scores 0, so a pruned channel stays pruned.

Budget: a fraction of the prunable channels, or of the dense model's FLOPs (sparsity.flops Terms). The
selection is greedy over steps: each group shrinks from its width to the next allowed one, and the step whose
channels score lowest goes first, until the budget is met. Allowed widths keep
at least `min_channels` and, in groups of `multiple_from` channels or more, a multiple of `channel_multiple`
(or the full width): channel counts that suit the runtimes' kernels (a MobileNetV1 with counts like 45, 181,
727 ran slower in ONNX Runtime than the full model; with multiples of 8 it ran 0.67x).
"""
import math

import numpy as np

from . import checks
from . import groups as channel_groups

SCORES = ("l1", "l2", "bn_scale", "fpgm")
MULTIPLE_FROM = 16  # groups narrower than this are not rounded to channel_multiple


def _slices(array, member):
    """[channels, everything else] view of a member's slices (a flattened map's repeats folded in)."""
    moved = np.moveaxis(np.asarray(array, np.float64), member.axis, 0)
    return moved.reshape(moved.shape[0] // member.repeat, -1)


def _fpgm(rows):
    """Each row's summed Euclidean distance to the other non-zero rows (0 for an all-zero row)."""
    alive = np.any(rows != 0, axis=1)
    squares = np.sum(rows * rows, axis=1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2.0 * rows @ rows.T, 0.0))
    return np.where(alive, distances[:, alive].sum(axis=1), 0.0)


def scores(group, arrays, method):
    """Normalised score of each channel of `group` ({parameter: array} holds its members), by `method`."""
    checks.choice(method, "score", SCORES)
    total = np.zeros(group.channels)
    alive = np.zeros(group.channels, bool)
    for m in group.masked_members():
        rows = _slices(arrays[m.param], m)
        alive |= np.any(rows != 0, axis=1)
        if method in ("l1", "l2") and m.role in (channel_groups.PRODUCER, channel_groups.CONSUMER, channel_groups.DEPTHWISE):
            total += np.mean(np.abs(rows), axis=1) if method == "l1" else np.sqrt(np.mean(rows * rows, axis=1))
        elif method == "bn_scale" and m.role == channel_groups.NORM_SCALE:
            total += np.abs(rows[:, 0])
        elif method == "fpgm" and m.role == channel_groups.PRODUCER:
            total += _fpgm(rows)
    if method == "bn_scale" and not any(m.role == channel_groups.NORM_SCALE for m in group.members):
        raise ValueError(f"score 'bn_scale' needs a BatchNorm in every pruned group; group {group.name} has none: use l1, l2 or fpgm")
    total = np.where(alive, total, 0.0)
    mean = total.mean()
    return total / mean if mean > 0 else total


def allowed_widths(channels, min_channels=1, channel_multiple=8):
    """Widths a group of `channels` may keep, ascending: >= min_channels and, from MULTIPLE_FROM channels on,
    multiples of channel_multiple; the full width always."""
    widths = set(range(min(min_channels, channels), channels + 1))
    if channel_multiple > 1 and channels >= MULTIPLE_FROM:
        widths = {w for w in widths if w % channel_multiple == 0}
    return sorted(widths | {channels})


def keep_vector(score, width):
    """1 for the `width` highest-scoring channels (ties: the lower index), 0 for the others."""
    keep = np.zeros(score.size, np.float32)
    keep[np.argsort(-score, kind="stable")[:width]] = 1.0
    return keep


class Budget:
    """What a selection must remove: `fraction` of the prunable channels, or of the FLOPs when `terms` (sparsity.flops
    Terms over the groups) are given."""

    def __init__(self, fraction, terms=None):
        self.fraction = checks.ratio(fraction, "fraction")
        self.terms = terms

    @property
    def by_flops(self):
        return self.terms is not None


def select(groups, group_scores, budget, widths, fixed=None):
    """{group index: width to keep} for the prunable `groups`.

    group_scores: {index: normalised scores}; widths: {index: allowed widths (allowed_widths)}; fixed: {index:
    width} for groups whose width is set (a per-group ratio), which count toward a FLOPs budget but are never
    changed. Greedy over the groups' steps to their next allowed width: the step whose channels score lowest on
    average goes first, until the budget is met or no group can shrink further. FLOPs are the budget, not the
    ranking: ranking by score per FLOP emptied the early, FLOP-heavy layers and cost 5 to 9 points of top-1 at
    half the FLOPs where this ranking lost none (README, "Slimming for speed").
    """
    fixed = fixed or {}
    kept = {g.index: g.channels for g in groups}
    kept.update(fixed)
    free = [g.index for g in groups if g.index not in fixed]
    order = {i: np.sort(group_scores[i]) for i in free}  # ascending: removed from the front
    width_of = {g.index: g.channels for g in groups}
    if budget.by_flops:
        from .flops import total

        goal = total(budget.terms) * (1.0 - budget.fraction)
        current = total(budget.terms, kept)
        terms_of = {i: [t for t in budget.terms if any(g == i for g, _ in t.spaces)] for i in free}
    else:
        goal = math.floor(budget.fraction * sum(width_of[i] for i in free) + 0.5)
        current = 0

    def step(i):
        """(mean score of the channels the next step removes, next width), or None when group i cannot shrink."""
        smaller = [w for w in widths[i] if w < kept[i]]
        if not smaller:
            return None
        full = width_of[i]
        return float(order[i][full - kept[i]: full - smaller[-1]].mean()), smaller[-1]

    def met():
        return current <= goal if budget.by_flops else current >= goal

    candidates = {i: step(i) for i in free}
    while not met():
        live = {i: c for i, c in candidates.items() if c is not None}
        if not live:
            break
        i = min(live, key=lambda j: (live[j][0], j))
        width = live[i][1]
        if budget.by_flops:
            current -= flops_saved(terms_of[i], kept, i, width)
        else:
            current += kept[i] - width
        kept[i] = width
        candidates[i] = step(i)
    return kept


def nearest_width(allowed, channels, ratio):
    """The allowed width closest to removing `ratio` of `channels` (ties: the wider)."""
    wanted = channels * (1.0 - ratio)
    return min(allowed, key=lambda w: (abs(w - wanted), -w))


def uniform(groups, budget, widths, fixed=None):
    """{group index: width} removing the same ratio of every free group's channels (PaddleSlim's uniform filter
    pruning): `budget.fraction` of them, or under a FLOPs budget the smallest ratio that meets it (bisection)."""
    fixed = fixed or {}

    def at(ratio):
        kept = {g.index: nearest_width(widths[g.index], g.channels, ratio) for g in groups}
        kept.update(fixed)
        return kept

    if not budget.by_flops:
        return at(budget.fraction)
    from .flops import total

    goal = total(budget.terms) * (1.0 - budget.fraction)
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if total(budget.terms, at(middle)) <= goal:
            high = middle
        else:
            low = middle
    return at(high)


def flops_saved(terms, kept, group, width):
    """FLOPs the Terms lose when `group` goes from kept[group] to `width` channels (the others as kept)."""
    saved = 0
    for t in terms:
        before = after = t.coefficient
        for g, full in t.spaces:
            before *= kept.get(g, full)
            after *= width if g == group else kept.get(g, full)
        saved += before - after
    return saved

"""Selection as Paddle ops: unit scores -> which units are kept, on the device that runs them.

A selection turns the scores of the pruned parameters (one score per pruning unit, from a rule in
rules.py) into keep-masks of those units. Every function builds ops, so the same code runs eagerly
(the dygraph binding, the tests) and inside a static program (PIR or legacy IR). Scores are
non-negative; a unit is pruned when its score is <= the threshold, kept when it is above.

- ByRatio: groups of parameters, each with one threshold that prunes its target fraction of weights
  (one group of all parameters: a global ratio; one group per parameter: local sparsity).
- ByThreshold: every unit whose score is below a fixed threshold.
- ByPattern: a rule's own fixed pattern (N:M), no threshold.
"""
import math
from dataclasses import dataclass

import numpy as np
import paddle

from . import ops
from .schedule import ConstantSchedule

HISTOGRAM_BINS = 1 << 16


def kth_smallest(scores, k, sizes=None, bins=HISTOGRAM_BINS):
    """Smallest score t such that the units scoring <= t weigh at least k (k: int64 tensor [1], >= 1).

    `sizes` (int64, like scores) is each unit's number of weights; None counts every unit as 1,
    making t the k-th smallest score. A histogram select: one pass buckets the scores (bucket 0
    holds exact zeros, buckets 1..bins split (0, max] evenly), a prefix sum finds the bucket where
    the weight reaches k, and only that bucket's few units are sorted. Already-pruned zeros are
    never sorted.
    """
    top = paddle.clip(ops.largest(scores), min=1e-30)
    bucket = ops.ceil(scores * (bins / top))
    weights = None if sizes is None else paddle.cast(sizes, "float64")
    counts = paddle.bincount(paddle.cast(bucket, "int32"), weights=weights, minlength=bins + 2)
    reached = paddle.cumsum(paddle.cast(counts, "int64"))
    index = paddle.searchsorted(reached, k)
    below = paddle.gather(paddle.concat([paddle.zeros([1], reached.dtype), reached]), index)
    # bucket 0 holds only zeros: the answer is 0 and nothing is sorted (index -1 selects no unit);
    # a leading 0 candidate weighing k then answers alone, and weighs nothing otherwise
    in_zero_bucket = index == 0
    chosen = paddle.cast(paddle.where(in_zero_bucket, paddle.full_like(index, -1), index), bucket.dtype)
    in_bucket = (bucket > chosen - 0.5) & (bucket < chosen + 0.5)
    values = paddle.masked_select(scores, in_bucket)
    weight = paddle.ones_like(values, "int64") if sizes is None else paddle.masked_select(sizes, in_bucket)
    order = paddle.argsort(values)
    values = paddle.concat([paddle.zeros([1], scores.dtype), paddle.gather(values, order)])
    sentinel = paddle.where(in_zero_bucket, k, paddle.zeros_like(k))
    reached_in_bucket = paddle.cumsum(paddle.concat([sentinel, paddle.gather(weight, order)]))
    return paddle.gather(values, paddle.searchsorted(reached_in_bucket, k - below))


def ratio_threshold(scores, k, sizes=None):
    """Threshold that prunes the lowest units weighing at least k (k an int64 [1] tensor; 0 prunes nothing)."""
    safe_k = paddle.clip(k, min=1)
    return paddle.where(k > 0, kth_smallest(scores, safe_k, sizes), paddle.full([1], -1.0, scores.dtype))


def keep_mask(scores, threshold, inclusive=False):
    """1.0 where the score is above the threshold (or equal to it, if inclusive), 0.0 where it is pruned."""
    return paddle.cast(scores >= threshold if inclusive else scores > threshold, "float32")


def prune_count(ratio, weights):
    """How many of `weights` a ratio prunes: round(ratio * weights), exactly, on the host."""
    return int(math.floor(ratio * weights + 0.5))


def _flat(tensors):
    return paddle.concat([paddle.reshape(t, [-1]) for t in tensors])


@dataclass(frozen=True)
class Group:
    """Parameters ranked together under one threshold: their indices, target ratio and number of weights."""

    members: tuple
    target: float
    weights: int


class ByRatio:
    """One threshold per group, pruning round(ratio * weights) of the group's weights (whole units)."""

    feed_dtype = "int64"
    every_step = False

    def __init__(self, groups, schedule):
        self.groups = list(groups)
        self.schedule = schedule

    def ratios(self, iteration):
        """Each group's ratio at `iteration`, from the schedule and the group's own target."""
        return [self.schedule.ratio_at(iteration, g.target) for g in self.groups]

    def feed(self, iteration):
        return np.array([prune_count(r, g.weights) for r, g in zip(self.ratios(iteration), self.groups)], "int64")

    def keeps(self, scores, sizes, counts):
        keeps, thresholds = [None] * len(scores), []
        for i, group in enumerate(self.groups):
            members = group.members
            flat_sizes = None if sizes[members[0]] is None else _flat([sizes[j] for j in members])
            t = ratio_threshold(_flat([scores[j] for j in members]), counts[i : i + 1], flat_sizes)
            thresholds.append(t)
            for j in members:
                keeps[j] = keep_mask(scores[j], t)
        return keeps, thresholds


class ByThreshold:
    """Every unit whose score is below `threshold` is pruned; recomputed at every step as weights move."""

    feed_dtype = "float32"
    every_step = True

    def __init__(self, threshold):
        self.threshold = threshold

    def feed(self, iteration):
        return np.array([self.threshold], "float32")

    def keeps(self, scores, sizes, threshold):
        return [keep_mask(s, paddle.cast(threshold, s.dtype), inclusive=True) for s in scores], [threshold]


class ByPattern:
    """A rule's fixed pattern (N:M): its masks depend on the weights alone, so they are computed once."""

    feed_dtype = None
    every_step = False

    def __init__(self, rule):
        self.rule = rule

    def feed(self, iteration):
        return None

    def keeps(self, scores, sizes, feed):
        return [self.rule.pattern_keep(s) for s in scores], []


def compute_masks(rule, selection, weights, masks, feed):
    """The shared mask computation over weight and mask handles: rule scores -> selection -> masks
    assigned, weights masked. Returns the selection's thresholds (1-element tensors)."""
    scores, sizes, offset = [], [], 0
    for w in weights:
        scores.append(rule.scores(w, offset))
        sizes.append(rule.unit_sizes(list(w.shape)))
        offset += int(np.prod(w.shape))
    keeps, thresholds = selection.keeps(scores, sizes, feed)
    for w, m, keep in zip(weights, masks, keeps):
        mask = rule.expand(keep, list(w.shape))
        paddle.assign(mask, output=m)
        paddle.assign(ops.masked(w, mask), output=w)
    return thresholds


def prune_once(weight, rule, ratio):
    """`weight` (a NumPy array) pruned alone by `rule` to `ratio` of its weights (N:M: its own pattern), as a
    NumPy array: the same rules and selection as the pruners, run eagerly (also from inside static mode)."""
    rule.check(weight.shape)
    selection = ByPattern(rule) if rule.fixed_pattern else ByRatio([Group((0,), ratio, int(weight.size))], ConstantSchedule())
    with paddle.base.dygraph.guard():
        w = paddle.to_tensor(weight)
        feed = selection.feed(0)
        compute_masks(rule, selection, [w], [paddle.ones_like(w)], None if feed is None else paddle.to_tensor(feed))
        return w.numpy()

"""Mask math as Paddle ops: scores -> threshold -> keep-mask, on the device that runs them.

Every function here builds ops, so the same code runs eagerly (dygraph, used by the tests) and
inside a static program (PIR or legacy IR, used by the pruner). Scores are non-negative; a unit
(weight or block) is pruned when its score is <= the threshold, kept when it is above.
"""
import math

import numpy as np
import paddle

from . import ops

HISTOGRAM_BINS = 1 << 16


def check_block(block):
    """Validate sparse_block: two positive integers [m, n]; returns them as a tuple."""
    ok = (
        isinstance(block, (list, tuple))
        and len(block) == 2
        and all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1 for b in block)
    )
    if not ok:
        raise ValueError(f"sparse_block must be two positive integers [m, n] such as [1, 1] or [2, 1], got {block!r}")
    return int(block[0]), int(block[1])


def check_nm(pattern):
    """Validate an N:M pattern: keep n of every m, 1 <= n < m; returns (n, m)."""
    ok = (
        isinstance(pattern, (list, tuple))
        and len(pattern) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pattern)
        and 1 <= pattern[0] < pattern[1]
    )
    if not ok:
        raise ValueError(f"nm_pattern must be two integers [n, m] with 1 <= n < m (keep n of every m), such as [2, 4]; got {pattern!r}")
    return int(pattern[0]), int(pattern[1])


def nm_axis(shape):
    """The input-channel axis that N:M groups run along: 1 for conv weights [out, in, kh, kw], else 0 ([in, out])."""
    return 1 if len(shape) == 4 else 0


def nm_keep_mask(w, pattern):
    """Keep the n largest |w| of every m consecutive weights along the input axis (2:4 for sparse tensor cores).

    A ragged last group keeps its n largest too, so an axis shorter than n (depthwise convs) stays dense.
    """
    n, m = pattern
    shape = list(w.shape)
    axis = nm_axis(shape)
    perm = [i for i in range(len(shape)) if i != axis] + [axis]
    length = shape[axis]
    rows = int(np.prod([shape[i] for i in perm[:-1]]))
    a = paddle.reshape(paddle.transpose(ops.abs(w), perm), [rows, length])
    pad = -length % m
    if pad:  # padding scores below any real one are chosen last
        a = paddle.concat([a, paddle.full([rows, pad], -1.0, a.dtype)], axis=1)
    groups = paddle.reshape(a, [-1, m])
    chosen = paddle.topk(groups, n, axis=-1)[1]
    keep = paddle.put_along_axis(paddle.zeros_like(groups), chosen, paddle.full([groups.shape[0], n], 1.0, a.dtype), axis=-1)
    keep = paddle.reshape(keep, [rows, length + pad])
    if pad:
        keep = keep[:, :length]
    keep = paddle.reshape(keep, [shape[i] for i in perm])
    return paddle.transpose(keep, [perm.index(i) for i in range(len(shape))])


def block_grid(shape, block):
    """Shape [ceil(d0/m), ceil(d1/n), rest] of the block-score grid of a weight of `shape`."""
    m, n = block
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return [math.ceil(shape[0] / m), math.ceil(shape[1] / n), rest]


def block_sizes(shape, block):
    """NumPy array of the number of real weights in each block (edge blocks may be smaller)."""
    m, n = block
    rows = np.minimum(m, shape[0] - m * np.arange(math.ceil(shape[0] / m)))
    cols = np.minimum(n, shape[1] - n * np.arange(math.ceil(shape[1] / n)))
    return np.outer(rows, cols).astype("float32")


def magnitude_scores(w, block=(1, 1)):
    """Score of every pruning unit: |w| for [1, 1], else the mean |w| of each m x n block of dims 0, 1.

    Blocks span the first two dimensions; trailing dimensions (conv kernel positions) are separate
    blocks. Edge blocks of a ragged shape average over their real weights only.
    """
    a = ops.abs(w)
    if tuple(block) == (1, 1):
        return a
    shape = list(w.shape)
    if len(shape) < 2:
        raise ValueError(f"sparse_block {list(block)} needs weights with at least 2 dimensions, got shape {shape}")
    m, n = block
    g0, g1, rest = block_grid(shape, block)
    a = paddle.reshape(a, [shape[0], shape[1], rest])
    pad0, pad1 = g0 * m - shape[0], g1 * n - shape[1]
    if pad0:
        a = paddle.concat([a, paddle.zeros([pad0, shape[1], rest], a.dtype)], axis=0)
    if pad1:
        a = paddle.concat([a, paddle.zeros([g0 * m, pad1, rest], a.dtype)], axis=1)
    means = paddle.mean(paddle.reshape(a, [g0, m, g1, n, rest]), axis=[1, 3])
    if pad0 or pad1:
        correction = (m * n) / block_sizes(shape, block)
        means = means * paddle.assign(correction.reshape(g0, g1, 1).astype("float32"))
    return means


def expand_block_mask(block_mask, shape, block):
    """Broadcast a [g0, g1, rest] block mask back to a weight of `shape`."""
    if tuple(block) == (1, 1):
        return block_mask
    m, n = block
    g0, g1, rest = block_grid(shape, block)
    full = paddle.expand(paddle.reshape(block_mask, [g0, 1, g1, 1, rest]), [g0, m, g1, n, rest])
    full = paddle.reshape(full, [g0 * m, g1 * n, rest])
    if g0 * m != shape[0] or g1 * n != shape[1]:
        full = full[: shape[0], : shape[1]]
    return paddle.reshape(full, list(shape))


def kth_smallest(scores, k, bins=HISTOGRAM_BINS):
    """The k-th smallest value (k: int64 tensor of shape [1], 1 <= k <= numel) of 1-D scores >= 0.

    A histogram select: one pass buckets the scores (bucket 0 holds exact zeros, buckets 1..bins
    split (0, max] evenly), a prefix sum finds the bucket holding the k-th value, and only that
    bucket's few values are ranked. No full sort; already-pruned zeros cost nothing to rank.
    """
    top = paddle.clip(ops.largest(scores), min=1e-30)
    bucket = ops.ceil(scores * (bins / top))
    counts = paddle.bincount(paddle.cast(bucket, "int32"), minlength=bins + 2)
    reached = paddle.cumsum(paddle.cast(counts, "int64"))
    index = paddle.searchsorted(reached, k)
    below = paddle.gather(paddle.concat([paddle.zeros([1], reached.dtype), reached]), index)
    # bucket 0 holds only zeros: then the answer is 0 and nothing needs ranking (index -1 selects nothing)
    chosen = paddle.cast(paddle.where(index > 0, index, paddle.full_like(index, -1)), bucket.dtype)
    in_bucket = (bucket > chosen - 0.5) & (bucket < chosen + 0.5)
    candidates = paddle.concat([paddle.zeros([1], scores.dtype), paddle.masked_select(scores, in_bucket)])
    rank = paddle.where(index > 0, k - below + 1, paddle.ones_like(k))  # +1: the leading 0 sentinel
    return ops.largest(paddle.topk(candidates, rank, largest=False, sorted=False)[0])


def ratio_threshold(scores, k):
    """Threshold that prunes the k smallest scores (k an int64 [1] tensor; k == 0 prunes nothing)."""
    safe_k = paddle.clip(k, min=1)
    return paddle.where(k > 0, kth_smallest(scores, safe_k), paddle.full([1], -1.0, scores.dtype))


def keep_mask(scores, threshold, inclusive=False):
    """1.0 where the score is above the threshold (or equal to it, if inclusive), 0.0 where it is pruned."""
    return paddle.cast(scores >= threshold if inclusive else scores > threshold, scores.dtype)


def prune_count(ratio, units):
    """How many of `units` scores a ratio prunes: round(ratio * units), exactly, on the host."""
    return int(math.floor(ratio * units + 0.5))

"""Plain NumPy reference of the mask rules and selections, to check the Paddle ops against.

Written from the documented semantics, loop by loop, without the library's vectorised tricks.
"""
import math

import numpy as np

PRIME = (1 << 31) - 1


def element(w):
    return np.abs(w).astype("float64"), np.ones(w.shape, "int64"), lambda keep: keep


def block(w, m, n, per_position=False):
    """Scores of m x n blocks of dims 0, 1 (whole slabs over the kernel unless per_position), sizes, expand."""
    d0, d1 = w.shape[:2]
    flat = np.abs(w).reshape(d0, d1, -1)
    rest = flat.shape[2]
    g0, g1 = math.ceil(d0 / m), math.ceil(d1 / n)
    depth = rest if per_position else 1
    scores, sizes = np.zeros((g0, g1, depth)), np.zeros((g0, g1, depth), "int64")
    for i in range(g0):
        for j in range(g1):
            cell = flat[i * m : (i + 1) * m, j * n : (j + 1) * n]
            if per_position:
                scores[i, j] = cell.mean(axis=(0, 1))
                sizes[i, j] = cell.shape[0] * cell.shape[1]
            else:
                scores[i, j] = cell.mean()
                sizes[i, j] = cell.size

    def expand(keep):
        full = np.zeros(flat.shape)
        for i in range(g0):
            for j in range(g1):
                full[i * m : (i + 1) * m, j * n : (j + 1) * n] = keep[i, j]
        return full.reshape(w.shape)

    return scores, sizes, expand


def channel(w, dim, p):
    """Size-normalised Ln norm of each slice along `dim`: (mean |w|^p)^(1/p), or max |w| for p = inf."""
    slices = np.moveaxis(np.abs(w).astype("float64"), dim, 0).reshape(w.shape[dim], -1)
    scores = slices.max(axis=1) if math.isinf(p) else (slices**p).mean(axis=1) ** (1 / p)
    sizes = np.full(w.shape[dim], slices.shape[1], "int64")

    def expand(keep):
        shape = [1] * w.ndim
        shape[dim] = w.shape[dim]
        return np.broadcast_to(keep.reshape(shape), w.shape).astype("float64")

    return scores, sizes, expand


def random_hash(indices, seed):
    """The documented hash: two rounds of x -> (a x + c + seed) mod p, then x -> x^5 mod p."""
    out = []
    for i in indices:
        x = int(i)
        for a, c in ((1103515245, 12345), (2147480837, 40503)):
            x = (x * a + (c + seed) % PRIME) % PRIME
            x = pow(x, 5, PRIME)
        out.append(x)
    return np.array(out, "float64")


def random(w, seed, offset):
    scores = random_hash(range(offset, offset + w.size), seed).reshape(w.shape)
    return scores, np.ones(w.shape, "int64"), lambda keep: keep


def threshold_for(scores, sizes, ratio):
    """Smallest score whose lower-or-equal units weigh >= round(ratio * weights); -1 when nothing is pruned."""
    k = int(math.floor(ratio * sizes.sum() + 0.5))
    if k == 0:
        return -1.0
    order = np.argsort(scores, kind="stable")
    reached = np.cumsum(sizes[order])
    return scores[order][np.searchsorted(reached, k)]


def ratio_masks(weights, unit, ratio, local=False):
    """Masks of `weights` under `unit(w, offset) -> (scores, sizes, expand)` with one global or per-weight threshold."""
    units, offset = [], 0
    for w in weights:
        units.append(unit(w, offset))
        offset += w.size
    if local:
        thresholds = [threshold_for(s.ravel(), z.ravel(), ratio) for s, z, _ in units]
    else:
        flat = np.concatenate([s.ravel() for s, _, _ in units])
        thresholds = [threshold_for(flat, np.concatenate([z.ravel() for _, z, _ in units]), ratio)] * len(units)
    return [expand((s > t).astype("float64")).astype("float32") for (s, _, expand), t in zip(units, thresholds)]


def threshold_masks(weights, unit, threshold):
    return [expand((s >= threshold).astype("float64")).astype("float32") for s, _, expand in (unit(w, 0) for w in weights)]


def nm_masks(weights, n, m):
    """Keep the n largest |w| of every m along the input axis (1 for 4-D, else 0); ragged tails keep n too."""
    out = []
    for w in weights:
        axis = 1 if w.ndim == 4 else 0
        moved = np.moveaxis(np.abs(w), axis, -1)
        keep = np.zeros_like(moved)
        for index in np.ndindex(moved.shape[:-1]):
            row = moved[index]
            for start in range(0, row.size, m):
                group = row[start : start + m]
                top = np.argsort(-group, kind="stable")[:n]
                keep[index + (start + top,)] = 1.0
        out.append(np.moveaxis(keep, -1, axis))
    return out


UNITS = {
    "element": lambda w, offset: element(w),
    "block2x1": lambda w, offset: block(w, 2, 1),
    "block2x3_per_position": lambda w, offset: block(w, 2, 3, per_position=True),
    "channel0_l2": lambda w, offset: channel(w, 0, 2.0),
    "channel1_l1": lambda w, offset: channel(w, 1, 1.0),
    "channel0_inf": lambda w, offset: channel(w, 0, math.inf),
    "random7": lambda w, offset: random(w, 7, offset),
}

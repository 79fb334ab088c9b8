"""Plain NumPy reference of the mask math, to check the Paddle ops against."""
import math

import numpy as np


def block_scores(w, block):
    m, n = block
    if (m, n) == (1, 1):
        return np.abs(w)
    d0, d1 = w.shape[:2]
    rest = w.reshape(d0, d1, -1)
    scores = np.zeros((math.ceil(d0 / m), math.ceil(d1 / n), rest.shape[2]), "float64")
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            scores[i, j] = np.abs(rest[i * m : (i + 1) * m, j * n : (j + 1) * n]).mean(axis=(0, 1))
    return scores.astype("float32")


def expand(keep, shape, block):
    m, n = block
    if (m, n) == (1, 1):
        return keep
    full = np.repeat(np.repeat(keep, m, axis=0), n, axis=1)[: shape[0], : shape[1]]
    return full.reshape(shape)


def threshold_for(scores, ratio):
    """Scores <= the returned value are pruned: the k-th smallest, k = round(ratio * count)."""
    k = int(math.floor(ratio * scores.size + 0.5))
    return -1.0 if k == 0 else np.sort(scores.ravel())[k - 1]


def ratio_masks(weights, ratio, block=(1, 1), local=False):
    scores = [block_scores(w, block) for w in weights]
    if local:
        thresholds = [threshold_for(s, ratio) for s in scores]
    else:
        thresholds = [threshold_for(np.concatenate([s.ravel() for s in scores]), ratio)] * len(scores)
    return [expand((s > t).astype("float32"), w.shape, block) for w, s, t in zip(weights, scores, thresholds)]


def threshold_masks(weights, threshold, block=(1, 1)):
    return [expand((block_scores(w, block) >= threshold).astype("float32"), w.shape, block) for w in weights]


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

"""Mask math (Paddle ops, run eagerly) against the NumPy reference."""
import numpy as np
import paddle
import pytest

from sparsity import masks
from tests import reference

RNG = np.random.default_rng(7)


def run_ratio(weights, ratio, block=(1, 1)):
    """Global ratio masks with the library's ops, eagerly."""
    scores = [masks.magnitude_scores(paddle.to_tensor(w), block) for w in weights]
    units = sum(int(np.prod(s.shape)) for s in scores)
    k = paddle.to_tensor([masks.prune_count(ratio, units)], "int64")
    t = masks.ratio_threshold(paddle.concat([paddle.reshape(s, [-1]) for s in scores]), k)
    return [masks.expand_block_mask(masks.keep_mask(s, t), w.shape, block).numpy() for s, w in zip(scores, weights)]


@pytest.mark.parametrize("n", [1, 7, 1000, 65537, 300000])
def test_kth_smallest_matches_sort(n):
    s = np.abs(RNG.standard_normal(n)).astype("float32")
    s[: n // 4] = 0.0
    for k in sorted({1, max(1, n // 4), n // 4 + 1, n // 2, n - 1, n} - {0}):
        got = masks.kth_smallest(paddle.to_tensor(s), paddle.to_tensor([k], "int64")).numpy()[0]
        assert got == np.sort(s)[k - 1]


def test_kth_smallest_on_skewed_scores():
    # one huge outlier squeezes everything else into the lowest buckets
    s = np.abs(RNG.standard_normal(50000)).astype("float32") * 1e-3
    s[0] = 1e6
    got = masks.kth_smallest(paddle.to_tensor(s), paddle.to_tensor([25000], "int64")).numpy()[0]
    assert got == np.sort(s)[24999]


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.75, 0.9, 0.999])
def test_global_ratio_matches_reference(ratio):
    weights = [RNG.standard_normal(s).astype("float32") for s in [(16, 8, 3, 3), (64, 10), (8, 16, 1, 1)]]
    got = run_ratio(weights, ratio)
    want = reference.ratio_masks(weights, ratio)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    pruned = sum(int((g == 0).sum()) for g in got)
    total = sum(w.size for w in weights)
    assert abs(pruned - ratio * total) <= 0.5  # exact to the weight: round(ratio * n)


def test_ratio_zero_prunes_nothing_even_with_zeros():
    w = RNG.standard_normal((10, 10)).astype("float32")
    w[0] = 0.0
    (got,) = run_ratio([w], 0.0)
    assert got.min() == 1.0


def test_already_zero_weights_count_towards_ratio():
    w = RNG.standard_normal((20, 50)).astype("float32")
    w.ravel()[:300] = 0.0  # 30% already zero
    (got,) = run_ratio([w], 0.5)
    assert (got == 0).sum() == 500
    assert (got.ravel()[:300] == 0).all()


def test_ties_at_threshold_are_pruned_together():
    w = np.array([[0.1, 0.2, 0.2, 0.2, 0.5, 0.9]], "float32")
    (got,) = run_ratio([w], 0.34)  # k = 2: threshold 0.2, all three 0.2 go
    np.testing.assert_array_equal(got, [[0, 0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(got, reference.ratio_masks([w], 0.34)[0])


@pytest.mark.parametrize("shape,block", [((8, 6), (2, 1)), ((7, 5), (2, 1)), ((9, 10, 3, 3), (2, 3)), ((5, 7, 1, 1), (4, 4))])
def test_block_masks_match_reference(shape, block):
    weights = [RNG.standard_normal(shape).astype("float32")]
    got = run_ratio(weights, 0.5, block)
    np.testing.assert_array_equal(got[0], reference.ratio_masks(weights, 0.5, block)[0])
    # every block (at each kernel position) is all-kept or all-pruned
    m, n = block
    g = got[0].reshape(shape[0], shape[1], -1)
    for i in range(0, shape[0], m):
        for j in range(0, shape[1], n):
            cell = g[i : i + m, j : j + n]
            np.testing.assert_array_equal(cell.min(axis=(0, 1)), cell.max(axis=(0, 1)))


def test_block_scored_on_magnitude_not_signed_mean():
    # the [+1, -1] block has signed mean 0 but magnitude 1: it must outlive the [0.1, 0.1] block
    w = np.array([[1.0], [-1.0], [0.1], [0.1]], "float32")
    (got,) = run_ratio([w], 0.5, (2, 1))
    np.testing.assert_array_equal(got.ravel(), [1, 1, 0, 0])


def test_block_needs_two_dims_and_valid_block():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        masks.magnitude_scores(paddle.to_tensor(np.ones(4, "float32")), (2, 1))
    for bad in [(0, 1), (2,), "2x1", (1.5, 1), (True, 1)]:
        with pytest.raises(ValueError, match="sparse_block"):
            masks.check_block(bad)


def test_prune_count_rounds_half_up():
    assert masks.prune_count(0.5, 3) == 2
    assert masks.prune_count(0.0, 10) == 0
    assert masks.prune_count(0.75, 3194752) == 2396064


@pytest.mark.parametrize("shape", [(16, 8), (8, 12, 3, 3), (10, 6), (6, 5, 1, 1), (4, 1, 3, 3)])
def test_nm_masks_keep_two_of_every_four(shape):
    w = RNG.standard_normal(shape).astype("float32")
    got = masks.nm_keep_mask(paddle.to_tensor(w), (2, 4)).numpy()
    np.testing.assert_array_equal(got, reference.nm_masks([w], 2, 4)[0])
    groups = np.moveaxis(got, 1 if len(shape) == 4 else 0, -1)
    full = groups[..., : groups.shape[-1] // 4 * 4].reshape(-1, 4)
    assert (full.sum(axis=1) == 2).all()  # exactly 2 kept in every complete group of 4


def test_nm_with_already_zero_weights_keeps_exactly_n():
    w = np.zeros((8, 3), "float32")
    w[0, 0] = 1.0
    got = masks.nm_keep_mask(paddle.to_tensor(w), (2, 4)).numpy()
    assert (got.sum(axis=0) == 4).all()  # 2 per group of 4 along axis 0, ties broken by position


@pytest.mark.parametrize("bad", [(4, 4), (0, 4), (2,), (2.0, 4), "2:4"])
def test_bad_nm_pattern(bad):
    with pytest.raises(ValueError, match="nm_pattern must be two integers"):
        masks.check_nm(bad)

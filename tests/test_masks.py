"""Rules and selections (Paddle ops, run eagerly) against the NumPy reference."""
import math

import numpy as np
import paddle
import pytest

from sparsity import checks, masks, rules
from sparsity.schedule import ConstantSchedule
from tests import reference
from tests.sparsity_fixtures import RULES

RNG = np.random.default_rng(7)
SHAPES = [(16, 8, 3, 3), (64, 10), (8, 16, 1, 1), (9, 7, 3, 3)]


def run(weights, rule, selection, feed):
    """Masks of `weights` from masks.compute_masks, eagerly; also returns the masked weights and thresholds."""
    tensors = [paddle.to_tensor(w) for w in weights]
    outs = [paddle.ones(w.shape, "float32") for w in weights]
    feed = None if feed is None else paddle.to_tensor(feed)
    thresholds = masks.compute_masks(rule, selection, tensors, outs, feed)
    return [m.numpy() for m in outs], [t.numpy() for t in tensors], thresholds


def ratio_selection(weights, ratio, local):
    sizes = [w.size for w in weights]
    members = [[i] for i in range(len(weights))] if local else [list(range(len(weights)))]
    groups = [masks.Group(tuple(m), ratio, sum(sizes[i] for i in m)) for m in members]
    selection = masks.ByRatio(groups, ConstantSchedule())
    return selection, selection.feed(0)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 0.999])
@pytest.mark.parametrize("local", [False, True])
def test_ratio_masks_match_reference(name, ratio, local):
    weights = [RNG.standard_normal(s).astype("float32") for s in SHAPES]
    selection, feed = ratio_selection(weights, ratio, local)
    got, masked, _ = run(weights, RULES[name], selection, feed)
    want = reference.ratio_masks(weights, reference.UNITS[name], ratio, local)
    for g, w, m, dense in zip(got, want, masked, weights):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(m, dense * w)
    # whole units make the count reach round(ratio * n), overshooting by less than one unit
    sets = [[i] for i in range(len(weights))] if local else [range(len(weights))]
    for members in sets:
        pruned = sum(int((got[i] == 0).sum()) for i in members)
        total = sum(weights[i].size for i in members)
        unit = max(int(np.max(reference.UNITS[name](weights[i], 0)[1])) for i in members)
        assert round(ratio * total) <= pruned < round(ratio * total) + unit


@pytest.mark.parametrize("name", ["element", "block2x1", "channel0_l2"])
def test_threshold_masks_match_reference(name):
    weights = [RNG.standard_normal(s).astype("float32") for s in SHAPES]
    got, _, thresholds = run(weights, RULES[name], masks.ByThreshold(0.7), np.array([0.7], "float32"))
    for g, w in zip(got, reference.threshold_masks(weights, reference.UNITS[name], 0.7)):
        np.testing.assert_array_equal(g, w)
    assert float(thresholds[0].numpy()[0]) == pytest.approx(0.7)


@pytest.mark.parametrize("n", [1, 7, 1000, 65537, 300000])
def test_kth_smallest_matches_sort(n):
    s = np.abs(RNG.standard_normal(n)).astype("float32")
    s[: n // 4] = 0.0
    for k in sorted({1, max(1, n // 4), n // 4 + 1, n // 2, n - 1, n} - {0}):
        got = masks.kth_smallest(paddle.to_tensor(s), paddle.to_tensor([k], "int64")).numpy()[0]
        assert got == np.sort(s)[k - 1]


def test_weighted_kth_smallest_counts_weights():
    scores = np.abs(RNG.standard_normal(5000)).astype("float32")
    sizes = RNG.integers(1, 20, 5000).astype("int64")
    scores[:100], sizes[:100] = 0.0, 3  # zero units weigh 300
    for k in (1, 300, 301, 5000, int(sizes.sum())):
        got = masks.kth_smallest(paddle.to_tensor(scores), paddle.to_tensor([k], "int64"), paddle.to_tensor(sizes)).numpy()[0]
        order = np.argsort(scores, kind="stable")
        assert got == scores[order][np.searchsorted(np.cumsum(sizes[order]), k)]


def test_kth_smallest_on_skewed_scores():
    # one huge outlier squeezes everything else into the lowest buckets
    s = np.abs(RNG.standard_normal(50000)).astype("float32") * 1e-3
    s[0] = 1e6
    got = masks.kth_smallest(paddle.to_tensor(s), paddle.to_tensor([25000], "int64")).numpy()[0]
    assert got == np.sort(s)[24999]


def test_already_zero_weights_count_towards_ratio():
    w = RNG.standard_normal((20, 50)).astype("float32")
    w.ravel()[:300] = 0.0  # 30% already zero
    selection, feed = ratio_selection([w], 0.5, False)
    (got,), _, _ = run([w], rules.Element(), selection, feed)
    assert (got == 0).sum() == 500 and (got.ravel()[:300] == 0).all()


def test_ties_at_threshold_are_pruned_together():
    w = np.array([[0.1, 0.2, 0.2, 0.2, 0.5, 0.9]], "float32")
    selection, feed = ratio_selection([w], 0.34, False)  # k = 2: threshold 0.2, all three 0.2 go
    (got,), _, _ = run([w], rules.Element(), selection, feed)
    np.testing.assert_array_equal(got, [[0, 0, 0, 0, 1, 1]])


def test_block_scored_on_magnitude_not_signed_mean():
    # the [+1, -1] block has signed mean 0 but magnitude 1: it must outlive the [0.1, 0.1] block
    w = np.array([[1.0], [-1.0], [0.1], [0.1]], "float32")
    selection, feed = ratio_selection([w], 0.5, False)
    (got,), _, _ = run([w], rules.Block(2, 1), selection, feed)
    np.testing.assert_array_equal(got.ravel(), [1, 1, 0, 0])


def test_block_slabs_span_the_kernel_and_per_position_does_not():
    w = RNG.standard_normal((8, 6, 3, 3)).astype("float32")
    selection, feed = ratio_selection([w], 0.5, False)
    (slab,), _, _ = run([w], rules.Block(2, 1), selection, feed)
    (per_position,), _, _ = run([w], rules.Block(2, 1, per_position=True), selection, feed)
    for i in range(0, 8, 2):
        for j in range(6):
            assert np.unique(slab[i : i + 2, j]).size == 1  # one m x n x kh x kw slab: all kept or all pruned
    cells = [per_position[i : i + 2, j] for i in range(0, 8, 2) for j in range(6)]
    assert all((c.min(axis=0) == c.max(axis=0)).all() for c in cells)  # each kernel position is one 2x1 block
    assert any(np.unique(c).size == 2 for c in cells)  # ... and positions of a slab differ


def test_channel_rule_prunes_whole_slices_along_dim():
    w = RNG.standard_normal((12, 5, 3, 3)).astype("float32")
    selection, feed = ratio_selection([w], 0.5, False)
    (by_filter,), _, _ = run([w], rules.Channel(0, 2), selection, feed)
    (by_input,), _, _ = run([w], rules.Channel(1, 2), selection, feed)
    assert sorted(by_filter.reshape(12, -1).mean(axis=1)) == [0.0] * 6 + [1.0] * 6
    assert set(by_input.transpose(1, 0, 2, 3).reshape(5, -1).mean(axis=1)) == {0.0, 1.0}


def test_channel_scores_are_size_normalised():
    # a channel twice as long with the same values scores the same: the global ratio compares them fairly
    short, long = np.full((2, 4), 0.5, "float32"), np.full((2, 8), 0.5, "float32")
    rule = rules.Channel(0, 2)
    a, b = (rule.scores(paddle.to_tensor(w)).numpy() for w in (short, long))
    np.testing.assert_allclose(a, b)


def test_random_scores_are_a_fixed_permutation():
    r = rules.Random(5)
    scores = r.scores(paddle.zeros([1000], "float32"), 0).numpy()
    assert len(np.unique(scores)) == 1000  # no ties, so counts are exact
    np.testing.assert_array_equal(scores, reference.random_hash(range(1000), 5))
    shifted = r.scores(paddle.zeros([10], "float32"), 990).numpy()  # a parameter's scores depend on its offset
    np.testing.assert_array_equal(shifted, scores[990:])
    assert not np.array_equal(rules.Random(6).scores(paddle.zeros([1000], "float32"), 0).numpy(), scores)


def test_random_masks_are_nested_as_the_ratio_rises():
    w = RNG.standard_normal((40, 30)).astype("float32")
    previous = np.ones_like(w)
    for ratio in (0.2, 0.5, 0.8):
        selection, feed = ratio_selection([w], ratio, False)
        (got,), _, _ = run([w], rules.Random(1), selection, feed)
        assert (got <= previous).all() and (got == 0).sum() == round(ratio * w.size)
        previous = got


@pytest.mark.parametrize("shape", [(16, 8), (8, 12, 3, 3), (10, 6), (6, 5, 1, 1), (4, 1, 3, 3)])
def test_nm_masks_keep_two_of_every_four(shape):
    w = RNG.standard_normal(shape).astype("float32")
    (got,), _, thresholds = run([w], rules.NM(2, 4), masks.ByPattern(rules.NM(2, 4)), None)
    np.testing.assert_array_equal(got, reference.nm_masks([w], 2, 4)[0])
    groups = np.moveaxis(got, 1 if len(shape) == 4 else 0, -1)
    full = groups[..., : groups.shape[-1] // 4 * 4].reshape(-1, 4)
    assert (full.sum(axis=1) == 2).all() and thresholds == []


def test_nm_with_already_zero_weights_keeps_exactly_n():
    w = np.zeros((8, 3), "float32")
    w[0, 0] = 1.0
    (got,), _, _ = run([w], rules.NM(2, 4), masks.ByPattern(rules.NM(2, 4)), None)
    assert (got.sum(axis=0) == 4).all()  # 2 per group of 4 along axis 0, ties broken by position


def test_prune_count_rounds_half_up():
    assert masks.prune_count(0.5, 3) == 2
    assert masks.prune_count(0.0, 10) == 0
    assert masks.prune_count(0.75, 3194752) == 2396064


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: rules.Block(0, 1), "block .m, n. must be two positive integers"),
        (lambda: rules.Block(2, 1, per_position="yes"), "per_position must be True or False"),
        (lambda: rules.Channel(2), "dim must be one of 0, 1"),
        (lambda: rules.Channel(0, 0.5), "norm must be a number >= 1"),
        (lambda: rules.Random(-1), "seed must be an integer >= 0"),
        (lambda: rules.NM(4, 4), "nm_pattern must be two integers"),
        (lambda: rules.create("filter"), "granularity must be one of 'element', 'block', 'channel', 'random', 'nm'"),
        (lambda: rules.create("block", size=2), "granularity 'block' does not take these options"),
        (lambda: rules.Block(2, 1).check((4,)), "needs weights with at least 2 dimensions"),
    ],
)
def test_bad_rules_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rules_by_name_equal_rules_by_class():
    assert rules.create("block", m=2, n=1) == rules.Block(2, 1)
    assert rules.create("channel", dim=1, norm=math.inf) == rules.Channel(1, math.inf)
    assert rules.from_paddleslim("ratio", [1, 1], [2, 4]) == rules.Element()
    assert rules.from_paddleslim("ratio", [2, 1], [2, 4]) == rules.Block(2, 1)
    assert rules.from_paddleslim("nm", [1, 1], [1, 4]) == rules.NM(1, 4)


@pytest.mark.parametrize(
    "check,good,bad",
    [
        (checks.ratio, [0, 0.5, np.float32(0.25), np.float64(0.9)], [1.0, -0.1, "0.5", None, True, np.bool_(False)]),
        (checks.threshold, [0, 1e-3, np.float32(2)], [-1, "1", None, False]),
        (lambda v: checks.flag(v, "local_sparsity"), [True, False, 0, 1, np.int64(1), np.bool_(True)], [2, -1, "True", None, 0.0]),
        (lambda v: checks.count(v, "pruning_steps", 1), [1, 10, np.int64(5)], [0, 1.5, True, "3"]),
        (checks.block, [[1, 1], (2, 1), [np.int64(4), 4]], [(0, 1), (2,), "2x1", (1.5, 1), (True, 1)]),
        (checks.nm_pattern, [[2, 4], (1, 8)], [(4, 4), (0, 4), (2,), (2.0, 4), "2:4"]),
    ],
)
def test_checks_accept_numpy_and_refuse_the_rest(check, good, bad):
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(ValueError, match="must be"):
            check(value)


def test_check_messages_take_the_callers_name():
    with pytest.raises(ValueError, match=r"^--ratio must be a number in \[0, 1\), got 1.5$"):
        checks.ratio(1.5, "--ratio")
    assert checks.flag(np.int64(0), "--local_sparsity") is False
    with pytest.raises(ValueError, match="^--local_sparsity True needs --pruning_mode 'ratio', got --pruning_mode 'threshold'"):
        checks.local_sparsity_mode(1, "threshold", "--local_sparsity", "--pruning_mode")
    assert math.isinf(checks.norm_order(math.inf))


@pytest.mark.parametrize(
    "rule,unit",
    [
        (rules.Element(), lambda w, o: reference.element(w)),
        (rules.Block(2, 1), lambda w, o: reference.block(w, 2, 1)),
        (rules.Channel(0, 2), lambda w, o: reference.channel(w, 0, 2)),
        (rules.Random(5), lambda w, o: reference.random(w, 5, o)),
    ],
    ids=["element", "block", "channel", "random"],
)
def test_prune_once_prunes_one_weight_alone_like_the_reference(rule, unit):
    """What sensitivity.py does to each layer: that weight alone to a ratio, eagerly, even from static mode."""
    w = RNG.standard_normal((16, 8, 3, 3)).astype("float32")
    paddle.enable_static()
    try:
        got = masks.prune_once(w, rule, 0.6)
    finally:
        paddle.disable_static()
    (want,) = reference.ratio_masks([w], unit, 0.6)
    np.testing.assert_array_equal(got, w * want)
    assert not np.signbit(got[want == 0]).any()  # pruned entries are +0.0


def test_prune_once_nm_keeps_its_pattern():
    w = RNG.standard_normal((8, 16, 3, 3)).astype("float32")
    (want,) = reference.nm_masks([w], 2, 4)
    np.testing.assert_array_equal(masks.prune_once(w, rules.NM(2, 4), 0.9), w * want)

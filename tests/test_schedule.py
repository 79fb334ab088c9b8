"""Schedules: GMP phases, cubic ramp, per-target ramps, resume, validation, and PaddleSlim's increments."""
import numpy as np
import pytest

from sparsity.schedule import ConstantSchedule, GMPSchedule

CONFIGS = dict(stable_iterations=10, pruning_iterations=40, tunning_iterations=20, pruning_steps=8, initial_ratio=0.2)


def changes(schedule, target, iterations):
    """[(iteration, ratio)] wherever the ratio changes (and at 0)."""
    ratios = [schedule.ratio_at(i, target) for i in range(iterations)]
    return [(i, r) for i, r in enumerate(ratios) if i == 0 or ratios[i - 1] != r]


def test_phases_endpoints_and_monotone():
    s = GMPSchedule.from_configs(CONFIGS)
    ratios = [s.ratio_at(i, 0.8) for i in range(80)]
    assert ratios[:10] == [0.0] * 10
    assert ratios[10] == pytest.approx(0.2)
    assert ratios[50:] == [0.8] * 30
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    assert len(set(ratios[10:50])) == 8  # pruning_steps levels before the target


def test_cubic_formula():
    s = GMPSchedule.from_configs(CONFIGS)
    for j in range(8):  # the step() after 10 + 5j earlier ones starts increment j
        want = 0.2 + 0.6 * (1 - (1 - j / 8) ** 3)
        assert s.ratio_at(10 + 5 * j, 0.8) == pytest.approx(want)
        assert s.ratio_at(10 + 5 * j + 4, 0.8) == pytest.approx(want)


def test_each_target_ramps_on_the_same_schedule():
    s = GMPSchedule.from_configs(CONFIGS)
    assert [i for i, _ in changes(s, 0.5, 80)] == [i for i, _ in changes(s, 0.9, 80)]
    assert s.ratio_at(60, 0.5) == 0.5 and s.ratio_at(60, 0.9) == 0.9
    assert s.ratio_at(10, 0.1) == 0.1  # a target below initial_ratio starts (and stays) at its target
    assert ConstantSchedule().ratio_at(0, 0.3) == 0.3


# What PaddleSlim 2.6.0's GMPUnstructuredPruner sets as pruner.ratio at each step() (measured with it;
# tests/test_paddleslim.py compares against the installed PaddleSlim when its environment exists).
ALIGNED = dict(stable_iterations=22, pruning_iterations=44, tunning_iterations=10, pruning_steps=4, initial_ratio=0.2)
PADDLESLIM_ALIGNED = [(0, 0.0), (22, 0.2), (33, 0.546875), (44, 0.7250000000000001), (55, 0.7906250000000001), (66, 0.8)]
RAGGED = dict(stable_iterations=7, pruning_iterations=50, tunning_iterations=5, pruning_steps=4, initial_ratio=0.2)
PADDLESLIM_RAGGED = [(0, 0.2), (12, 0.546875), (24, 0.7250000000000001), (36, 0.7906250000000001), (48, 0.8)]


def test_increments_land_where_paddleslim_puts_them_when_phases_are_whole_periods():
    assert changes(GMPSchedule(**ALIGNED), 0.8, 80) == PADDLESLIM_ALIGNED  # the same iterations and the same floats


def test_documented_difference_from_paddleslim_on_ragged_phases():
    # PaddleSlim rounds its 7 stable iterations down to 0 whole periods of int(50 / 4) = 12 and ends its ramp
    # at 4 x 12 = 48; ours keeps 7 stable iterations and spreads the 4 increments over all 50 pruning ones.
    ours = changes(GMPSchedule(**RAGGED), 0.8, 70)
    assert ours == [(0, 0.0), (7, 0.2), (20, 0.546875), (32, 0.7250000000000001), (45, 0.7906250000000001), (57, 0.8)]
    assert [r for _, r in ours[1:]] == [r for _, r in PADDLESLIM_RAGGED]  # the same levels, shifted


def test_schedule_is_a_pure_function_of_iteration():
    a, b = GMPSchedule.from_configs(CONFIGS), GMPSchedule.from_configs(CONFIGS)
    assert [a.ratio_at(i, 0.75) for i in range(90)] == [b.ratio_at(i, 0.75) for i in reversed(range(90))][::-1]


def test_numpy_numbers_are_accepted():
    s = GMPSchedule.from_configs({k: (np.int64(v) if isinstance(v, int) else np.float64(v)) for k, v in CONFIGS.items()})
    assert s == GMPSchedule.from_configs(CONFIGS) and type(s.pruning_steps) is int


@pytest.mark.parametrize(
    "change,message",
    [
        ({"pruning_steps": 0}, "pruning_steps must be an integer >= 1"),
        ({"pruning_steps": 41}, "must not exceed pruning_iterations"),
        ({"stable_iterations": -1}, "stable_iterations must be an integer >= 0"),
        ({"tunning_iterations": 1.5}, "tunning_iterations must be an integer >= 0"),
        ({"initial_ratio": -0.1}, r"initial_ratio must be a number in \[0, 1\)"),
        ({"pruning_iteration": 3}, "unknown GMP config key"),
    ],
)
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        GMPSchedule.from_configs({**CONFIGS, **change})


@pytest.mark.parametrize("configs", [None, {}, [1, 2]])
def test_missing_configs(configs):
    with pytest.raises(ValueError, match="configs must be a dict"):
        GMPSchedule.from_configs(configs)


def test_tuning_spelling_alias():
    cfg = dict(CONFIGS)
    cfg["tuning_iterations"] = cfg.pop("tunning_iterations")
    assert GMPSchedule.from_configs(cfg).tunning_iterations == 20

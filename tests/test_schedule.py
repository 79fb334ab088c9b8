"""GMP schedule: phases, cubic ramp, resume, validation."""
import pytest

from sparsity.schedule import GMPSchedule

CONFIGS = dict(stable_iterations=10, pruning_iterations=40, tunning_iterations=20, pruning_steps=8, initial_ratio=0.2)


def test_phases_endpoints_and_monotone():
    s = GMPSchedule.from_configs(0.8, CONFIGS)
    ratios = [s.ratio_at(i) for i in range(80)]
    assert ratios[:10] == [0.0] * 10
    assert ratios[10] == pytest.approx(0.2)
    assert ratios[50:] == [0.8] * 30
    assert all(a <= b for a, b in zip(ratios[10:], ratios[11:]))
    assert len(set(ratios[10:50])) == 8  # pruning_steps levels before the target


def test_cubic_formula():
    s = GMPSchedule.from_configs(0.8, CONFIGS)
    # iteration 10 + 5*j starts increment j
    for j in range(8):
        want = 0.2 + 0.6 * (1 - (1 - j / 8) ** 3)
        assert s.ratio_at(10 + 5 * j) == pytest.approx(want)
        assert s.ratio_at(10 + 5 * j + 4) == pytest.approx(want)


def test_schedule_is_a_pure_function_of_iteration():
    a = GMPSchedule.from_configs(0.75, CONFIGS)
    b = GMPSchedule.from_configs(0.75, CONFIGS)
    assert [a.ratio_at(i) for i in range(90)] == [b.ratio_at(i) for i in reversed(range(90))][::-1]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"pruning_steps": 0}, "pruning_steps must be an integer >= 1"),
        ({"pruning_steps": 41}, "must not exceed pruning_iterations"),
        ({"stable_iterations": -1}, "stable_iterations must be an integer >= 0"),
        ({"tunning_iterations": 1.5}, "tunning_iterations must be an integer >= 0"),
        ({"initial_ratio": 0.9}, "must not exceed the target ratio"),
        ({"initial_ratio": -0.1}, r"initial_ratio must be a number in \[0, 1\)"),
        ({"pruning_iteration": 3}, "unknown GMP config key"),
    ],
)
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        GMPSchedule.from_configs(0.8, {**CONFIGS, **change})


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "0.5", None])
def test_bad_target_ratio(ratio):
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\)"):
        GMPSchedule.from_configs(ratio, CONFIGS)


def test_tuning_spelling_alias():
    cfg = dict(CONFIGS)
    cfg["tuning_iterations"] = cfg.pop("tunning_iterations")
    assert GMPSchedule.from_configs(0.8, cfg).tunning_iterations == 20

"""How much to prune when: pure functions of the iteration, so any iteration can be resumed exactly."""
from dataclasses import dataclass


def check_ratio(ratio, name="ratio"):
    """A sparsity ratio must be a number in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


CONFIG_KEYS = (
    "stable_iterations",
    "pruning_iterations",
    "tunning_iterations",
    "resume_iteration",
    "pruning_steps",
    "initial_ratio",
)


@dataclass(frozen=True)
class GMPSchedule:
    """Gradual magnitude pruning: ratio 0 while stable, a cubic ramp while pruning, the target while tuning.

    During pruning the ratio rises from `initial_ratio` to `target` in `pruning_steps` increments:
    after j increments it is initial + (target - initial) * (1 - (1 - j / pruning_steps) ** 3).
    """

    target: float
    stable_iterations: int
    pruning_iterations: int
    tunning_iterations: int
    pruning_steps: int
    initial_ratio: float = 0.0

    @classmethod
    def from_configs(cls, target, configs):
        """Build from PaddleSlim-style configs, with a clear error for every bad or unknown key."""
        if not isinstance(configs, dict):
            raise ValueError(f"configs must be a dict with keys {', '.join(CONFIG_KEYS)}, got {configs!r}")
        configs = dict(configs)
        if "tuning_iterations" in configs:
            configs.setdefault("tunning_iterations", configs.pop("tuning_iterations"))
        unknown = sorted(set(configs) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown GMP config key(s) {unknown}; accepted keys: {', '.join(CONFIG_KEYS)}")
        missing = [k for k in ("stable_iterations", "pruning_iterations", "pruning_steps") if k not in configs]
        if missing:
            raise ValueError(f"GMP configs need {', '.join(missing)}")
        return cls(
            target=target,
            stable_iterations=configs["stable_iterations"],
            pruning_iterations=configs["pruning_iterations"],
            tunning_iterations=configs.get("tunning_iterations", 0),
            pruning_steps=configs["pruning_steps"],
            initial_ratio=configs.get("initial_ratio", 0.0),
        )

    def __post_init__(self):
        check_ratio(self.target, "ratio")
        for name in ("stable_iterations", "pruning_iterations", "tunning_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        steps = self.pruning_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"pruning_steps must be an integer >= 1, got {steps!r}")
        if steps > self.pruning_iterations:
            raise ValueError(
                f"pruning_steps ({steps}) must not exceed pruning_iterations ({self.pruning_iterations}): "
                "each step needs at least one iteration; lower pruning_steps or lengthen the pruning phase"
            )
        check_ratio(self.initial_ratio, "initial_ratio")
        if self.initial_ratio > self.target:
            raise ValueError(f"initial_ratio ({self.initial_ratio}) must not exceed the target ratio ({self.target})")

    def ratio_at(self, iteration):
        """Target ratio once `iteration` optimizer steps are done."""
        if iteration < self.stable_iterations:
            return 0.0
        into = iteration - self.stable_iterations
        if into >= self.pruning_iterations:
            return self.target
        done = into * self.pruning_steps // self.pruning_iterations
        progress = 1.0 - (1.0 - done / self.pruning_steps) ** 3
        return self.initial_ratio + (self.target - self.initial_ratio) * progress

    @property
    def total_iterations(self):
        return self.stable_iterations + self.pruning_iterations + self.tunning_iterations

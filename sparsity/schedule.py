"""How much to prune when: pure functions of (iteration, target), so any iteration resumes exactly.

`iteration` counts the `step()` calls made before this one (PaddleSlim's `cur_iteration`): the
first `step()`, after the first optimizer update, asks for `ratio_at(0, target)`. Each parameter
group ramps to its own target on the same schedule.
"""
from dataclasses import dataclass

from . import checks

CONFIG_KEYS = (
    "stable_iterations",
    "pruning_iterations",
    "tunning_iterations",
    "resume_iteration",
    "pruning_steps",
    "initial_ratio",
)


class ConstantSchedule:
    """The target from the first step on (UnstructuredPruner)."""

    def ratio_at(self, iteration, target):
        return target

    def increments(self, target):
        """No increments: the ratio is the target throughout."""
        return []

    def __eq__(self, other):
        return type(self) is type(other)


@dataclass(frozen=True)
class GMPSchedule:
    """Gradual magnitude pruning: ratio 0 while stable, a cubic ramp while pruning, the target after.

    The pruning phase is cut into `pruning_steps` equal periods; in period j the ratio is
    initial + (target - initial) * (1 - (1 - j / pruning_steps) ** 3), with initial =
    min(initial_ratio, target). When the phases are whole multiples of pruning_iterations /
    pruning_steps (as epoch-based configs usually are), the ratio changes at exactly the iterations
    where PaddleSlim's GMPUnstructuredPruner pops its `ratios_stack`. Otherwise PaddleSlim rounds
    its stable phase down to whole periods (its ramp starts early) and truncates the period to an
    integer (its ramp ends early); this schedule keeps the phases as configured.
    """

    stable_iterations: int
    pruning_iterations: int
    tunning_iterations: int
    pruning_steps: int
    initial_ratio: float = 0.0

    @classmethod
    def from_configs(cls, configs):
        """From PaddleSlim-style configs (resume_iteration is the pruner's, not the schedule's), every bad key named."""
        if not isinstance(configs, dict) or not configs:
            raise ValueError(f"configs must be a dict with keys {', '.join(CONFIG_KEYS)}, got {configs!r}")
        configs = dict(configs)
        configs.pop("resume_iteration", None)
        if "tuning_iterations" in configs:
            configs.setdefault("tunning_iterations", configs.pop("tuning_iterations"))
        unknown = sorted(set(configs) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown GMP config key(s) {unknown}; accepted keys: {', '.join(CONFIG_KEYS)}")
        missing = [k for k in ("stable_iterations", "pruning_iterations", "pruning_steps") if k not in configs]
        if missing:
            raise ValueError(f"GMP configs need {', '.join(missing)}")
        return cls(
            stable_iterations=configs["stable_iterations"],
            pruning_iterations=configs["pruning_iterations"],
            tunning_iterations=configs.get("tunning_iterations", 0),
            pruning_steps=configs["pruning_steps"],
            initial_ratio=configs.get("initial_ratio", 0.0),
        )

    def __post_init__(self):
        for name in ("stable_iterations", "pruning_iterations", "tunning_iterations"):
            object.__setattr__(self, name, checks.count(getattr(self, name), name))
        object.__setattr__(self, "pruning_steps", checks.count(self.pruning_steps, "pruning_steps", minimum=1))
        object.__setattr__(self, "initial_ratio", checks.ratio(self.initial_ratio, "initial_ratio"))
        if self.pruning_steps > self.pruning_iterations:
            raise ValueError(
                f"pruning_steps ({self.pruning_steps}) must not exceed pruning_iterations ({self.pruning_iterations}): "
                "each step needs at least one iteration; lower pruning_steps or lengthen the pruning phase"
            )

    def ratio_at(self, iteration, target):
        """The ratio for the step() call that follows `iteration` earlier ones."""
        into = iteration - self.stable_iterations
        if into < 0:
            return 0.0
        if into >= self.pruning_iterations:
            return target
        initial = min(self.initial_ratio, target)
        period = into * self.pruning_steps // self.pruning_iterations
        return (1.0 - (1.0 - period / self.pruning_steps) ** 3) * (target - initial) + initial

    def increments(self, target):
        """[(iteration, ratio)] in order: where PaddleSlim's GMPUnstructuredPruner keeps an entry of its
        `ratios_stack`, and the iteration of the step() that takes it. As many 0.0 as whole periods fit in the
        stable phase (PaddleSlim's count), one period apart from iteration 0; one per
        ramp period, at the iteration where its ratio starts; as many `target` as whole periods fit in the tuning
        phase, one period apart from its start. The period is pruning_iterations / pruning_steps. When the phases
        are whole periods, these are exactly PaddleSlim's entries and iterations."""
        steps, pruning = self.pruning_steps, self.pruning_iterations
        stable_entries = int(float(self.stable_iterations) / pruning * steps)  # PaddleSlim's float arithmetic, to the entry
        tuning_entries = int(float(self.tunning_iterations) / pruning * steps)
        stable = [_ceil_div(k * pruning, steps) for k in range(stable_entries)]
        ramp = [self.stable_iterations + _ceil_div(j * pruning, steps) for j in range(steps)]
        tuning = [self.stable_iterations + pruning + _ceil_div(k * pruning, steps) for k in range(tuning_entries)]
        return [(i, 0.0) for i in stable] + [(i, self.ratio_at(i, target)) for i in ramp] + [(i, float(target)) for i in tuning]

    @property
    def total_iterations(self):
        return self.stable_iterations + self.pruning_iterations + self.tunning_iterations


def _ceil_div(a, b):
    return -(-a // b)

"""UnstructuredPruner and GMPUnstructuredPruner, PaddleSlim's API over a static Program or a dygraph Layer.

A pruner composes four parts: which parameters and their targets (selection.py), a mask rule
(rules.py: how a weight is scored and in which units it is pruned), a selection (masks.py: global or
per-parameter ratio, threshold, or the rule's own pattern) and a schedule (schedule.py: the ratio at
each iteration). A binding (static.py or dygraph.py) runs the same Paddle ops on the Program's scope or
on the Layer's tensors. Masks are recomputed only when they can change: a new target from the
schedule, threshold mode (weights move every step), or every `mask_update_period` steps.
"""
import functools

import numpy as np
import paddle

from . import checks, dygraph, ops, report, rules, selection, static
from .masks import ByPattern, ByRatio, ByThreshold, Group, compute_masks
from .schedule import ConstantSchedule, GMPSchedule

MODES = ("ratio", "threshold", "nm")


class UnstructuredPruner:
    """Keeps a model's weights sparse: call `step()` after every optimizer update.

    `program` is a paddle.static.Program or a paddle.nn.Layer in dynamic mode. Modes: 'ratio' prunes
    the `ratio` of the pruned set's weights with the lowest scores (one global threshold, or one per
    parameter with `local_sparsity=True`); 'threshold' prunes every unit scoring below `threshold`;
    'nm' keeps the n largest of every m weights along the input axis (`nm_pattern`, 2:4 by default).
    The rule defaults to what PaddleSlim's arguments mean (element, or m x n slabs for `sparse_block`);
    pass `rule=` (see sparsity.rules) for channels, random or per-position blocks. `ratios=` sets
    per-layer targets by name or glob (see selection.match_ratios).
    """

    def __init__(
        self,
        program,
        mode,
        ratio=0.55,
        threshold=1e-2,
        scope=None,
        place=None,
        prune_params_type=None,
        skip_params_func=None,
        local_sparsity=False,
        sparse_block=(1, 1),
        startup_program=None,
        mask_update_period=0,
        nm_pattern=(2, 4),
        rule=None,
        ratios=None,
        structural_names=None,
        schedule=None,
    ):
        self.mode = checks.choice(mode, "mode", MODES)
        self.target = checks.ratio(ratio)
        self.threshold = checks.threshold(threshold)
        self.local_sparsity = checks.local_sparsity_mode(local_sparsity, mode)
        self.mask_update_period = checks.count(mask_update_period, "mask_update_period (0: only when the ratio changes)")
        self.rule = rule if rule is not None else rules.from_paddleslim(mode, sparse_block, nm_pattern)
        check_rule(self.rule, mode)
        self.schedule = schedule if schedule is not None else ConstantSchedule()

        if dygraph.is_model(program):
            self.binding = dygraph.DygraphBinding(program)
            self.model = program
        else:
            self.binding = static.StaticBinding(program, scope, place, startup_program)
            self.program, self.scope, self.place = program, self.binding.scope, self.binding.place
        names = {**self.binding.structural_names, **(structural_names or {})}
        candidates = selection.choose(self.binding.model_params, self.binding.norm_names, program, prune_params_type, skip_params_func)
        configured = selection.match_ratios(candidates, ratios, names)
        if mode != "ratio" and any(v != selection.SKIP for v in configured.values()):
            raise ValueError(f"per-layer ratios need mode 'ratio'; with mode {mode!r} a config may only 'skip' parameters")
        self.params = [p for p in candidates if configured.get(p.name) != selection.SKIP]
        if not self.params:
            raise ValueError("no parameter to prune: the skip rule, prune_params_type and the config left nothing; check skip_params_func")
        for p in self.params:
            self.rule.check(p.shape)
        self._targets = {p.name: configured.get(p.name, self.target) for p in self.params}
        pruned = set(self._targets)
        self.skip_params = {p.name for p in self.binding.model_params if p.name not in pruned}
        self.masks = self.binding.create_masks(self.params)
        self.no_grad_set = self.binding.no_grad_set
        self.selection = self._make_selection(configured)
        self.iteration = 0
        self.mask_ratio = None
        self.mask_feed = None
        self.thresholds = None
        self.frozen = False

    def _make_selection(self, configured):
        """The selection for the mode; in ratio mode the groups: the default-target parameters together
        (one global threshold) unless local_sparsity, and each parameter with a per-layer ratio alone."""
        if self.mode == "nm":
            return ByPattern(self.rule)
        if self.mode == "threshold":
            return ByThreshold(self.threshold)
        shared = [] if self.local_sparsity else [i for i, p in enumerate(self.params) if p.name not in configured]
        members = ([shared] if shared else []) + [[i] for i in range(len(self.params)) if i not in shared]
        self._global_group = bool(shared)
        sizes = [int(np.prod(p.shape)) for p in self.params]
        return ByRatio([Group(tuple(m), self._targets[self.params[m[0]].name], sum(sizes[i] for i in m)) for m in members], self.schedule)

    # ---- PaddleSlim's surface ----------------------------------------------------------------------
    @property
    def ratio(self):
        """The ratio of the latest step (GMP: rises from 0 / initial_ratio to the target; 'nm': 1 - n/m)."""
        if self.mode == "nm":
            return 1.0 - self.rule.n / self.rule.m
        return self.schedule.ratio_at(self.iteration - 1, self.target)

    def targets(self):
        """{parameter name: the ratio it ends at} for every pruned parameter (per-layer config applied)."""
        return dict(self._targets)

    def layer_targets(self):
        """{parameter name: the sparsity that parameter itself ends at, or None where it has no target of its own:
        it shares one global threshold with others (its sparsity falls where the ranking puts it) or a threshold
        decides}. What a per-layer report shows beside each layer's achieved sparsity."""
        shared = set()
        if self.mode == "threshold":
            shared = set(range(len(self.params)))
        elif self.mode == "ratio":
            shared = {i for g in self.selection.groups if len(g.members) > 1 for i in g.members}
        return {p.name: None if i in shared else self._targets[p.name] for i, p in enumerate(self.params)}

    def step(self):
        """One iteration done: recompute the masks if they can change, then keep the weights masked."""
        iteration = self.iteration
        self.iteration += 1
        if not self.frozen:
            feed = self.selection.feed(iteration)
            periodic = self.mask_update_period and self.iteration % self.mask_update_period == 0
            if self.selection.every_step or periodic or self.mask_feed is None or _as_list(feed) != self.mask_feed:
                self._recompute(iteration, feed)
        self.binding.after_step(self.update_params)

    def update_masks(self):
        """Recompute every mask now, from the current weights and the current ratio, and apply it."""
        self._recompute(self.iteration - 1, self.selection.feed(self.iteration - 1))

    def update_params(self):
        """Multiply every pruned weight by its mask now (the training program or step() also does it)."""
        self.binding.run("apply", _apply)

    def set_static_masks(self):
        """Fix the current zero pattern as the masks and stop recomputing them, so any later training
        (a quantization-aware fine-tune, say) keeps the model exactly as sparse."""
        self.binding.run("freeze", _freeze)
        self.frozen = True

    def state_dict(self):
        """The pruner's own state for a checkpoint (JSON-serialisable); the masks are saved with the model."""
        return {
            "iteration": self.iteration,
            "mask_ratio": self.mask_ratio,
            "mask_feed": self.mask_feed,
            "thresholds": self.thresholds,
            "frozen": self.frozen,
            "targets": self.targets(),
        }

    def set_state_dict(self, state):
        self.iteration = int(state["iteration"])
        self.mask_ratio = state.get("mask_ratio")
        self.mask_feed = state.get("mask_feed")
        self.thresholds = state.get("thresholds")
        self.frozen = bool(state.get("frozen", False))

    # ---- figures -----------------------------------------------------------------------------------
    def sparsity(self):
        """Sparsity of the current weights: {'model', 'pruned', 'layers' (with each pruned one's target), 'nonfinite'}."""
        rows = [report.count(p.name, self.binding.read(p.name)) for p in self.binding.model_params]
        return report.summarize(rows, self._targets)

    def sparse_by_layer(self, program=None):
        """{parameter name: fraction of zeros} for every pruned parameter."""
        return {p.name: report.count(p.name, self.binding.read(p.name)).sparsity for p in self.params}

    def summarize_weights(self, program=None, ratio=0.1):
        """The `ratio`-quantile of |w| over the pruned set: a starting point for threshold mode."""
        values = np.concatenate([np.abs(self.binding.read(p.name)).ravel() for p in self.params])
        return float(np.quantile(values, ratio))

    @staticmethod
    def total_sparse(program, scope=None):
        """Fraction of zeros over all model parameters of a static program or a dygraph model."""
        return report.overall([report.count(p.name, v) for p, v in _model_values(program, scope)])

    @staticmethod
    def total_sparse_conv1x1(program, scope=None):
        """Fraction of zeros over the 1x1 convolution weights of a static program or a dygraph model."""
        return report.overall([report.count(p.name, v) for p, v in _model_values(program, scope) if selection.is_conv1x1(p.shape)])

    # ---- internals ---------------------------------------------------------------------------------
    def _recompute(self, iteration, feed):
        try:
            thresholds = self.binding.run("recompute", functools.partial(compute_masks, self.rule, self.selection), feed, self.selection.feed_dtype)
        except Exception as exc:
            diverged = [p.name for p in self.params if not np.isfinite(self.binding.read(p.name)).all()]
            if diverged:
                raise FloatingPointError(f"weights of {diverged[0]} are not finite, so no mask can be computed: training diverged") from exc
            raise
        self.thresholds = thresholds
        self.mask_feed = _as_list(feed)
        self.mask_ratio = self.ratio if self.mode == "nm" else self.schedule.ratio_at(iteration, self.target)
        if self.mode == "ratio" and self._global_group:
            self.threshold = thresholds[0]  # the global threshold, as PaddleSlim reports it


def _as_list(feed):
    return [] if feed is None else np.atleast_1d(feed).tolist()


def _apply(weights, masks, feed):
    for w, m in zip(weights, masks):
        paddle.assign(ops.masked(w, m), output=w)
    return []


def _freeze(weights, masks, feed):
    for w, m in zip(weights, masks):
        paddle.assign(paddle.cast(w != 0, "float32"), output=m)
    return []


def _model_values(program, scope):
    """(Param, ndarray) of every model parameter of a static program (read from `scope`) or a dygraph model."""
    if dygraph.is_model(program):
        return [(static.Param(p.name, tuple(p.shape), p), p.numpy()) for p in program.parameters()]
    scope = scope or paddle.static.global_scope()
    return [(p, static.read(scope, p.name)) for p in static.model_params(program)]


def check_rule(rule, mode):
    """Refuse a rule that cannot serve the mode: N:M goes with mode 'nm' only, random scores need a ratio."""
    if not isinstance(rule, rules.Rule):
        raise ValueError(f"rule must be a sparsity.rules rule such as rules.Block(2, 1), got {rule!r}")
    if rule.fixed_pattern != (mode == "nm"):
        raise ValueError(f"mode 'nm' goes with the N:M rule and the N:M rule with mode 'nm'; got mode {mode!r} with {rule!r}")
    if mode == "threshold" and not rule.magnitude:
        raise ValueError(f"{rule!r} scores are not magnitudes, so a threshold means nothing; use mode 'ratio'")


class GMPUnstructuredPruner(UnstructuredPruner):
    """Gradual magnitude pruning: ratio mode whose ratio follows a GMPSchedule over the iterations.

    `configs`: stable_iterations, pruning_iterations, tunning_iterations, pruning_steps, initial_ratio,
    and resume_iteration (iterations already done, to resume a run). Every parameter ramps to its own
    target (`ratio`, or its per-layer ratio) on the same schedule.
    """

    def __init__(self, program, ratio=0.55, scope=None, place=None, prune_params_type=None, skip_params_func=None,
                 local_sparsity=False, sparse_block=(1, 1), configs=None, **options):  # PaddleSlim's positional order
        schedule = GMPSchedule.from_configs(configs)
        resume = checks.count(configs.get("resume_iteration", 0), "resume_iteration (iterations already done)", minimum=-1)
        if schedule.initial_ratio > checks.ratio(ratio):
            raise ValueError(f"initial_ratio ({schedule.initial_ratio}) must not exceed the target ratio ({ratio})")
        super().__init__(program, "ratio", ratio, 0.0, scope, place, prune_params_type, skip_params_func, local_sparsity, sparse_block, schedule=schedule, **options)
        self.iteration = max(resume, 0)

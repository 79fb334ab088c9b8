"""UnstructuredPruner and GMPUnstructuredPruner, PaddleSlim's API over a static Program or a dygraph Layer.

A pruner composes four parts: which parameters and their targets (selection.py), a mask rule
(rules.py: how a weight is scored and in which units it is pruned), a selection (masks.py: global or
per-parameter ratio, threshold, or the rule's own pattern) and a schedule (schedule.py: the ratio at
each iteration). A binding (static.py or dygraph.py) runs the same Paddle ops on the Program's scope or
on the Layer's tensors. Masks are recomputed only when they can change: a new target from the
schedule, threshold mode (weights move every step), or every `mask_update_period` steps.
"""
import dataclasses
import functools
import inspect

import numpy as np
import paddle

from . import checks, dygraph, ops, report, rules, selection, static
from .masks import ByPattern, ByRatio, ByThreshold, Group, compute_masks
from .schedule import ConstantSchedule, GMPSchedule

MODES = ("ratio", "threshold", "nm")


def _signature(first, paddleslim, extras):
    """An inspect.Signature: `first` and PaddleSlim's arguments (name, default) positional or by keyword, in
    its order; this library's own arguments after them, by keyword only (so no position means two things)."""
    P = inspect.Parameter
    return inspect.Signature(
        [P(first, P.POSITIONAL_OR_KEYWORD)]
        + [P(name, P.POSITIONAL_OR_KEYWORD, default=default) for name, default in paddleslim]
        + [P(name, P.KEYWORD_ONLY, default=default) for name, default in extras]
    )


_SELECT = [("prune_params_type", None), ("skip_params_func", None), ("local_sparsity", False), ("sparse_block", [1, 1])]
_EXTRAS = [("mask_update_period", 0), ("rule", None), ("ratios", None), ("structural_names", None)]
_MODE_EXTRAS = [("mask_update_period", 0), ("nm_pattern", (2, 4)), ("rule", None), ("ratios", None), ("structural_names", None), ("schedule", None)]


class UnstructuredPruner:
    """Keeps a model's weights sparse: call `step()` after every optimizer update.

    The arguments are PaddleSlim 2.6's, in the order of the class it replaces (`SIGNATURES`, pinned against
    PaddleSlim's own by tests/test_paddleslim.py), then this library's, by keyword only:

        static:  UnstructuredPruner(program, mode, ratio=0.55, threshold=0.01, scope=None, place=None,
                     prune_params_type=None, skip_params_func=None, local_sparsity=False, sparse_block=[1, 1],
                     *, startup_program=None, mask_update_period=0, nm_pattern=(2, 4), rule=None, ratios=None,
                     structural_names=None, schedule=None)
        dygraph: UnstructuredPruner(model, mode, threshold=0.01, ratio=0.55, prune_params_type=None,
                     skip_params_func=None, local_sparsity=False, sparse_block=[1, 1], *, mask_update_period=0,
                     nm_pattern=(2, 4), rule=None, ratios=None, structural_names=None, schedule=None)

    `program` is a paddle.static.Program; `model` a paddle.nn.Layer in dynamic mode (threshold before ratio,
    no scope or place, as in paddleslim.UnstructuredPruner). Modes: 'ratio' prunes the `ratio` of the pruned
    set's weights with the lowest scores (one global threshold, or one per parameter with
    `local_sparsity=True`); 'threshold' prunes every unit scoring below `threshold`; 'nm' keeps the n
    largest of every m weights along the input axis (`nm_pattern`, 2:4 by default). The rule defaults to
    what PaddleSlim's arguments mean (element, or m x n slabs for `sparse_block`); pass `rule=` (see
    sparsity.rules) for channels, random or per-position blocks. `ratios=` sets per-layer targets by name
    or glob (see selection.match_ratios).
    """

    SIGNATURES = {
        "static": _signature(
            "program",
            [("mode", inspect.Parameter.empty), ("ratio", 0.55), ("threshold", 1e-2), ("scope", None), ("place", None)] + _SELECT,
            [("startup_program", None)] + _MODE_EXTRAS,
        ),
        "dygraph": _signature(
            "model",
            [("mode", inspect.Parameter.empty), ("threshold", 0.01), ("ratio", 0.55)] + _SELECT,
            _MODE_EXTRAS,
        ),
    }

    def __init__(self, *args, **kwargs):
        a = _bind(type(self).__name__, UnstructuredPruner.SIGNATURES, args, kwargs)
        self._build(
            a.get("program", a.get("model")), a["mode"], a["ratio"], a["threshold"], a.get("scope"), a.get("place"),
            a["prune_params_type"], a["skip_params_func"], a["local_sparsity"], a["sparse_block"], a.get("startup_program"),
            a["mask_update_period"], a["nm_pattern"], a["rule"], a["ratios"], a["structural_names"], a["schedule"],
        )

    def _build(self, program, mode, ratio, threshold, scope, place, prune_params_type, skip_params_func, local_sparsity,
               sparse_block, startup_program, mask_update_period, nm_pattern, rule, ratios, structural_names, schedule):
        self.mode = checks.choice(mode, "mode", MODES)
        self.target = checks.ratio(ratio)
        self._threshold = checks.threshold(threshold)
        self.local_sparsity = checks.local_sparsity_mode(local_sparsity, mode)
        self.mask_update_period = checks.count(mask_update_period, "mask_update_period (0: only when the ratio changes)")
        self.rule = rule if rule is not None else rules.from_paddleslim(mode, sparse_block, nm_pattern)
        self.sparse_block = list(sparse_block) if isinstance(sparse_block, (list, tuple)) else sparse_block
        check_rule(self.rule, mode)
        self.schedule = schedule if schedule is not None else ConstantSchedule()

        if dygraph.is_model(program):
            self.binding = dygraph.DygraphBinding(program)
            self.model = program
        else:
            self.binding = static.StaticBinding(program, scope, place, startup_program)
            self.program, self.scope, self.place = program, self.binding.scope, self.binding.place
        names = {**self.binding.structural_names, **(structural_names or {})}
        if skip_params_func is None:  # PaddleSlim's default rules, as overridable methods
            skip_params_func = self._get_skip_params_conv1x1 if prune_params_type == "conv1x1_only" else self._get_skip_params
        checks.choice(prune_params_type, "prune_params_type", selection.PRUNE_PARAMS_TYPES)
        skipped = selection.skip_names(skip_params_func, program)
        candidates = selection.keep(self.binding.model_params, skipped, prune_params_type, self.binding.layer_params)
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
        if self.binding.layer_params:  # dygraph: also the layers the skip rule named, for _should_prune_layer
            self.skip_params |= {name for name in skipped if name in self.binding.layer_params}
        self.masks = self.binding.create_masks(self.params)
        self.no_grad_set = self.binding.no_grad_set
        self.selection = self._make_selection(configured)
        self.iteration = 0
        self.mask_ratio = None
        self.mask_feed = None
        self._group_thresholds = None
        self._assigned = None  # pruner.ratio set by user code while a schedule runs: [ratio, the iteration it ends at]
        self.frozen = False

    def _make_selection(self, configured):
        """The selection for the mode; in ratio mode the groups: the default-target parameters together
        (one global threshold) unless local_sparsity, and each parameter with a per-layer ratio alone.
        The default-target groups follow `pruner.ratio`; the others their own target on the schedule."""
        if self.mode == "nm":
            return ByPattern(self.rule)
        if self.mode == "threshold":
            return ByThreshold(self._threshold)
        shared = [] if self.local_sparsity else [i for i, p in enumerate(self.params) if p.name not in configured]
        members = ([shared] if shared else []) + [[i] for i in range(len(self.params)) if i not in shared]
        self._global_group = bool(shared)
        sizes = [int(np.prod(p.shape)) for p in self.params]
        groups = [Group(tuple(m), self._targets[self.params[m[0]].name], sum(sizes[i] for i in m)) for m in members]
        default = {k for k, m in enumerate(members) if self.params[m[0]].name not in configured}
        return _PrunerRatios(groups, self.schedule, default, self._default_ratio)

    # ---- PaddleSlim's surface ----------------------------------------------------------------------
    @property
    def ratio(self):
        """The current ratio: that of the latest step (GMP: rises from 0 / initial_ratio to the target; 'nm':
        1 - n/m), or the one user code assigned, which the next step() uses.

        Assignable in mode 'ratio', as PaddleSlim's attribute (ValueError outside [0, 1)); it applies to the
        parameters without a per-layer ratio. Without a schedule, or once a GMP schedule has taken its last
        increment, it becomes their target for good (`targets()` shows it); while a GMP schedule runs, it holds
        until the schedule's next increment after the next step() replaces it (the next entry of
        `ratios_stack`, as PaddleSlim's GMP pops over an assigned ratio)."""
        if self.mode == "nm":
            return 1.0 - self.rule.n / self.rule.m
        if self._assigned is not None:
            return self._assigned[0]
        return self.schedule.ratio_at(self.iteration - 1, self.target)

    @ratio.setter
    def ratio(self, value):
        if self.mode != "ratio":
            what = "the N:M pattern fixes it" if self.mode == "nm" else "set pruner.threshold instead"
            raise ValueError(f"pruner.ratio applies in mode 'ratio'; this pruner's mode is {self.mode!r} ({what}), got ratio {value!r}")
        value = checks.ratio(value, "pruner.ratio")
        until = next((i for i, _ in self._increments() if i > self.iteration), None)
        if until is None:
            self._retarget(value)
        else:
            self._assigned = [value, until]

    @property
    def threshold(self):
        """Mode 'threshold': the threshold every step() prunes below (assignable; the next step() uses it).
        Mode 'ratio': the global threshold of the latest recompute, as PaddleSlim reports it."""
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        self._threshold = checks.threshold(value, "pruner.threshold")
        if self.mode == "threshold":
            self.selection.threshold = self._threshold

    @property
    def thresholds(self):
        """{parameter name: its threshold at the latest recompute} for every parameter with a threshold of its
        own (local_sparsity, or a per-layer ratio), as PaddleSlim's; the shared one is `threshold`."""
        if self.mode != "ratio" or not self._group_thresholds:
            return {}
        own = list(zip(self.selection.groups, self._group_thresholds))[1 if self._global_group else 0 :]
        return {self.params[g.members[0]].name: t for g, t in own}

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
        if self._assigned is not None and iteration >= self._assigned[1]:
            self._assigned = None  # the schedule's next increment replaces an assigned ratio
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
            "thresholds": self._group_thresholds,
            "frozen": self.frozen,
            "targets": self.targets(),
            "target": self.target,
            "assigned_ratio": self._assigned,
        }

    def set_state_dict(self, state):
        self.iteration = int(state["iteration"])
        self.mask_ratio = state.get("mask_ratio")
        self.mask_feed = state.get("mask_feed")
        self._group_thresholds = state.get("thresholds")
        self.frozen = bool(state.get("frozen", False))
        if self.mode == "ratio" and state.get("target", self.target) != self.target:  # pruner.ratio was assigned for good
            self._retarget(checks.ratio(state["target"], "target in the pruner's state"))
        assigned = state.get("assigned_ratio")
        self._assigned = None if assigned is None else [checks.ratio(assigned[0], "assigned_ratio in the pruner's state"), int(assigned[1])]

    # ---- PaddleSlim's helpers, for code that subclasses or inspects its pruners ---------------------
    def _get_skip_params(self, program):
        """PaddleSlim's default skip rule, the names it returns: normalization inputs (static) or normalization
        layers' full_name() (dygraph), and 1-D parameters such as biases. Override it to change the default."""
        if dygraph.is_model(program):
            return dygraph.norm_layer_names(program) | {p.name for p in program.parameters() if len(p.shape) <= 1}
        return selection.default_skip(static.model_params(program), static.normalization_inputs(program))

    def _get_skip_params_conv1x1(self, program):
        """The skip rule of prune_params_type='conv1x1_only': the default one and every weight but 1x1 convolutions'."""
        params = program.parameters() if dygraph.is_model(program) else static.model_params(program)
        return self._get_skip_params(program) | {p.name for p in params if not selection.is_conv1x1(p.shape)}

    def _should_prune_param(self, param):
        """True unless the parameter (by name) is skipped: every model parameter but the pruned ones is."""
        return param not in self.skip_params

    def _should_prune_layer(self, layer):
        """Dygraph: False for a layer the skip rule named by its full_name() (normalization layers by default)."""
        return layer.full_name() not in self.skip_params

    def update_threshold(self):
        """PaddleSlim's threshold update for the current ratio; here thresholds and masks are computed
        together, so this is update_masks(). (step() does not call it: overriding it changes nothing there.)"""
        self.update_masks()

    def _update_masks(self):
        """PaddleSlim's mask update from the current weights; update_masks()."""
        self.update_masks()

    def mask_parameters(self, param, mask):
        """Dygraph: multiply one parameter by its mask now (a mask of another dtype, bool say, is cast)."""
        if not hasattr(self, "model"):
            raise TypeError("mask_parameters(param, mask) is the dygraph helper; a static program masks its weights in-graph (update_params() does it now)")
        with paddle.no_grad():
            paddle.assign(ops.masked(param, mask), output=param)

    def _forward_pre_hook(self, layer, input):
        """Dygraph: PaddleSlim's forward pre-hook, masking a layer's own parameters before its forward pass
        (not registered here: step() masks after each update; `layer.register_forward_pre_hook` takes it)."""
        if self._should_prune_layer(layer):
            for param in layer.parameters(include_sublayers=False):
                mask = self.masks.get(param.name)
                if mask is not None:
                    self.mask_parameters(param, mask)
        return input

    # ---- figures -----------------------------------------------------------------------------------
    def describe(self):
        """One line: what is pruned, by which rule, to what."""
        return f"{len(self.params)} parameters, {self.rule!r}, target ratio {self.target}"

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
        self._group_thresholds = thresholds
        self.mask_feed = _as_list(feed)
        self.mask_ratio = self.ratio if self.mode == "nm" else self._default_ratio(iteration)
        if self.mode == "ratio" and self._global_group:
            self._threshold = thresholds[0]  # the global threshold, as PaddleSlim reports it

    def _default_ratio(self, iteration):
        """The ratio at `iteration` of the parameters without a per-layer ratio: an assigned one, or the schedule's."""
        return self._assigned[0] if self._assigned is not None else self.schedule.ratio_at(iteration, self.target)

    def _increments(self):
        """The schedule's [(iteration, ratio)] increments (GMP's ratios_stack entries); none without a schedule."""
        increments = getattr(self.schedule, "increments", None)
        return increments(self.target) if increments else []

    def _retarget(self, value):
        """`value` becomes the target of the parameters without a per-layer ratio."""
        self.target, self._assigned = value, None
        if self.mode != "ratio":
            return
        for k in self.selection.default:
            group = self.selection.groups[k]
            self.selection.groups[k] = dataclasses.replace(group, target=value)
            for i in group.members:
                self._targets[self.params[i].name] = value


def _bind(name, signatures, args, kwargs):
    """The arguments of a call, bound by the signature of its binding (dygraph for a paddle.nn.Layer,
    static otherwise), defaults filled in; a TypeError naming the signature when they do not fit."""
    model = args[0] if args else kwargs.get("model", kwargs.get("program"))
    kind = "dygraph" if dygraph.is_model(model) else "static"
    try:
        bound = signatures[kind].bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}{signatures[kind]} ({kind}): {exc}") from None
    bound.apply_defaults()
    return bound.arguments


class _PrunerRatios(ByRatio):
    """ByRatio whose default-target groups (`default`: their indices) follow the pruner's current ratio,
    `default_ratio(iteration)`, which user code may assign; the others ramp to their own target."""

    def __init__(self, groups, schedule, default, default_ratio):
        super().__init__(groups, schedule)
        self.default = frozenset(default)
        self._default_ratio = default_ratio

    def ratios(self, iteration):
        return [self._default_ratio(iteration) if k in self.default else self.schedule.ratio_at(iteration, g.target) for k, g in enumerate(self.groups)]


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

        static:  GMPUnstructuredPruner(program, ratio=0.55, scope=None, place=None, prune_params_type=None,
                     skip_params_func=None, local_sparsity=False, sparse_block=[1, 1], configs=None,
                     *, startup_program=None, mask_update_period=0, rule=None, ratios=None, structural_names=None)
        dygraph: GMPUnstructuredPruner(model, ratio=0.55, prune_params_type=None, skip_params_func=None,
                     local_sparsity=False, sparse_block=[1, 1], configs=None, *, mask_update_period=0, rule=None,
                     ratios=None, structural_names=None)

    `configs`: stable_iterations, pruning_iterations, tunning_iterations, pruning_steps, initial_ratio,
    and resume_iteration (iterations already done, to resume a run). Every parameter ramps to its own
    target (`ratio`, or its per-layer ratio) on the same schedule. PaddleSlim's attributes are read from
    the schedule: stable_iterations, pruning_iterations, tunning_iterations, pruning_steps, initial_ratio,
    target_ratio, cur_iteration, ratio_increment_period and ratios_stack.
    """

    SIGNATURES = {
        "static": _signature(
            "program", [("ratio", 0.55), ("scope", None), ("place", None)] + _SELECT + [("configs", None)], [("startup_program", None)] + _EXTRAS
        ),
        "dygraph": _signature("model", [("ratio", 0.55)] + _SELECT + [("configs", None)], _EXTRAS),
    }

    def __init__(self, *args, **kwargs):
        a = _bind(type(self).__name__, GMPUnstructuredPruner.SIGNATURES, args, kwargs)
        configs, ratio = a["configs"], a["ratio"]
        schedule = GMPSchedule.from_configs(configs)
        resume = checks.count(configs.get("resume_iteration", 0), "resume_iteration (iterations already done)", minimum=-1)
        if schedule.initial_ratio > checks.ratio(ratio):
            raise ValueError(f"initial_ratio ({schedule.initial_ratio}) must not exceed the target ratio ({ratio})")
        self._build(
            a.get("program", a.get("model")), "ratio", ratio, 0.0, a.get("scope"), a.get("place"), a["prune_params_type"],
            a["skip_params_func"], a["local_sparsity"], a["sparse_block"], a.get("startup_program"), a["mask_update_period"],
            (2, 4), a["rule"], a["ratios"], a["structural_names"], schedule,
        )
        self.iteration = max(resume, 0)

    # ---- PaddleSlim's GMP attributes (read-only: the schedule is a pure function of the iteration) ----
    stable_iterations = property(lambda self: self.schedule.stable_iterations, doc="Iterations at ratio 0 before the ramp.")
    pruning_iterations = property(lambda self: self.schedule.pruning_iterations, doc="Iterations of the ramp.")
    tunning_iterations = property(lambda self: self.schedule.tunning_iterations, doc="Iterations at the target after the ramp.")
    pruning_steps = property(lambda self: self.schedule.pruning_steps, doc="How many times the ramp raises the ratio.")
    initial_ratio = property(lambda self: self.schedule.initial_ratio, doc="The ratio the ramp starts at.")
    target_ratio = property(lambda self: self.target, doc="The ratio the schedule ends at (`ratio=`).")
    cur_iteration = property(lambda self: self.iteration, doc="step() calls made so far, resume_iteration included.")

    @property
    def ratio_increment_period(self):
        """Iterations between two increments of the ratio, as PaddleSlim rounds it (int(pruning_iterations /
        pruning_steps)); this schedule's periods are pruning_iterations / pruning_steps exactly."""
        return self.schedule.pruning_iterations // self.schedule.pruning_steps

    @property
    def ratios_stack(self):
        """The ratios the schedule has still to take, the next one last, as PaddleSlim's stack (a 0.0 for
        each whole period of the stable phase, one per ramp period, the target for each whole period of the
        tuning phase): step() consumes an entry at the iteration it starts, so the stack empties as the
        schedule ends. A new list each time: the schedule itself is a pure function of the iteration."""
        return [r for i, r in self._increments() if i >= self.iteration][::-1]

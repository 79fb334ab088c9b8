"""ChannelPruner: structured pruning of whole channel groups, so the pruned model can be made smaller for real.

The groups come from the model's own graph (groups.py); one keep-vector per group masks every member (the
producer filters, biases, BatchNorm scales and shifts, depthwise filters, the consumers' input slices), so the
masked model computes exactly what the slimmed model (channels removed) will. Which channels go is decided on
the host (channels.py: scores, a channel or FLOPs budget, widths the runtimes like) only when the schedule's
ratio changes; masks then live in the graph (static) or beside the parameters (dygraph), as for
UnstructuredPruner, through the same bindings, and are re-applied after every optimizer update.
"""

import numpy as np

from . import channels, checks, dygraph, flops, graph, groups, report, static
from .pruner import _apply
from .schedule import ConstantSchedule, GMPSchedule
from .selection import SKIP, check_ratios, match_names


class ChannelPruner:
    """Prunes whole channels: call `step()` after every optimizer update, as with UnstructuredPruner.

    `model` is a paddle.static.Program (its forward ops are read) or a paddle.nn.Layer in dynamic mode (traced
    once; pass `input_shape`, e.g. [3, 224, 224]). Budget: `ratio`, the fraction of the prunable channels
    removed, or `target_flops`, the fraction of the dense model's FLOPs to keep. `score`: 'l1', 'l2',
    'bn_scale' or 'fpgm' (see channels.py). Widths kept: at least `min_channels`, and multiples of
    `channel_multiple` in groups of 16 channels or more. `ratios` ({group name or glob: ratio or 'skip'},
    matched against any producer's variable or structural name) gives groups their own ratio of channels.
    `local_sparsity=True` removes the same ratio of every group (uniform filter pruning, as PaddleSlim's
    L1NormFilterPruner with one ratio) instead of choosing globally. `schedule` (ConstantSchedule or
    GMPSchedule) ramps the budget.
    """

    def __init__(self, model, ratio=None, score="l2", target_flops=None, min_channels=1, channel_multiple=8, local_sparsity=False,
                 ratios=None, structural_names=None, schedule=None, scope=None, place=None, startup_program=None, input_shape=None):
        if ratio is not None and target_flops is not None:
            raise ValueError("pass ratio (a fraction of channels) or target_flops (a fraction of FLOPs to keep), not both")
        if target_flops is not None and not (isinstance(target_flops, (int, float)) and 0.0 < target_flops <= 1.0):
            raise ValueError(f"target_flops must be a number in (0, 1], the fraction of the dense model's FLOPs to keep; got {target_flops!r}")
        self.target = 1.0 - float(target_flops) if target_flops is not None else checks.ratio(0.5 if ratio is None else ratio)
        self.target_flops = target_flops
        self.score = checks.choice(score, "score", channels.SCORES)
        self.min_channels = checks.count(min_channels, "min_channels", minimum=1)
        self.channel_multiple = checks.count(channel_multiple, "channel_multiple", minimum=1)
        self.local_sparsity = checks.flag(local_sparsity, "local_sparsity")
        self.schedule = schedule if schedule is not None else ConstantSchedule()
        if dygraph.is_model(model):
            if input_shape is None:
                raise ValueError("a dygraph model is traced once to find its channel groups: pass input_shape, e.g. [3, 224, 224]")
            self.binding = dygraph.DygraphBinding(model)
            program = graph.trace(model, input_shape)
        else:
            self.binding = static.StaticBinding(model, scope, place, startup_program)
            program = model
        ops = graph.read(program)
        self.channels = groups.find_groups(ops)
        self.terms = flops.terms(ops, self.channels.spaces)
        self.dense_flops = flops.total(self.terms)
        names = {**self.binding.structural_names, **(structural_names or {})}
        self.group_names = {g.index: names.get(g.name, g.name) for g in self.channels.groups}
        configured = _match_groups(self.channels.prunable, ratios, names)
        self.groups = [g for g in self.channels.prunable if configured.get(g.index) != SKIP]
        if not self.groups:
            raise ValueError("no channel group to prune: every group feeds the output, comes from the input or is skipped")
        self.group_targets = {i: r for i, r in configured.items() if r != SKIP}
        self.widths = {g.index: channels.allowed_widths(g.channels, self.min_channels, self.channel_multiple) for g in self.groups}
        self._check_budget_reachable()
        by_name = {p.name: p for p in self.binding.model_params}
        members = list(dict.fromkeys(m.param for g in self.groups for m in g.masked_members()))
        self.params = [by_name[name] for name in members]
        self.masks = self.binding.create_masks(self.params)
        self.no_grad_set = self.binding.no_grad_set
        self.skip_params = {p.name for p in self.binding.model_params if p.name not in set(members)}
        self.iteration = 0
        self.mask_ratio = None
        self.kept = {g.index: g.channels for g in self.groups}

    # ---- the schedule ------------------------------------------------------------------------------
    @property
    def ratio(self):
        """The budget of the latest step: the fraction of channels (or of FLOPs, with target_flops) removed."""
        return self.schedule.ratio_at(self.iteration - 1, self.target)

    def step(self):
        """One iteration done: reselect the channels if the schedule moved, then keep the weights masked."""
        iteration = self.iteration
        self.iteration += 1
        if self.schedule.ratio_at(iteration, self.target) != self.mask_ratio:
            self._recompute(iteration)
        self.binding.after_step(self.update_params)

    def update_params(self):
        """Multiply every member by its mask now (the training program or step() also does it)."""
        self.binding.run("apply", _apply)

    def update_masks(self):
        """Reselect the channels now, from the current weights and the current ratio, and apply the masks."""
        self._recompute(max(self.iteration - 1, 0))

    def state_dict(self):
        return {"iteration": self.iteration, "mask_ratio": self.mask_ratio, "kept": {str(k): v for k, v in self.kept.items()}}

    def set_state_dict(self, state):
        self.iteration = int(state["iteration"])
        self.mask_ratio = state.get("mask_ratio")
        self.kept.update({int(k): int(v) for k, v in state.get("kept", {}).items()})

    # ---- figures -----------------------------------------------------------------------------------
    def flops(self):
        """FLOPs of the model with the channels now kept, and the dense model's (paddle.flops' conventions)."""
        return flops.total(self.terms, self.kept), self.dense_flops

    def layer_widths(self):
        """{group name: (channels kept, channels)} of every pruned group."""
        return {self.group_names[g.index]: (self.kept[g.index], g.channels) for g in self.groups}

    def targets(self):
        return {p.name: None for p in self.params}

    def layer_targets(self):
        return self.targets()

    def sparsity(self):
        rows = [report.count(p.name, self.binding.read(p.name)) for p in self.binding.model_params]
        return report.summarize(rows, self.targets())

    def describe(self):
        budget = f"target FLOPs {self.target_flops}" if self.target_flops is not None else f"ratio {self.target} of the channels"
        return (f"{len(self.groups)} channel groups ({len(self.params)} parameters), score {self.score}, {budget}, "
                f"widths >= {self.min_channels}, multiples of {self.channel_multiple} from {channels.MULTIPLE_FROM} channels")

    # ---- internals ---------------------------------------------------------------------------------
    def _budget(self, fraction):
        return channels.Budget(fraction, self.terms if self.target_flops is not None else None)

    def _check_budget_reachable(self):
        """Refuse a final budget that the allowed widths cannot reach (every group at its narrowest)."""
        narrowest = {i: w[0] for i, w in self.widths.items()}
        if self.target_flops is not None:
            reachable = flops.total(self.terms, narrowest) / self.dense_flops
            if reachable > self.target_flops + 1e-9:
                raise ValueError(f"target_flops {self.target_flops} cannot be reached: with every group at its narrowest allowed width "
                                 f"the model keeps {reachable:.3f} of its FLOPs; lower min_channels / channel_multiple or raise target_flops")

    def _configured_widths(self, iteration):
        return {g.index: channels.nearest_width(self.widths[g.index], g.channels, self.schedule.ratio_at(iteration, self.group_targets[g.index]))
                for g in self.groups if g.index in self.group_targets}

    def _recompute(self, iteration):
        ratio = self.schedule.ratio_at(iteration, self.target)
        arrays = {p.name: self.binding.read(p.name) for p in self.params}
        if any(not np.isfinite(a).all() for a in arrays.values()):
            raise FloatingPointError("weights are not finite, so no channel can be scored: training diverged")
        scored = {g.index: channels.scores(g, arrays, self.score) for g in self.groups}
        budget, fixed = self._budget(ratio), self._configured_widths(iteration)
        if self.local_sparsity:
            self.kept = channels.uniform(self.groups, budget, self.widths, fixed)
        else:
            self.kept = channels.select(self.groups, scored, budget, self.widths, fixed)
        keeps = {i: channels.keep_vector(scored[i], width) for i, width in self.kept.items()}
        for name, mask in groups.member_masks(self.groups, keeps, {n: a.shape for n, a in arrays.items()}).items():
            self.binding.write_mask(name, mask)
        self.update_params()
        self.mask_ratio = ratio


class GMPChannelPruner(ChannelPruner):
    """ChannelPruner whose budget follows a GMP ramp (configs as GMPUnstructuredPruner's: stable_iterations,
    pruning_iterations, tunning_iterations, pruning_steps, initial_ratio, resume_iteration)."""

    def __init__(self, model, ratio=None, configs=None, **options):
        schedule = GMPSchedule.from_configs(configs)
        super().__init__(model, ratio, schedule=schedule, **options)
        self.iteration = checks.count(configs.get("resume_iteration", 0), "resume_iteration (iterations already done)", minimum=0)


def _match_groups(prunable, ratios, names):
    """{group index: ratio or 'skip'} for the groups a per-group config names (by any producer's variable or
    structural name, exact before glob, the first glob listed winning); a key matching none is an error."""
    ratios = check_ratios(ratios or {})
    candidates = {g.index: [n for m in g.producers for n in (m.param, names.get(m.param)) if n] for g in prunable}
    matched, unused = match_names(ratios, candidates)
    if unused:
        shown = ", ".join(names.get(g.name, g.name) for g in prunable[:6])
        raise ValueError(f"channel config entry {unused[0]!r} names no prunable channel group; groups are named by their "
                         f"producers' weights, e.g. {shown}" + (f" and {len(prunable) - 6} more" if len(prunable) > 6 else ""))
    return matched

"""UnstructuredPruner and GMPUnstructuredPruner for paddle.static programs (PaddleSlim-compatible API).

The pruner adds a mask parameter beside every pruned weight and appends `w = w * mask` after the
optimizer ops of the training program, so weights are exactly zero after every `exe.run`. Masks
are recomputed on the device by a small program of their own, and only when they can change.
"""
import numbers

import numpy as np
import paddle

from . import masks, report, selection, static
from .schedule import GMPSchedule, check_ratio

MODES = ("ratio", "threshold", "nm")


class UnstructuredPruner:
    """Keeps a static program's weights sparse by magnitude, per weight or per m x n block.

    Call `step()` after every optimizer update. Modes: 'ratio' prunes the smallest `ratio` of the
    pruned set (one global threshold, or one per parameter with `local_sparsity=True`);
    'threshold' prunes every unit whose score is below `threshold`; 'nm' keeps the n largest of
    every m weights along the input axis (`nm_pattern`, 2:4 by default).
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
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be 'ratio', 'threshold' or 'nm', got {mode!r}")
        self.mode = mode
        self.ratio = check_ratio(ratio)
        self.nm_pattern = masks.check_nm(nm_pattern)
        if mode == "nm":
            if tuple(sparse_block) != (1, 1):
                raise ValueError(f"mode 'nm' prunes n of every m single weights; sparse_block must stay [1, 1], got {list(sparse_block)}")
            self.ratio = 1.0 - self.nm_pattern[0] / self.nm_pattern[1]
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or threshold < 0:
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        self.threshold = float(threshold)
        if not isinstance(local_sparsity, bool):
            raise ValueError(f"local_sparsity must be True or False, got {local_sparsity!r}")
        self.local_sparsity = local_sparsity
        self.block = masks.check_block(sparse_block)
        if isinstance(mask_update_period, bool) or not isinstance(mask_update_period, int) or mask_update_period < 0:
            raise ValueError(f"mask_update_period must be an integer >= 0 (0: only when the ratio changes), got {mask_update_period!r}")
        self.mask_update_period = mask_update_period
        self.program = program
        self.startup_program = startup_program or paddle.static.default_startup_program()
        self.scope = scope or paddle.static.global_scope()
        self.place = place or static.default_place()

        self.params = selection.prunable_params(program, prune_params_type, skip_params_func)
        if not self.params:
            raise ValueError("no parameter to prune: the skip rule and prune_params_type left nothing; check skip_params_func")
        if self.block != (1, 1):
            flat = [p.name for p in self.params if len(p.shape) < 2]
            if flat:
                raise ValueError(f"sparse_block {list(self.block)} needs weights with >= 2 dimensions; skip {flat}")
        self.masks = [static.create_mask(p, program, self.startup_program) for p in self.params]
        # what optimizer.minimize(no_grad_set=...) accepts: Values under PIR, names under the legacy IR
        self.no_grad_set = {m.handle if static.pir_enabled() else m.name for m in self.masks}
        self._units = [int(np.prod(self._score_shape(p.shape))) for p in self.params]
        self._masking_in_graph = False
        self._attach_masking()
        self._init_masks_if_weights_ready()
        self._executor = paddle.static.Executor(self.place)
        self._recompute_program = None
        self._apply_program = None
        self.iteration = 0
        self.mask_ratio = None
        self.thresholds = None

    # ---- public API -------------------------------------------------------------------------
    def target_ratio(self):
        """The ratio the masks should have now."""
        return self.ratio

    def step(self):
        """Advance one iteration; recompute the masks only when they can change, then keep weights masked."""
        self.iteration += 1
        ratio = self.target_ratio()
        periodic = self.mask_update_period and self.iteration % self.mask_update_period == 0
        if self.mode == "threshold" or ratio != self.mask_ratio or periodic:
            self.update_masks()
        if not self._masking_in_graph and self._attach_masking():
            self.update_params()

    def update_masks(self):
        """Recompute every mask from the current weights (on the device) and apply it to the weights."""
        self._ensure_masks_initialized()
        if self._recompute_program is None:
            self._recompute_program, self._feed_name, self._threshold_vars = self._build_recompute_program()
        ratio = self.target_ratio()
        if self.mode == "nm":
            feed = {}
        elif self.mode == "threshold":
            feed = {self._feed_name: np.array([self.threshold], "float32")}
        elif self.local_sparsity:
            feed = {self._feed_name: np.array([masks.prune_count(ratio, u) for u in self._units], "int64")}
        else:
            feed = {self._feed_name: np.array([masks.prune_count(ratio, sum(self._units))], "int64")}
        try:
            fetched = self._executor.run(self._recompute_program, feed=feed, fetch_list=self._threshold_vars, scope=self.scope)
        except Exception as exc:
            diverged = [p.name for p in self.params if not np.isfinite(static.read(self.scope, p.name)).all()]
            if diverged:
                raise FloatingPointError(f"weights of {diverged[0]} are not finite, so no mask can be computed: training diverged") from exc
            raise
        self.thresholds = [float(np.asarray(t).reshape(-1)[0]) for t in fetched]
        self.mask_ratio = ratio

    def update_params(self):
        """Multiply every pruned weight by its mask now (the training program also does it after each update)."""
        self._ensure_masks_initialized()
        if self._apply_program is None:
            self._apply_program = self._build_apply_program()
        self._executor.run(self._apply_program, scope=self.scope)

    def state_dict(self):
        """What a checkpoint needs besides the program's persistables to resume the pruner exactly."""
        return {"iteration": self.iteration, "mask_ratio": self.mask_ratio, "thresholds": self.thresholds}

    def set_state_dict(self, state):
        self.iteration = int(state["iteration"])
        self.mask_ratio = state.get("mask_ratio")
        self.thresholds = state.get("thresholds")

    def sparsity(self):
        """Sparsity figures of the current weights: {'model', 'pruned', 'layers'} (see report.summary)."""
        return report.summary(self.scope, selection.model_params(self.program), [p.name for p in self.params])

    def sparse_by_layer(self, program=None):
        """{parameter name: fraction of zeros} for every pruned parameter."""
        return {r.name: r.sparsity for r in report.layer_sparsity(self.scope, self.params)}

    def summarize_weights(self, program=None, ratio=0.1):
        """The `ratio`-quantile of |w| over the pruned set: a starting point for threshold mode."""
        values = np.concatenate([np.abs(static.read(self.scope, p.name)).ravel() for p in self.params])
        return float(np.quantile(values, ratio))

    @staticmethod
    def total_sparse(program, scope=None):
        """Fraction of zeros over all model parameters of `program` (masks excluded)."""
        scope = scope or paddle.static.global_scope()
        return report.overall(report.layer_sparsity(scope, selection.model_params(program)))

    @staticmethod
    def total_sparse_conv1x1(program, scope=None):
        """Fraction of zeros over the 1x1 convolution weights of `program`."""
        scope = scope or paddle.static.global_scope()
        convs = [p for p in selection.model_params(program) if selection.is_conv1x1(p.shape)]
        return report.overall(report.layer_sparsity(scope, convs))

    # ---- internals --------------------------------------------------------------------------
    def _score_shape(self, shape):
        return masks.block_grid(shape, self.block) if self.block != (1, 1) else list(shape)

    def _attach_masking(self):
        """Append the in-graph masking once the program has its optimizer ops; True once attached."""
        if not self._masking_in_graph and static.updates_parameters(self.program, [p.name for p in self.params]):
            static.append_masking(zip(self.params, self.masks), self.program, self.startup_program)
            self._masking_in_graph = True
        return self._masking_in_graph

    def _init_masks_if_weights_ready(self):
        """When the startup program already ran, the new masks are set to ones here instead."""
        if all(static.is_initialized(self.scope, p.name) for p in self.params):
            self._ensure_masks_initialized()

    def _ensure_masks_initialized(self):
        for m in self.masks:
            if not static.is_initialized(self.scope, m.name):
                static.write(self.scope, m.name, np.ones(m.shape, "float32"), self.place)

    def _build_recompute_program(self):
        program, scratch = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(program, scratch):
            weights = [static.reference(p) for p in self.params]
            mask_refs = [static.reference(m) for m in self.masks]
            scores = [masks.magnitude_scores(w, self.block) for w in weights]
            if self.mode == "nm":
                feed_name, thresholds = None, []
                keeps = [masks.nm_keep_mask(w, self.nm_pattern) for w in weights]
            elif self.mode == "threshold":
                feed_name = "sparsity_threshold"
                feed = paddle.static.data(feed_name, [1], "float32")
                keeps = [masks.keep_mask(s, feed, inclusive=True) for s in scores]
                thresholds = [feed]
            elif self.local_sparsity:
                feed_name = "sparsity_prune_counts"
                feed = paddle.static.data(feed_name, [len(scores)], "int64")
                thresholds = [
                    masks.ratio_threshold(paddle.reshape(s, [-1]), feed[i : i + 1]) for i, s in enumerate(scores)
                ]
                keeps = [masks.keep_mask(s, t) for s, t in zip(scores, thresholds)]
            else:
                feed_name = "sparsity_prune_count"
                feed = paddle.static.data(feed_name, [1], "int64")
                flat = paddle.concat([paddle.reshape(s, [-1]) for s in scores])
                thresholds = [masks.ratio_threshold(flat, feed)]
                keeps = [masks.keep_mask(s, thresholds[0]) for s in scores]
            for p, w, m, keep in zip(self.params, weights, mask_refs, keeps):
                mask = masks.expand_block_mask(keep, p.shape, self.block)
                paddle.assign(mask, output=m)
                paddle.assign(static.masked(w, mask), output=w)
        return program, feed_name, thresholds

    def _build_apply_program(self):
        program, scratch = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(program, scratch):
            for p, m in zip(self.params, self.masks):
                w = static.reference(p)
                paddle.assign(static.masked(w, static.reference(m)), output=w)
        return program


class GMPUnstructuredPruner(UnstructuredPruner):
    """Gradual magnitude pruning: the ratio follows GMPSchedule over the iterations (ratio mode only).

    `configs`: stable_iterations, pruning_iterations, tunning_iterations, pruning_steps,
    initial_ratio, and resume_iteration (iterations already done, to resume a run).
    """

    def __init__(
        self,
        program,
        ratio=0.55,
        scope=None,
        place=None,
        prune_params_type=None,
        skip_params_func=None,
        local_sparsity=False,
        sparse_block=(1, 1),
        configs=None,
        startup_program=None,
        mask_update_period=0,
    ):
        configs = dict(configs or {})
        resume = configs.pop("resume_iteration", 0)
        if isinstance(resume, bool) or not isinstance(resume, int) or resume < -1:
            raise ValueError(f"resume_iteration must be an integer >= 0 (iterations already done), got {resume!r}")
        self.schedule = GMPSchedule.from_configs(check_ratio(ratio), configs)
        super().__init__(
            program,
            "ratio",
            ratio=ratio,
            scope=scope,
            place=place,
            prune_params_type=prune_params_type,
            skip_params_func=skip_params_func,
            local_sparsity=local_sparsity,
            sparse_block=sparse_block,
            startup_program=startup_program,
            mask_update_period=mask_update_period,
        )
        self.iteration = max(resume, 0)

    def target_ratio(self):
        return self.schedule.ratio_at(self.iteration)

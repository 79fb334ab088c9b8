"""Builds the static training and test programs: model, loss, LR schedule, optimizer, pruner."""
from dataclasses import dataclass

import paddle
from paddle.utils import unique_name

import models
from sparsity import GMPUnstructuredPruner, UnstructuredPruner
from sparsity.ops import pir_enabled
from suite import distributed


@dataclass
class Graph:
    main: object
    startup: object
    test: object
    loss: object
    logits: object
    test_logits: object
    lr: object
    pruner: object


def forward(model, scale, image_size, in_channels, num_classes):
    """Inputs and logits of `model` in the current program; parameter names are the same in every process."""
    images = paddle.static.data("image", [None, in_channels, image_size, image_size], "float32")
    labels = paddle.static.data("label", [None, 1], "int64")
    net = models.create(model, num_classes=num_classes, in_channels=in_channels, scale=scale, image_size=image_size)
    return images, labels, net(images)


def clone_for_test(main, logits):
    """A forward-only copy of `main` (BatchNorm in inference mode) and its logits; call before minimize."""
    if not pir_enabled():
        return main.clone(for_test=True), logits
    mapping = paddle.pir.IrMapping()
    test = main.clone(mapping)
    for op in test.global_block().ops:
        if op.has_attr("is_test"):
            op.set_bool_attr("is_test", True)
    return test, mapping.look_up(logits)


def lr_schedule(cfg, steps_per_epoch):
    """Per-batch LR schedule: piecewise (x0.1 at each of --step_epochs) or cosine over the whole run."""
    if cfg.lr_strategy == "piecewise_decay":
        boundaries = [e * steps_per_epoch for e in cfg.step_epochs]
        return paddle.optimizer.lr.PiecewiseDecay(boundaries, [cfg.lr * 0.1**i for i in range(len(boundaries) + 1)])
    return paddle.optimizer.lr.CosineAnnealingDecay(cfg.lr, T_max=max(1, cfg.num_epochs * steps_per_epoch))


def gmp_configs(cfg, steps_per_epoch, resume_iteration=0):
    """PaddleSlim-style GMP configs from the epoch flags."""
    return {
        "stable_iterations": cfg.stable_epochs * steps_per_epoch,
        "pruning_iterations": cfg.pruning_epochs * steps_per_epoch,
        "tunning_iterations": cfg.tunning_epochs * steps_per_epoch,
        "pruning_steps": cfg.pruning_steps,
        "initial_ratio": cfg.initial_ratio,
        "resume_iteration": resume_iteration,
    }


def make_pruner(cfg, program, startup, place, steps_per_epoch):
    """The pruner the flags ask for, or None for --pruning_strategy none (dense training)."""
    common = dict(
        place=place,
        prune_params_type=cfg.prune_params_type,
        local_sparsity=cfg.local_sparsity,
        sparse_block=cfg.sparse_block,
        startup_program=startup,
    )
    if cfg.pruning_strategy == "gmp":
        return GMPUnstructuredPruner(program, ratio=cfg.ratio, configs=gmp_configs(cfg, steps_per_epoch), **common)
    if cfg.pruning_strategy == "base":
        return UnstructuredPruner(program, cfg.pruning_mode, ratio=cfg.ratio, threshold=cfg.threshold, nm_pattern=cfg.nm_pattern, **common)
    return None


def build(cfg, in_channels, num_classes, steps_per_epoch, place, nranks=1):
    """Training program (forward, backward, gradient all-reduce when nranks > 1, update, masking) and test program."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = cfg.seed
    with paddle.static.program_guard(main, startup), unique_name.guard():
        images, labels, logits = forward(cfg.model, cfg.scale, cfg.image_size, in_channels, num_classes)
        loss = paddle.nn.functional.cross_entropy(logits, labels).mean()
        test, test_logits = clone_for_test(main, logits)
        lr = lr_schedule(cfg, steps_per_epoch)
        optimizer = paddle.optimizer.Momentum(
            learning_rate=lr, momentum=cfg.momentum_rate, weight_decay=paddle.regularizer.L2Decay(cfg.l2_decay)
        )
        distributed.minimize(optimizer, loss, nranks)
        # built after the optimizer ops exist, so its masking lands right after them from the first run
        pruner = make_pruner(cfg, main, startup, place, steps_per_epoch)
    return Graph(main, startup, test, loss, logits, test_logits, lr, pruner)

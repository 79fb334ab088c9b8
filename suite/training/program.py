"""The static programs of a model: the training program (model, loss, LR schedule, optimizer, pruner), its test
program, and the test program of a saved model rebuilt from the facts saved with it and its weights written in."""
from dataclasses import dataclass

import paddle
from paddle.utils import unique_name

import models
from sparsity import GMPUnstructuredPruner, UnstructuredPruner, groups, ops, static
from sparsity.channel_pruner import ChannelPruner, GMPChannelPruner
from sparsity.ops import pir_enabled
from suite.artefacts import weights
from suite.data import DATASETS
from suite.errors import ConfigError
from suite.training import config, distributed


@dataclass
class Forward:
    """A model's part of a program: inputs, logits, and {structural name: variable name} of its parameters."""

    images: object
    logits: object
    structure: dict


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
    structure: dict


@dataclass
class TestGraph:
    """A forward-only program (BatchNorm in inference mode) for evaluation and export."""

    startup: object
    test: object
    images: object
    logits: object
    structure: dict


def forward(model, scale, image_size, in_channels, num_classes, widths=None):
    """Inputs and logits of `model` (at the layer widths `widths` gives, for a slimmed model) in the current
    program; parameter names are the same in every process."""
    images = paddle.static.data("image", [None, in_channels, image_size, image_size], "float32")
    net = models.create(model, num_classes=num_classes, in_channels=in_channels, scale=scale, image_size=image_size, widths=widths)
    logits = net(images)
    return Forward(images, logits, {key: value.name for key, value in net.state_dict().items()})


def build_test(model, scale, image_size, in_channels, num_classes, widths=None):
    """The test program of `model` alone, with the same variable names as the training program's."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), unique_name.guard():
        net = forward(model, scale, image_size, in_channels, num_classes, widths)
        test, images, logits = clone_for_test(main, net.images, net.logits)
    return TestGraph(startup, test, images, logits, net.structure)


def clone_for_test(main, *values):
    """A forward-only copy of `main` (BatchNorm in inference mode) and `values` as found in it; call before minimize."""
    if not pir_enabled():
        test = main.clone(for_test=True)
        return (test, *(test.global_block().var(v.name) for v in values))
    mapping = paddle.pir.IrMapping()
    test = main.clone(mapping)
    for op in test.global_block().ops:
        if op.has_attr("is_test"):
            op.set_bool_attr("is_test", True)
    return (test, *(mapping.look_up(v) for v in values))


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


def make_pruner(cfg, program, startup, place, steps_per_epoch, structure):
    """The pruner the flags ask for, or None for --pruning_strategy none (dense training).

    `structure` ({structural name: variable name}) lets --sparsity_config name layers as the model does.
    """
    mode, rule = config.pruning_rule(cfg)
    if cfg.pruning_strategy != "none" and rule is None:
        return make_channel_pruner(cfg, program, startup, place, steps_per_epoch, structure)
    common = dict(
        place=place,
        prune_params_type=cfg.prune_params_type,
        local_sparsity=cfg.local_sparsity,
        startup_program=startup,
        rule=rule,
        ratios=cfg.ratios,
        structural_names={var: key for key, var in structure.items()},
    )
    try:
        if cfg.pruning_strategy == "gmp":
            return GMPUnstructuredPruner(program, ratio=cfg.ratio, configs=gmp_configs(cfg, steps_per_epoch), **common)
        if cfg.pruning_strategy == "base":
            return UnstructuredPruner(program, mode, ratio=cfg.ratio, threshold=cfg.threshold, **common)
    except ValueError as exc:  # the pruner refusing the model's layers with these flags or this --sparsity_config
        where = f" (--sparsity_config {cfg.sparsity_config})" if cfg.sparsity_config else ""
        raise ConfigError(f"--model {cfg.model}{where}: {exc}") from exc
    return None


def make_channel_pruner(cfg, program, startup, place, steps_per_epoch, structure):
    """The channel-group pruner --granularity channel asks for: a ratio of the channels or --target_flops, on a
    constant or GMP schedule."""
    common = dict(
        score=cfg.channel_score, target_flops=cfg.target_flops, min_channels=cfg.min_channels, channel_multiple=cfg.channel_multiple,
        local_sparsity=cfg.local_sparsity, ratios=cfg.ratios, structural_names={var: key for key, var in structure.items()},
        place=place, startup_program=startup,
    )
    ratio = None if cfg.target_flops is not None else cfg.ratio
    try:
        if cfg.pruning_strategy == "gmp":
            return GMPChannelPruner(program, ratio, configs=gmp_configs(cfg, steps_per_epoch), **common)
        return ChannelPruner(program, ratio, **common)
    except ValueError as exc:  # the analysis refusing the model's graph, or a budget or config it cannot meet
        where = f" (--sparsity_config {cfg.sparsity_config})" if cfg.sparsity_config else ""
        raise ConfigError(f"--model {cfg.model} with --granularity channel{where}: {exc}") from exc


def bn_scale_penalty(test, bn_l1):
    """Network Slimming's term: bn_l1 x the sum of |scale| of the BatchNorms in prunable channel groups (read off
    the forward program `test`), as an expression of the current program."""
    prunable = groups.analyze(test).prunable
    scales = sorted({m.param for g in prunable for m in g.members if m.role == groups.NORM_SCALE})
    if not scales:
        raise ConfigError("--bn_l1 needs BatchNorm layers in prunable channel groups, and this model has none")
    handles = {p.name: p.handle for p in static.model_params(paddle.static.default_main_program())}
    return bn_l1 * paddle.add_n([ops.total(ops.abs(handles[name])) for name in scales])


def build(cfg, in_channels, num_classes, steps_per_epoch, place, nranks=1):
    """Training program (forward, backward, gradient all-reduce when nranks > 1, update, masking) and test program."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    # Initial weights from the seed. The training program keeps the global generator (a fixed
    # main.random_seed would give dropout the same mask at every step); train.py reseeds it per epoch.
    startup.random_seed = cfg.seed
    with paddle.static.program_guard(main, startup), unique_name.guard():
        net = forward(cfg.model, cfg.scale, cfg.image_size, in_channels, num_classes, cfg.widths)
        test, test_logits = clone_for_test(main, net.logits)
        labels = paddle.static.data("label", [None, 1], "int64")
        loss = paddle.nn.functional.cross_entropy(net.logits, labels).mean()
        if cfg.bn_l1:
            loss = loss + bn_scale_penalty(test, cfg.bn_l1)
        lr = lr_schedule(cfg, steps_per_epoch)
        optimizer = paddle.optimizer.Momentum(
            learning_rate=lr, momentum=cfg.momentum_rate, weight_decay=paddle.regularizer.L2Decay(cfg.l2_decay)
        )
        distributed.minimize(optimizer, loss, nranks)
        # built after the optimizer ops exist, so its masking lands right after them from the first run
        pruner = make_pruner(cfg, main, startup, place, steps_per_epoch, net.structure)
    return Graph(main, startup, test, loss, net.logits, test_logits, lr, pruner, net.structure)


def load_test_graph(source, spec, place):
    """(TestGraph, Executor, Scope) of spec's model with the source's weights written in (strict match)."""
    paddle.enable_static()
    try:
        graph = build_test(spec["model"], spec["scale"], spec["image_size"], spec["in_channels"], spec["num_classes"], spec.get("widths"))
    except ValueError as exc:  # the registry refusing the model or scale, or a layer the input size leaves empty
        raise ConfigError(f"{spec['model']} x{spec['scale']} at {spec['image_size']}x{spec['image_size']} pixels with "
                          f"{spec['num_classes']} classes cannot be built ({exc}); check --model, --scale and --image_size") from exc
    exe = paddle.static.Executor(place)
    scope = paddle.static.global_scope()
    exe.run(graph.startup)
    shapes = {var: static.read(scope, var).shape for var in graph.structure.values()}
    for var, value in weights.match(source, graph.structure, shapes).values.items():
        static.write(scope, var, value, place)
    return graph, exe, scope


SPEC_KEYS = ("model", "scale", "image_size", "in_channels", "num_classes", "data", "data_dir", "widths")


def resolve_spec(saved, overrides):
    """The model/data facts: saved ones, replaced by the flags given; a state dict has none, so flags must name them."""
    spec = {key: saved.get(key) for key in SPEC_KEYS}
    if overrides.get("data") is not None and overrides.get("data_dir") is None:
        spec["data_dir"] = None  # the saved folder belongs to the saved dataset only
    spec.update({key: value for key, value in overrides.items() if key in SPEC_KEYS and value is not None})
    if spec["model"] is None or spec["data"] is None:
        raise ConfigError("a state-dict file records no model or data set: pass --model (and --scale) and --data")
    if spec["model"] not in models.names():
        raise ConfigError(f"--model {spec['model']!r} is not a known model; choose one of {', '.join(models.names())}")
    if spec["data"] not in DATASETS:
        raise ConfigError(f"--data {spec['data']!r} is not a known dataset; choose one of {', '.join(sorted(DATASETS))}")
    info = DATASETS[spec["data"]]
    defaults = {"scale": 1.0, "image_size": info.image_size, "in_channels": info.in_channels, "num_classes": info.num_classes}
    return {**spec, **{key: value for key, value in defaults.items() if spec[key] is None}}

"""Train a model in a static graph while a pruner keeps its weights sparse.

    python train.py --data fashion_mnist --model MobileNet --scale 0.25 --pruning_strategy gmp --ratio 0.75
    python -m paddle.distributed.launch --gpus 0,1,2,3 train.py ...   (data parallel, --batch_size per card)

Flags follow PaddleSlim's unstructured-pruning demo; see README.md for all of them.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import contextlib
import hashlib
import os
import sys
from types import SimpleNamespace

import paddle

import models
from sparsity import report, static
from suite import cli, data
from suite.analysis import plots
from suite.artefacts import checkpoint, lock, weights
from suite.errors import CheckpointError, ConfigError, SuiteError, WriteError, run_cli
from suite.training import config, distributed, loop, program, resume
from suite.training.log import Eta, RunLog

def parse_args(argv=None):
    p = cli.Parser(description="Sparse training of vision models (PaddlePaddle static graph).")
    add = p.add_argument
    add("--data", default="fashion_mnist", help="fashion_mnist | mnist | cifar10 | imagenet")
    add("--data_dir", default=None, help="dataset folder (default: the dataset's usual place)")
    add("--model", default="MobileNet", help="model name from models/ (MobileNet, MobileNetV2, ResNet18, ...)")
    add("--scale", type=float, default=1.0, help="width multiplier of MobileNets")
    add("--image_size", type=int, default=None, help="input size (default: the dataset's native size)")
    add("--batch_size", type=int, default=64, help="batch size per card")
    add("--batch_size_for_validation", type=int, default=256)
    add("--num_epochs", type=int, default=120)
    add("--lr", type=float, default=0.1)
    add("--lr_strategy", default="piecewise_decay", choices=["piecewise_decay", "cosine_decay"])
    add("--step_epochs", type=int, nargs="+", default=[30, 60, 90], help="epochs where piecewise_decay divides the LR by 10")
    add("--l2_decay", type=float, default=3e-5)
    add("--momentum_rate", type=float, default=0.9)
    add("--pruning_strategy", default="base", choices=["base", "gmp", "none"], help="none trains dense (a baseline)")
    add("--pruning_mode", default="ratio", choices=["ratio", "threshold", "nm"], help="nm: keep n of every m weights (--nm_pattern)")
    add("--ratio", type=float, default=None, help=f"fraction of the pruned set to zero (channels: of the prunable channels); default {config.DEFAULT_RATIO}")
    add("--threshold", type=float, default=1e-2, help="threshold mode: |w| below this is zeroed")
    add("--sparse_block", type=int, nargs="+", default=[1, 1], help="m n: prune m x n blocks (2 1: semi-structured)")
    add("--nm_pattern", type=int, nargs="+", default=[2, 4], help="n m for --pruning_mode nm: keep n of every m along the input axis")
    add("--prune_params_type", type=cli.optional_name, default=None, choices=[None, "conv1x1_only"])
    add("--local_sparsity", type=cli.str2bool, default=False, help="True: the ratio applies to each parameter")
    add("--granularity", default=None, choices=["element", "block", "nm", "channel", "random"],
        help="what is pruned as a unit (default: from --pruning_mode and --sparse_block, as in PaddleSlim)")
    add("--block_per_position", action="store_true", help="blocks: one m x n block per conv kernel position instead of whole slabs")
    add("--channel_score", default="l2", choices=["l1", "l2", "bn_scale", "fpgm"],
        help="channel: what ranks a group's channels (normalised per group): filter magnitude, BatchNorm scale, geometric median")
    add("--target_flops", type=float, default=None, help="channel: keep this fraction of the dense model's FLOPs (instead of --ratio)")
    add("--min_channels", type=int, default=1, help="channel: every layer keeps at least this many channels")
    add("--channel_multiple", type=int, default=8, help="channel: layers of 16+ channels keep a multiple of this (runtimes run such widths faster)")
    add("--bn_l1", type=float, default=0.0, help="channel: Network Slimming's L1 weight on the BatchNorm scales of prunable groups")
    add("--sparsity_config", default=None, help="YAML or JSON: {parameter or layer name or glob: ratio or skip} per-layer targets")
    add("--stable_epochs", type=int, default=0)
    add("--pruning_epochs", type=int, default=60)
    add("--tunning_epochs", type=int, default=60)
    add("--pruning_steps", type=int, default=100, help="GMP: number of ratio increments")
    add("--initial_ratio", type=float, default=0.15)
    add("--pretrained_model", default=None, help="weights to start from: a checkpoint folder, a state-dict .pdparams (model zoo, PaddleClas) or a .sparse.npz")
    add("--checkpoint", default=None, help="checkpoint folder to continue from (PaddleSlim style)")
    add("--last_epoch", type=int, default=None, help="with --checkpoint: the epoch it was saved at")
    add("--resume", action="store_true", help="continue from MODEL_PATH/latest if there is one")
    add("--model_path", default="output", help="where checkpoints go (MODEL_PATH/epoch_N, MODEL_PATH/latest)")
    add("--model_period", type=int, default=1, help="checkpoint every N epochs (and at the end)")
    add("--keep_checkpoints", type=int, default=3, help="keep the newest N checkpoints (0: all)")
    add("--test_period", type=int, default=1, help="evaluate every N epochs (and at the end)")
    add("--log_period", type=int, default=100, help="a progress line every N batches")
    add("--log_dir", default=None, help="VisualDL log folder")
    add("--num_workers", type=int, default=2, help="decoding processes for ImageNet folders")
    add("--skip_bad_samples", action="store_true", help="ImageNet folders: skip bad list lines and images (counted) instead of stopping")
    add("--use_gpu", type=cli.str2bool, default=None, help="default: GPU when Paddle has CUDA and one is visible")
    add("--seed", type=int, default=0)
    add("--train_subset", type=cli.positive_int, default=None, help="use only the first N training samples (quick runs)")
    add("--test_subset", type=cli.positive_int, default=None, help="use only the first N test samples")
    return p.parse_args(argv)


def load_into_scope(values, place):
    scope = paddle.static.global_scope()
    for name, value in values.items():
        static.write(scope, name, value, place)


def setup(cfg):
    """Checks of flags, data and checkpoints that need no program; raises ConfigError, DataError, CheckpointError."""
    config.validate(cfg)
    info = data.DATASETS[cfg.data]
    cfg.image_size = cfg.image_size or info.image_size
    nranks = distributed.world()[1]
    train_set = data.load_dataset(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.train_subset, cfg.skip_bad_samples)
    test_set = data.load_dataset(cfg.data, "test", cfg.data_dir, cfg.image_size, cfg.test_subset, cfg.skip_bad_samples)
    steps = data.num_batches(train_set, cfg.batch_size, nranks)
    if steps < 1:
        raise ConfigError(f"{len(train_set)} training samples make no full batch of --batch_size {cfg.batch_size} on {nranks} card(s); lower --batch_size")
    config.check_gmp_fits(cfg, steps)
    place = cli.choose_place(cfg.use_gpu)
    pretrained = weights.read(cfg.pretrained_model) if cfg.pretrained_model else None  # checked even when resuming
    cfg.widths = slimmed_widths(cfg, pretrained)
    latest = resume.latest_link(cfg.model_path)
    folder, state = resume.find_resume_point(cfg, nranks, defaults=vars(parse_args([])))
    if folder:
        pretrained = None  # a resumed run continues from its own weights
    num_classes = max(getattr(s, "num_classes", info.num_classes) for s in (train_set, test_set))
    return SimpleNamespace(
        info=info, train_set=train_set, test_set=test_set, steps=steps, folder=folder, state=state, place=place, num_classes=num_classes, pretrained=pretrained,
        latest=latest,
    )


def slimmed_widths(cfg, source):
    """The layer widths of a slimmed model (slim.py) the run starts from, which the model is built with; None otherwise."""
    widths = (source.spec.get("widths") if source else None) or None
    if widths and (source.spec.get("model"), source.spec.get("scale")) != (cfg.model, cfg.scale):
        raise ConfigError(f"--pretrained_model {cfg.pretrained_model} is a slimmed {source.spec.get('model')} x{source.spec.get('scale')}; "
                          f"pass --model {source.spec.get('model')} --scale {source.spec.get('scale')} to fine-tune it")
    return widths


def prepare(cfg):
    """Everything before the first step: checks, communication, programs, initial or restored state."""
    run = setup(cfg)
    run.team = distributed.init(run.place, *distributed.world())
    paddle.enable_static()
    paddle.seed(cfg.seed)
    try:
        run.graph = program.build(cfg, run.info.in_channels, run.num_classes, run.steps, run.place, run.team.nranks)
    except ValueError as exc:  # the model refusing these flags
        raise ConfigError(f"--model {cfg.model} with these flags: {exc}") from exc
    run.exe = paddle.static.Executor(run.place)
    run.exe.run(run.graph.startup)
    run.start_epoch, run.history, run.curve = 0, [], []
    if run.pretrained:
        shapes = {p.name: p.shape for p in static.model_params(run.graph.main)}
        run.pretrained_match = weights.match(run.pretrained, run.graph.structure, shapes, models.spec(cfg.model).head_prefixes)
        load_into_scope(run.pretrained_match.values, run.place)
    if run.folder:
        persistables = static.persistables(run.graph.main)
        load_into_scope(resume.check_compatible(checkpoint.read_persistables(run.folder), persistables, run.folder), run.place)
        run.graph.lr.set_state_dict(run.state["lr"])
        if run.graph.pruner:
            run.graph.pruner.set_state_dict(run.state["pruner"])
        run.start_epoch, run.history, run.curve = run.state["epoch"] + 1, run.state["history"], run.state["curve"]
    if not run.team.same_on_all_ranks(run.start_epoch):
        raise CheckpointError(
            f"the ranks would start from different epochs (this one: {run.start_epoch}); every machine must see the same "
            "--model_path checkpoints (shared storage) to resume"
        )
    return run


def hold_model_path(cfg, run):
    """Rank 0 locks --model_path for the run: refused while another run holds it, or if another run wrote there
    since `setup` looked. Every rank learns the outcome, so all go on or all stop. Returns what to hold it with."""
    held, problem = None, None
    if run.team.rank == 0:
        try:
            held = lock.acquire(cfg.model_path, f"--model_path {cfg.model_path}")
            if resume.latest_link(cfg.model_path) != run.latest:
                raise ConfigError(f"another run wrote to --model_path {cfg.model_path} while this one was starting; start again")
        except SuiteError as exc:
            problem = exc
    if not run.team.all_ok(problem is None):
        if held:
            held.release()
        raise problem or ConfigError(f"rank 0 could not take --model_path {cfg.model_path} (its log says why), so every rank stops")
    return held or contextlib.nullcontext()


def main(argv=None):
    cfg = parse_args(argv)
    run = prepare(cfg)
    with hold_model_path(cfg, run):
        log = RunLog(cfg.log_dir, run.team.rank)
        try:
            train(cfg, run, log)
        finally:
            log.close()


def train(cfg, run, log):
    """The epochs still to run: train, evaluate on rank 0, checkpoint; then the summary line and plot."""
    graph, team, pruner = run.graph, run.team, run.graph.pruner
    if run.pretrained:
        log.line(run.pretrained_match.describe(run.pretrained))
    if run.folder:
        log.line(f"resumed from {run.folder} (epoch {run.state['epoch']} done, step {run.state['step']})")
    elif cfg.resume:
        log.line(f"no checkpoint in {cfg.model_path} yet: starting from scratch")
    log.line(
        f"{cfg.model} x{cfg.scale} on {cfg.data} ({len(run.train_set)} train / {len(run.test_set)} test, {cfg.image_size}px), "
        f"{run.steps} steps/epoch x {team.nranks} card(s), place {run.place}, IR {'PIR' if static.pir_enabled() else 'legacy'}, "
        f"pruning {cfg.pruning_strategy}" + (f" ({pruner.describe()})" if pruner else "")
    )
    model_params = static.model_params(graph.main)
    targets = pruner.layer_targets() if pruner else {}
    if cfg.ratios:
        layers = {var: key for key, var in graph.structure.items()}
        log.line(f"per-layer targets from --sparsity_config {cfg.sparsity_config} ({len(pruner.skip_params)} parameters left dense):")
        for name, target in targets.items():
            log.line(f"  {layers.get(name, name):<40} {name:<24} " + (f"{target:.4f}" if target is not None else f"global threshold at --ratio {cfg.ratio}"))
    run.sparsity_report = lambda: report.summary(paddle.static.global_scope(), model_params, targets)
    eta = Eta(cfg.num_epochs * run.steps, already=run.start_epoch * run.steps)
    for epoch in range(run.start_epoch, cfg.num_epochs):
        # dropout's randomness is a function of (seed, epoch, rank) like the data order, so a resumed run repeats it
        paddle.seed(cfg.seed * 1_000_003 + epoch * 1009 + team.rank)
        batches = data.batches(
            run.train_set, cfg.batch_size, True, cfg.seed, epoch, team.rank, team.nranks, num_workers=cfg.num_workers, augment=cfg.data == "cifar10"
        )
        loop.train_epoch(run.exe, graph, batches, epoch, run.steps, log, cfg.log_period, run.sparsity_report, run.curve, eta)
        last = epoch == cfg.num_epochs - 1
        if team.rank == 0 and ((epoch + 1) % cfg.test_period == 0 or last):
            run.history.append(evaluate_epoch(cfg, run, epoch, log))
        if (epoch + 1) % cfg.model_period == 0 or last:
            save_checkpoint(cfg, run, epoch, log)
    skipped = getattr(run.train_set, "skipped", 0) + getattr(run.test_set, "skipped", 0)
    if skipped:
        log.line(f"skipped {skipped} bad sample(s) (--skip_bad_samples); see the warnings above")
    if team.rank == 0 and run.history:
        path = plots.training_curves(run.curve, run.history, os.path.join(cfg.model_path, "curves.png"))
        final = run.history[-1]
        log.line(
            f"final: top1 {final['top1']:.4f} top5 {final['top5']:.4f} sparsity model {final['model_sparsity']:.4f} "
            f"pruned {final['pruned_sparsity']:.4f}; checkpoint {os.path.join(cfg.model_path, checkpoint.LATEST)}" + (f"; curves {path}" if path else "")
        )


def evaluate_epoch(cfg, run, epoch, log):
    """Test accuracy and sparsity after `epoch`, logged and returned as a history row."""
    graph = run.graph
    batches = data.batches(run.test_set, cfg.batch_size_for_validation, False, drop_last=False, num_workers=cfg.num_workers)
    result = loop.evaluate(loop.program_predictor(run.exe, graph.test, graph.test_logits), batches)
    sparsity = run.sparsity_report()
    row = {"epoch": epoch, "step": (epoch + 1) * run.steps, "top1": result["top1"], "top5": result["top5"], "model_sparsity": sparsity["model"], "pruned_sparsity": sparsity["pruned"]}
    channels = ""
    if hasattr(graph.pruner, "flops"):  # channel groups: what slim.py will make of the masked model
        kept, dense = graph.pruner.flops()
        row["flops"] = kept / dense
        channels = f" FLOPs {row['flops']:.3f}x of dense"
    log.line(f"test epoch {epoch}: top1 {row['top1']:.4f} top5 {row['top5']:.4f} sparsity model {row['model_sparsity']:.4f} pruned {row['pruned_sparsity']:.4f}{channels}")
    emptied = [layer["name"] for layer in sparsity["layers"] if layer["pruned"] and layer["size"] and layer["sparsity"] == 1.0]
    if emptied:
        log.line(f"warning: every weight of {', '.join(emptied)} is pruned, so no signal passes that layer; "
                 "prune each layer to its own ratio (--local_sparsity True) or cap it in a --sparsity_config")
    log.scalars(
        (epoch + 1) * run.steps,
        {"test/acc_top1": row["top1"], "test/acc_top5": row["top5"], "sparsity/model": row["model_sparsity"], "sparsity/pruned": row["pruned_sparsity"]},
    )
    return row


def weights_digest(program):
    """SHA-256 over the trained weights and masks (not BN statistics, which stay per card): equal on every rank."""
    digest = hashlib.sha256()
    scope = paddle.static.global_scope()
    trained = {p.name for p in static.parameters(program) if p.trainable}
    for name in sorted(static.persistables(program)):
        if name in trained or static.is_mask_name(name):
            digest.update(name.encode())
            digest.update(static.read(scope, name).tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(cfg, run, epoch, log):
    """Rank 0 writes the checkpoint; every rank waits until it is complete, and all stop if it could not be written."""
    graph, team, problem = run.graph, run.team, None
    if team.nranks > 1:
        log.line(f"epoch {epoch} weights+masks sha256 {weights_digest(graph.main)}")
    if team.rank == 0:
        state = {
            "epoch": epoch,
            "step": (epoch + 1) * run.steps,
            "ir": "pir" if static.pir_enabled() else "legacy",
            "nranks": team.nranks,
            "spec": {
                "model": cfg.model, "scale": cfg.scale, "image_size": cfg.image_size, "in_channels": run.info.in_channels,
                "num_classes": run.num_classes, "data": cfg.data, "data_dir": cfg.data_dir, "widths": cfg.widths,
            },
            "structure": graph.structure,
            "targets": graph.pruner.layer_targets() if graph.pruner else {},
            "flags": vars(cfg),
            "lr": graph.lr.state_dict(),
            "pruner": graph.pruner.state_dict() if graph.pruner else None,
            "history": run.history,
            "curve": run.curve,
        }
        try:
            log.line(f"saved {checkpoint.save(cfg.model_path, epoch, graph.main, state, keep=cfg.keep_checkpoints)}")
        except WriteError as exc:
            problem = exc
    if not team.all_ok(problem is None):
        raise problem or WriteError(f"rank 0 could not write the checkpoint of epoch {epoch} (its log says why), so every rank stops")


if __name__ == "__main__":
    sys.exit(run_cli(main))

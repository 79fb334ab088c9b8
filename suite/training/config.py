"""train.py's flags checked before any training or writing: every bad value gets one clear line."""
import os

import models
from sparsity import checks, rules, selection
from sparsity.pruner import check_rule
from suite.data import DATASETS
from suite.errors import ConfigError


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def _library(check, *args, **kwargs):
    """A sparsity-library check (its message already names the flag), its ValueError as a ConfigError."""
    try:
        return check(*args, **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


DEFAULT_RATIO = 0.55  # PaddleSlim's demo default


def pruning_rule(cfg):
    """(mode, rule) the pruning flags ask for; the rule is None for --granularity channel (whole channel groups,
    sparsity.ChannelPruner). Without --granularity, PaddleSlim's flags alone decide (--pruning_mode nm: N:M;
    --sparse_block m n: m x n blocks; else single weights)."""
    block = _library(checks.block, cfg.sparse_block, "--sparse_block")
    pattern = _library(checks.nm_pattern, cfg.nm_pattern, "--nm_pattern")
    granularity = cfg.granularity or ("nm" if cfg.pruning_mode == "nm" else "block" if block != (1, 1) else "element")
    _require(
        block == (1, 1) or granularity == "block",
        f"--sparse_block {block[0]} {block[1]} prunes blocks; it does not go with "
        + ("--pruning_mode nm, which keeps n of every m single weights: leave --sparse_block at 1 1" if granularity == "nm" else f"--granularity {granularity}"),
    )
    _require(cfg.pruning_mode != "nm" or granularity == "nm", f"--pruning_mode nm keeps n of every m weights; it does not go with --granularity {granularity}")
    if granularity == "channel":
        _require(cfg.pruning_mode == "ratio", f"--granularity channel prunes a ratio of the channels (or --target_flops); it does not go with --pruning_mode {cfg.pruning_mode}")
        return "ratio", None
    options = {
        "element": {},
        "block": {"m": block[0], "n": block[1], "per_position": cfg.block_per_position},
        "nm": {"n": pattern[0], "m": pattern[1]},
        "random": {"seed": cfg.seed},
    }[granularity]
    mode = "nm" if granularity == "nm" else cfg.pruning_mode
    _require(granularity != "block" or block != (1, 1), "--granularity block needs --sparse_block m n with m x n > 1, e.g. --sparse_block 2 1")
    rule = _library(rules.create, granularity, **options)
    _library(check_rule, rule, mode)
    return mode, rule


def validate(cfg):
    """Check the training flags against each other; raises ConfigError."""
    _require(cfg.data in DATASETS, f"--data {cfg.data!r} is not a known dataset; choose one of {', '.join(sorted(DATASETS))}")
    _require(cfg.model in models.names(), f"--model {cfg.model!r} is not a known model; choose one of {', '.join(models.names())}")
    cfg.model = models.spec(cfg.model).name  # aliases (MobileNet) resume runs saved under the name (mobilenet_v1)
    _require(cfg.ratio is None or cfg.target_flops is None,
             "--ratio (a fraction of the channels) and --target_flops (a fraction of the FLOPs to keep) both set the budget; pass one")
    cfg.ratio = DEFAULT_RATIO if cfg.ratio is None else cfg.ratio
    _library(checks.ratio, cfg.ratio, "--ratio")
    _library(checks.threshold, cfg.threshold, "--threshold")
    _library(checks.local_sparsity_mode, cfg.local_sparsity, cfg.pruning_mode, "--local_sparsity", "--pruning_mode")
    cfg.ratios = _library(selection.read_ratios_file, cfg.sparsity_config) if cfg.sparsity_config else None
    mode, _ = pruning_rule(cfg)
    check_channel_flags(cfg)
    _require(cfg.batch_size >= 1, f"--batch_size {cfg.batch_size} must be >= 1")
    _require(cfg.batch_size_for_validation >= 1, f"--batch_size_for_validation {cfg.batch_size_for_validation} must be >= 1")
    _require(
        cfg.step_epochs == sorted(cfg.step_epochs) and all(e > 0 for e in cfg.step_epochs),
        f"--step_epochs {' '.join(map(str, cfg.step_epochs))} must be positive and ascending, e.g. 30 60 90",
    )
    _require(cfg.num_workers >= 0, f"--num_workers {cfg.num_workers} must be >= 0")
    _require(cfg.num_epochs >= 1, f"--num_epochs {cfg.num_epochs} must be >= 1")
    _require(cfg.lr > 0, f"--lr {cfg.lr} must be > 0")
    _require(cfg.scale > 0, f"--scale {cfg.scale} must be > 0")
    _require(cfg.image_size is None or cfg.image_size >= 8, f"--image_size {cfg.image_size} must be >= 8")
    _require(cfg.log_period >= 1 and cfg.test_period >= 1 and cfg.model_period >= 1, "--log_period, --test_period and --model_period must be >= 1")
    _require(cfg.keep_checkpoints >= 0, f"--keep_checkpoints {cfg.keep_checkpoints} must be >= 0 (0 keeps all)")
    if cfg.pruning_strategy == "gmp":
        _require(mode == "ratio", f"--pruning_mode {mode} cannot be used with --pruning_strategy gmp; GMP ramps a ratio: use --pruning_mode ratio")
        for name in ("stable_epochs", "pruning_epochs", "tunning_epochs"):
            _require(getattr(cfg, name) >= 0, f"--{name} {getattr(cfg, name)} must be >= 0")
        _require(cfg.pruning_steps >= 1, f"--pruning_steps {cfg.pruning_steps} must be >= 1")
        _require(cfg.pruning_epochs >= 1, "--pruning_epochs must be >= 1 with --pruning_strategy gmp")
        final = f"--ratio {cfg.ratio}" if cfg.target_flops is None else f"1 - --target_flops = {budget_ratio(cfg):g}"
        _require(0.0 <= cfg.initial_ratio <= budget_ratio(cfg), f"--initial_ratio {cfg.initial_ratio} must be in [0, {final}]")
        _require(
            cfg.stable_epochs + cfg.pruning_epochs <= cfg.num_epochs,
            f"--stable_epochs {cfg.stable_epochs} + --pruning_epochs {cfg.pruning_epochs} exceed --num_epochs {cfg.num_epochs}: "
            "the run would end before reaching --ratio; lengthen the run or shorten the phases",
        )
    if cfg.last_epoch is not None:
        _require(cfg.checkpoint is not None, "--last_epoch needs --checkpoint DIR (the checkpoint to continue from)")
    _require(not (cfg.resume and cfg.checkpoint), "--resume and --checkpoint both name where to continue from; pass one")
    _require(not os.path.exists(cfg.model_path) or os.path.isdir(cfg.model_path), f"--model_path {cfg.model_path} exists and is not a folder; pass a folder for the checkpoints")
    if cfg.checkpoint:
        _require(os.path.isdir(cfg.checkpoint), f"--checkpoint {cfg.checkpoint} is not a folder; pass a checkpoint folder such as MODEL_PATH/epoch_3")


def check_channel_flags(cfg):
    """The flags of channel-group pruning: meaningful only with --granularity channel, and in range."""
    channel = cfg.granularity == "channel"
    if cfg.target_flops is not None:
        _require(channel, "--target_flops needs --granularity channel: a model's FLOPs fall only when whole channels go")
        _require(0.0 < cfg.target_flops < 1.0, f"--target_flops {cfg.target_flops} must be in (0, 1): the fraction of the dense model's FLOPs to keep")
    _require(cfg.bn_l1 >= 0, f"--bn_l1 {cfg.bn_l1} must be >= 0")
    _require(cfg.bn_l1 == 0 or channel, "--bn_l1 (an L1 term on the BatchNorm scales of prunable channel groups) needs --granularity channel")
    _require(cfg.min_channels >= 1, f"--min_channels {cfg.min_channels} must be >= 1: a layer always keeps a channel")
    _require(cfg.channel_multiple >= 1, f"--channel_multiple {cfg.channel_multiple} must be >= 1 (1: any width)")
    if channel:
        _require(cfg.prune_params_type is None, "--prune_params_type conv1x1_only chooses single weights to prune; it does not go with --granularity channel")


def budget_ratio(cfg):
    """The final budget of the run: --ratio, or for channels under --target_flops F the fraction 1 - F of the FLOPs removed."""
    return 1.0 - cfg.target_flops if cfg.target_flops is not None else cfg.ratio


def check_gmp_fits(cfg, steps_per_epoch):
    """GMP phases in iterations must hold at least one iteration per pruning step."""
    if cfg.pruning_strategy == "gmp":
        iterations = cfg.pruning_epochs * steps_per_epoch
        _require(
            cfg.pruning_steps <= iterations,
            f"--pruning_steps {cfg.pruning_steps} exceeds the {iterations} iterations of --pruning_epochs {cfg.pruning_epochs} "
            f"({steps_per_epoch} per epoch); lower --pruning_steps or raise --pruning_epochs",
        )

"""Which checkpoint a training run continues from, and the rules for continuing: same IR, the same flags that
shape the run, the same number of cards, and every saved variable matching the program."""
import os

from sparsity import static
from suite.artefacts.checkpoint import LATEST, resolve, verify
from suite.errors import CheckpointError, ConfigError


def check_compatible(values, expected, folder):
    """Refuse before loading anything when a needed persistable is missing or has another shape.

    `expected` maps names to shapes; returns the subset of `values` to load.
    """
    missing = sorted(n for n in expected if n not in values)
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise CheckpointError(f"{folder} does not match this model: {len(missing)} variable(s) missing ({shown}); check --model, --scale and the pruning flags")
    for name, shape in expected.items():
        got = tuple(values[name].shape)
        if tuple(shape) != got:
            raise CheckpointError(f"{folder} does not match this model: {name} has shape {list(got)}, the model needs {list(shape)}; check --model, --scale and --data")
    return {n: values[n] for n in expected}


# Flags that shape a run (model, data order, schedules, pruning): resuming with other values is refused,
# since the result would be neither the old run continued nor a new one.
DEFINING_FLAGS = (
    "data", "model", "scale", "image_size", "train_subset", "batch_size", "seed", "num_epochs",
    "lr", "lr_strategy", "step_epochs", "l2_decay", "momentum_rate",
    "pruning_strategy", "pruning_mode", "ratio", "threshold", "sparse_block", "nm_pattern", "prune_params_type",
    "local_sparsity", "stable_epochs", "pruning_epochs", "tunning_epochs", "pruning_steps", "initial_ratio",
    "granularity", "block_per_position", "channel_score", "target_flops", "min_channels", "channel_multiple", "bn_l1",
    "ratios", "widths",
)


def latest_link(model_path):
    """What MODEL_PATH/latest names, or None: a run compares it before and after taking the folder's lock."""
    latest = os.path.join(model_path, LATEST)
    return os.readlink(latest) if os.path.islink(latest) else None


def find_resume_point(cfg, nranks, defaults=None):
    """(folder, state) of the checkpoint a training run continues from, or (None, None) for a new run.

    `--resume` takes MODEL_PATH/latest if there is one; `--checkpoint` names a folder. The checkpoint is
    verified and must have been written under this IR, with the same defining flags and number of cards
    (a flag newer than the checkpoint counts as its default, `defaults`: {flag: default}).
    """
    latest = os.path.join(cfg.model_path, LATEST)
    if cfg.resume:
        if not os.path.lexists(latest):
            return None, None
        folder = resolve(latest)
    elif cfg.checkpoint:
        folder = resolve(cfg.checkpoint)
    else:
        if os.path.lexists(latest):
            raise ConfigError(
                f"--model_path {cfg.model_path} already holds a run ({latest} -> {os.readlink(latest)}); "
                "pass --resume to continue it, or another --model_path"
            )
        return None, None
    state = verify(folder)
    if state.get("kind") == "slim":
        raise CheckpointError(f"{folder} is a slimmed model (slim.py), not a training run's checkpoint: start a new run from it "
                              f"with --pretrained_model {folder}")
    ir = "pir" if static.pir_enabled() else "legacy"
    if state.get("ir") != ir:
        raise CheckpointError(f"{folder} was written under the {state.get('ir')} IR, this run uses {ir}; set FLAGS_enable_pir_api to match")
    for name in DEFINING_FLAGS:
        saved, now = state["flags"].get(name, (defaults or {}).get(name)), getattr(cfg, name)  # a flag newer than the checkpoint: its default
        if saved != now:
            raise CheckpointError(
                f"{folder} is for --{name} {saved}, this run has --{name} {now}; a resumed run must keep the flags "
                "that shape it: pass the same value, or start a new run in another --model_path"
            )
    if state.get("nranks", 1) != nranks:
        raise CheckpointError(
            f"{folder} was written by a run on {state.get('nranks', 1)} card(s), this run has {nranks}: steps per epoch, "
            "the LR schedule and GMP phases would shift; resume with the same number of cards"
        )
    if cfg.last_epoch is not None and cfg.last_epoch != state["epoch"]:
        raise CheckpointError(f"--last_epoch {cfg.last_epoch} but {folder} was saved after epoch {state['epoch']}")
    return folder, state

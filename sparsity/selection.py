"""Which parameters are pruned: the default skip rule, conv1x1_only, or the user's skip_params_func."""
from . import static

PRUNE_PARAMS_TYPES = (None, "conv1x1_only")


def default_skip_params(program):
    """Parameters left dense by default: inputs of normalization ops and every 1-D parameter (biases)."""
    skip = static.normalization_inputs(program)
    skip.update(p.name for p in static.parameters(program) if len(p.shape) <= 1)
    return skip


def is_conv1x1(shape):
    return len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def model_params(program):
    """The model's own parameters: trainable ones and normalization statistics (no masks, no LR variable)."""
    norm_inputs = static.normalization_inputs(program)
    return [
        p for p in static.parameters(program) if not static.is_mask_name(p.name) and (p.trainable or p.name in norm_inputs)
    ]


def prunable_params(program, prune_params_type=None, skip_params_func=None):
    """The parameters a pruner masks, in program order.

    `skip_params_func(program) -> names` replaces the default skip rule; `prune_params_type=
    'conv1x1_only'` further keeps only 4-D weights with a 1x1 kernel.
    """
    if prune_params_type not in PRUNE_PARAMS_TYPES:
        raise ValueError(f"prune_params_type must be None or 'conv1x1_only', got {prune_params_type!r}")
    if skip_params_func is None:
        skip = default_skip_params(program)
    else:
        if not callable(skip_params_func):
            raise ValueError(f"skip_params_func must be callable as skip_params_func(program), got {skip_params_func!r}")
        skip = set(skip_params_func(program))
    chosen = [p for p in model_params(program) if p.name not in skip]
    if prune_params_type == "conv1x1_only":
        chosen = [p for p in chosen if is_conv1x1(p.shape)]
    return chosen

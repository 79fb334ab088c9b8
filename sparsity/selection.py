"""Which parameters are pruned, and each one's target ratio.

The default skip rule (normalization parameters and 1-D parameters such as biases),
`prune_params_type='conv1x1_only'`, a user's `skip_params_func`, then per-layer ratios: a dict or a
YAML/JSON file whose keys are parameter names or glob patterns, matched against the variable name
(`conv2d_3.w_0`) or the layer's structural name (`features.0.weight`), and whose values are a
ratio in [0, 1) or 'skip'.
"""
import fnmatch
import json
import os

from . import checks, static

PRUNE_PARAMS_TYPES = (None, "conv1x1_only")
SKIP = "skip"


def is_conv1x1(shape):
    return len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def choose(params, norm_names, source, prune_params_type=None, skip_params_func=None, layer_params=None):
    """The parameters to prune, in order, from a model's parameters (static.Param list).

    `skip_params_func(source) -> names` (source: the program or the dygraph model) replaces the
    default skip rule (normalization parameters `norm_names` and 1-D parameters);
    `prune_params_type='conv1x1_only'` then keeps only 4-D weights with a 1x1 kernel.
    `layer_params` ({layer name: its own parameters' names}) lets a skip set name layers.
    """
    checks.choice(prune_params_type, "prune_params_type", PRUNE_PARAMS_TYPES)
    skip = default_skip(params, norm_names) if skip_params_func is None else skip_names(skip_params_func, source)
    return keep(params, skip, prune_params_type, layer_params)


def default_skip(params, norm_names):
    """The default skip rule's names: normalization parameters and 1-D (or 0-D) parameters such as biases."""
    return set(norm_names) | {p.name for p in params if len(p.shape) <= 1}


def skip_names(skip_params_func, source):
    """The set of names `skip_params_func(source)` returns (parameter names, or layer names in dygraph)."""
    if not callable(skip_params_func):
        raise ValueError(f"skip_params_func must be callable as skip_params_func(program or model), got {skip_params_func!r}")
    names = skip_params_func(source)
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ValueError(f"skip_params_func must return a set of parameter (or layer) names, got {names!r}")
    return set(names)


def keep(params, skip, prune_params_type=None, layer_params=None):
    """`params` less those `skip` names, directly or through their layer (`layer_params`: {layer name:
    its own parameters' names}, as PaddleSlim's `_should_prune_layer` skips a layer's own parameters,
    not its sublayers'); with 'conv1x1_only', only 4-D weights with a 1x1 kernel."""
    skip = set(skip)
    for layer, names in (layer_params or {}).items():
        if layer in skip:
            skip.update(names)
    chosen = [p for p in params if p.name not in skip]
    if prune_params_type == "conv1x1_only":
        chosen = [p for p in chosen if is_conv1x1(p.shape)]
    return chosen


def prunable_params(program, prune_params_type=None, skip_params_func=None):
    """The parameters of a static program that a pruner with these arguments masks, in program order."""
    return choose(static.model_params(program), static.normalization_inputs(program), program, prune_params_type, skip_params_func)


def check_ratios(ratios, source="ratios"):
    """Validate a per-layer config {name or glob: ratio in [0, 1) or 'skip'}; `source` names it in errors."""
    if not isinstance(ratios, dict):
        raise ValueError(f"{source} must map parameter names or glob patterns to a ratio or '{SKIP}', got {type(ratios).__name__}")
    checked = {}
    for key, value in ratios.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{source}: key {key!r} must be a parameter name or glob pattern (a non-empty string)")
        if value == SKIP:
            checked[key] = SKIP
            continue
        try:
            checked[key] = checks.ratio(value, f"{source}: entry {key!r}")
        except ValueError as exc:
            raise ValueError(f"{exc} or '{SKIP}'") from None
    return checked


def read_ratios_file(path):
    """Read a per-layer config file (.json, or .yaml/.yml) into the `ratios` dict the pruner takes."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yaml", ".yml"):
        raise ValueError(f"sparsity config {path}: expected a .json, .yaml or .yml file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"sparsity config {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    if ext == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also numbers past Python's digit limit, and deep nesting
            raise ValueError(f"sparsity config {path} is not valid JSON: {_reason(exc)}") from exc
    else:
        try:
            import yaml
        except ImportError as exc:
            raise ValueError(f"sparsity config {path}: reading YAML needs pyyaml (pip install pyyaml), or write the file as JSON") from exc
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise ValueError(f"sparsity config {path} is not valid YAML: {_reason(exc)}") from exc
    return check_ratios(data, f"sparsity config {path}")


def _reason(exc):
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def match_ratios(params, ratios=None, structural_names=None):
    """{parameter name: ratio or 'skip'} for the parameters a per-layer config names; the others keep the default.

    A key matches a parameter by variable name or by structural name (`structural_names` maps the
    former to the latter); an exact name beats a glob, and among globs the first listed wins. A key
    that matches none of `params` is an error naming it.
    """
    ratios = check_ratios(ratios or {})
    structural_names = structural_names or {}
    names = {p.name: [p.name] + ([structural_names[p.name]] if p.name in structural_names else []) for p in params}
    matched, unused = match_names(ratios, names)
    if unused:
        shown = ", ".join(f"{p.name} ({structural_names[p.name]})" if p.name in structural_names else p.name for p in params[:6])
        raise ValueError(
            f"sparsity config entry {unused[0]!r} matches no prunable parameter; prunable: {shown}"
            + (f" and {len(params) - 6} more" if len(params) > 6 else "")
        )
    return matched


def match_names(ratios, candidates):
    """({unit: ratio} for each unit one of whose `candidates[unit]` names a key of `ratios` names, [keys matching
    no unit]): an exact name beats a glob, and among globs the first listed wins."""
    matched, used = {}, set()
    for unit, names in candidates.items():
        exact = [key for key in ratios if key in names]
        globs = [key for key in ratios if any(fnmatch.fnmatchcase(n, key) for n in names)]
        used.update(exact, globs)
        if exact or globs:
            matched[unit] = ratios[(exact or globs)[0]]
    return matched, [key for key in ratios if key not in used]

"""Sensitivity analysis: how much each layer, pruned alone, costs in accuracy; and a per-layer config from it.

    python sensitivity.py --pretrained_model output/dense --output output/sensitivity
    python sensitivity.py --pretrained_model dense.pdparams --model mobilenet_v1 --scale 0.25 --data fashion_mnist \
        --output out/sens --granularity block 2 1 --target_sparsity 0.75 --max_drop 0.05

For every prunable parameter (or, with --granularity channel, every channel group) and every --ratios value,
that unit alone is pruned one-shot (no training) from the given weights, top-1 is measured on held-out samples
(the last --val_subset training images; not the test set), and the weights are restored. Writes
OUTPUT/sensitivity.csv and sensitivity.png; with --target_sparsity (or, for channel groups, --target_flops) also
OUTPUT/sparsity_config.json for train.py --sparsity_config.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import csv
import json
import os
import sys

from sparsity import checks, flops, groups, selection, static
from sparsity.graph import read as read_ops
from suite import cli, data
from suite.analysis import plots, sensitivity
from suite.artefacts import weights as weight_sources
from suite.artefacts.staging import staged_folder
from suite.deploy.export import check_output
from suite.training import loop
from suite.training.program import load_test_graph, resolve_spec
from suite.errors import ConfigError, run_cli

DEFAULT_RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def parse_args(argv=None):
    p = cli.Parser(description="Per-layer sensitivity to pruning, and a per-layer config proposed from it.")
    add = p.add_argument
    add("--pretrained_model", required=True, help="checkpoint folder, state-dict .pdparams or .sparse.npz (dense weights, usually)")
    add("--output", required=True, help="a new folder for sensitivity.csv, sensitivity.png, sparsity_config.json")
    add("--model", default=None, help="default: the model saved with the weights (needed for a state-dict file)")
    add("--scale", type=cli.positive_float, default=None)
    add("--data", default=None, help="default: the dataset saved with the weights")
    add("--data_dir", default=None)
    add("--image_size", type=cli.positive_int, default=None)
    add("--num_classes", type=cli.positive_int, default=None)
    add("--ratios", type=float, nargs="+", default=DEFAULT_RATIOS, help="ratios each layer is pruned to")
    add("--granularity", nargs="+", default=["element"], help="element | block M N | nm N M | channel (whole channel groups) | random [SEED]")
    add("--channel_score", default="l2", choices=["l1", "l2", "bn_scale", "fpgm"], help="channel: which channels of a group go first")
    add("--min_channels", type=int, default=1, help="channel: every layer keeps at least this many channels")
    add("--channel_multiple", type=int, default=8, help="channel: layers of 16+ channels keep a multiple of this")
    add("--target_flops", type=float, default=None, help="channel: propose per-group ratios keeping this fraction of the dense FLOPs")
    add("--prune_params_type", type=cli.optional_name, default=None, choices=[None, "conv1x1_only"])
    add("--val_subset", type=cli.positive_int, default=1000, help="held-out samples to measure top-1 on")
    add("--batch_size", type=cli.positive_int, default=256)
    add("--target_sparsity", type=float, default=None, help="propose per-layer ratios reaching this sparsity of the scanned set")
    add("--max_drop", type=float, default=0.05, help="with --target_sparsity: no layer's own top-1 drop above this (0.05 = 5 points)")
    add("--use_gpu", type=cli.str2bool, default=None)
    return p.parse_args(argv)


def check_flags(cfg):
    """Every flag checked before any work; returns the rule."""
    try:
        for ratio in cfg.ratios:
            checks.ratio(ratio, "--ratios")
        if cfg.target_sparsity is not None:
            checks.ratio(cfg.target_sparsity, "--target_sparsity")
        checks.threshold(cfg.max_drop, "--max_drop")
        rule = sensitivity.parse_granularity(cfg.granularity)
        checks.count(cfg.min_channels, "--min_channels", minimum=1)
        checks.count(cfg.channel_multiple, "--channel_multiple", minimum=1)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if rule is None and cfg.target_sparsity is not None:
        raise ConfigError("--granularity channel proposes per-group ratios for a FLOPs budget: pass --target_flops, not --target_sparsity")
    if rule is not None and cfg.target_flops is not None:
        raise ConfigError("--target_flops needs --granularity channel: a model's FLOPs fall only when whole channels go")
    if cfg.target_flops is not None and not 0.0 < cfg.target_flops < 1.0:
        raise ConfigError(f"--target_flops {cfg.target_flops} must be in (0, 1): the fraction of the dense model's FLOPs to keep")
    if cfg.ratios != sorted(set(cfg.ratios)):
        raise ConfigError(f"--ratios {' '.join(map(str, cfg.ratios))} must be ascending and distinct, e.g. 0.1 0.2 ... 0.9")
    check_output(cfg.output)
    return rule


def main(argv=None):
    cfg = parse_args(argv)
    rule = check_flags(cfg)
    place = cli.choose_place(cfg.use_gpu)
    source = weight_sources.read(cfg.pretrained_model)
    spec = resolve_spec(source.spec, {k: getattr(cfg, k) for k in ("model", "scale", "image_size", "num_classes", "data", "data_dir")})
    val = data.held_out(spec["data"], spec["data_dir"], spec["image_size"], cfg.val_subset)
    graph, exe, scope = load_test_graph(source, spec, place)
    batches = list(data.batches(val, cfg.batch_size, False, drop_last=False, num_workers=0))
    predict = loop.program_predictor(exe, graph.test, graph.logits, scope)
    layers = {var: key for key, var in graph.structure.items()}
    units, propose = channel_units(cfg, spec, graph, scope, layers) if rule is None else parameter_units(cfg, spec, graph, scope, layers, rule)
    dense = {name: static.read(scope, name) for name in graph.structure.values()}

    def accuracy(pruned):
        for name, value in pruned.items():
            static.write(scope, name, value, place)
        try:
            return loop.evaluate(predict, batches)["top1"]
        finally:
            for name in pruned:
                static.write(scope, name, dense[name], place)

    fixed_pattern = rule is not None and rule.fixed_pattern
    dense_top1 = loop.evaluate(predict, batches)["top1"]
    what = f"channel groups x {len(cfg.ratios)} ratio(s), channels scored by {cfg.channel_score}" if rule is None else \
        f"parameters x {1 if fixed_pattern else len(cfg.ratios)} ratio(s), {rule!r}"
    print(f"{spec['model']} x{spec['scale']} from {source.path}: dense top-1 {dense_top1:.4f} on {len(val)} held-out samples; "
          f"{len(units)} {what}", flush=True)
    points = sensitivity.scan(units, cfg.ratios, accuracy, dense_top1, fixed_pattern, progress=lambda line: print(line, flush=True),
                              kind="group" if rule is None else "parameter")
    try:
        proposed, prediction = propose(points)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    write_results(cfg, spec, points, dense_top1, proposed, prediction, layers, {u.name: u.size for u in units})


def parameter_units(cfg, spec, graph, scope, layers, rule):
    """The prunable parameters as scan units, and the proposal for --target_sparsity (weighted by size)."""
    try:
        params = selection.prunable_params(graph.test, cfg.prune_params_type)
        for p in params:
            rule.check(p.shape)
    except ValueError as exc:
        raise ConfigError(f"--granularity {' '.join(cfg.granularity)} on {spec['model']}: {exc}") from exc
    units = sensitivity.parameter_units([(p.name, layers.get(p.name, ""), static.read(scope, p.name)) for p in params], rule)

    def propose(points):
        if cfg.target_sparsity is None:
            return None, None
        proposed = sensitivity.propose(points, cfg.target_sparsity, cfg.max_drop)
        rounded = {name: round(ratio, 4) for name, ratio in proposed.items()}
        predicted = sensitivity.weighted_sparsity(rounded, {u.name: u.size for u in units})
        return proposed, f"for --target_sparsity {cfg.target_sparsity} (--max_drop {cfg.max_drop}): predicted sparsity of the scanned set {predicted:.4f}"

    return units, propose


def channel_units(cfg, spec, graph, scope, layers):
    """The prunable channel groups as scan units, and the proposal for --target_flops (drops per FLOP saved)."""
    try:
        ops = read_ops(graph.test)
        channels = groups.find_groups(ops)
    except groups.GroupError as exc:
        raise ConfigError(f"--granularity channel on {spec['model']}: {exc}") from exc
    arrays = {name: static.read(scope, name) for name in graph.structure.values()}
    units = sensitivity.group_units(channels.prunable, arrays, layers, cfg.channel_score, cfg.min_channels, cfg.channel_multiple)
    terms = flops.terms(ops, channels.spaces)

    def propose(points):
        if cfg.target_flops is None:
            return None, None
        proposed = sensitivity.propose_flops(points, channels.prunable, terms, cfg.target_flops, cfg.max_drop)
        index_of = {g.name: g for g in channels.prunable}
        kept = {index_of[n].index: round(index_of[n].channels * (1 - r)) for n, r in proposed.items()}
        predicted = flops.total(terms, kept) / flops.total(terms)
        return proposed, f"for --target_flops {cfg.target_flops} (--max_drop {cfg.max_drop}): predicted FLOPs {predicted:.4f} of the dense model's"

    return units, propose


def write_results(cfg, spec, points, dense_top1, proposed, prediction, layers, sizes):
    """sensitivity.csv, sensitivity.png and (with a proposal) sparsity_config.json, written to a staging folder then renamed."""
    with staged_folder(cfg.output, "--output") as staging:
        with open(os.path.join(staging, "sensitivity.csv"), "w", newline="") as f:
            table = csv.writer(f)
            table.writerow(["parameter", "layer", "size", "ratio", "top1", "drop"])
            table.writerow(["(dense)", "", sum(sizes.values()), 0.0, f"{dense_top1:.6f}", "0.000000"])
            for p in points:
                table.writerow([p.parameter, p.layer, p.size, p.ratio, f"{p.top1:.6f}", f"{p.drop:.6f}"])
        title = f"{spec['model']} x{spec['scale']} on {spec['data']}, {cfg.granularity[0]} pruning"
        png = plots.sensitivity_curves(points, dense_top1, os.path.join(staging, "sensitivity.png"), title, proposed,
                                       unit="channels" if cfg.granularity[0] == "channel" else "weights")
        if proposed is not None:
            config_file = {layers.get(name) or name: round(ratio, 4) for name, ratio in proposed.items()}
            with open(os.path.join(staging, "sparsity_config.json"), "w") as f:
                json.dump(config_file, f, indent=1)
    print(f"wrote {os.path.join(cfg.output, 'sensitivity.csv')}" + (f", {os.path.join(cfg.output, 'sensitivity.png')}" if png else " (no PNG: matplotlib is not installed)"))
    if proposed is not None:
        rounded = {name: round(ratio, 4) for name, ratio in proposed.items()}
        print(f"proposed per-layer ratios {prediction}")
        for name, ratio in sorted(rounded.items(), key=lambda item: -sizes[item[0]]):
            print(f"  {layers.get(name, name):<40} {sizes[name]:>9} {ratio:.4f}")
        print(f"train with it: python train.py ... --sparsity_config {os.path.join(cfg.output, 'sparsity_config.json')}")


if __name__ == "__main__":
    sys.exit(run_cli(main))

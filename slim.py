"""Slim a channel-pruned model: remove the pruned channels for real, so it is smaller and faster everywhere.

    python slim.py --pruned_model output/run --output output/run_slim

Reads a checkpoint of `train.py --granularity channel` (or any weights source whose zeros form whole channel
groups), builds the model with those channels removed from every member, checks on a batch that its outputs
equal the masked model's, prints parameters and FLOPs before and after, and writes a checkpoint folder that
evaluate.py evaluates, export.py exports and train.py --pretrained_model fine-tunes (the widths travel with it).
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import os
import sys

from sparsity import static
from suite import cli
from suite.artefacts import checkpoint, weights
from suite.deploy import slim
from suite.deploy.export import check_output
from suite.errors import run_cli
from suite.training.program import load_test_graph, resolve_spec


def parse_args(argv=None):
    p = cli.Parser(description="Remove the channels a channel-pruned model masks; write the smaller model.")
    add = p.add_argument
    add("--pruned_model", required=True, help="checkpoint folder (MODEL_PATH, .../latest, .../epoch_N), *.sparse.npz or a state-dict .pdparams")
    add("--output", required=True, help="a new folder for the slim model's checkpoint (never overwritten)")
    add("--model", default=None, help="default: the model saved with the weights (needed for a state-dict file)")
    add("--scale", type=cli.positive_float, default=None)
    add("--image_size", type=cli.positive_int, default=None)
    add("--num_classes", type=cli.positive_int, default=None)
    add("--data", default=None, help="the dataset the model was trained on (input channels, size); default: the saved one")
    add("--use_gpu", type=cli.str2bool, default=None)
    return p.parse_args(argv)


def main(argv=None):
    cfg = parse_args(argv)
    check_output(cfg.output)
    place = cli.choose_place(cfg.use_gpu)
    source = weights.read(cfg.pruned_model)
    spec = resolve_spec(source.spec, {k: getattr(cfg, k) for k in ("model", "scale", "image_size", "num_classes", "data")})
    graph, _, scope = load_test_graph(source, spec, place)
    result = slim.slim(graph, scope, spec, place)
    state = {
        "kind": "slim",
        "ir": "pir" if static.pir_enabled() else "legacy",
        "spec": result.spec,
        "structure": result.graph.structure,
        "targets": {},
        "slim": {"source": os.path.abspath(source.path), "removed": result.removed, "flops": [result.before.flops, result.after.flops],
                 "params": [result.before.params, result.after.params], "max_abs_diff": result.max_abs_diff},
    }
    checkpoint.write(cfg.output, result.graph.test, result.scope, state, "the slim model to")

    print(f"slimmed {spec['model']} x{spec['scale']} from {source.path}: {len(result.removed)} channel groups made narrower")
    for name, (kept, total) in result.removed.items():
        print(f"  {name:<44} {kept:>5} of {total:<5} channels kept")
    before, after = result.before, result.after
    print(f"parameters {before.params:,} -> {after.params:,} ({after.params / before.params:.3f}x)")
    print(f"FLOPs      {before.flops:,} -> {after.flops:,} ({after.flops / before.flops:.3f}x)")
    print(f"outputs equal the masked model's: max |difference| {result.max_abs_diff:.2e} ({result.relative_diff:.1e} of the largest logit)")
    print(f"wrote {cfg.output}; evaluate it: python evaluate.py --pruned_model {cfg.output}; "
          f"export it: python export.py --pruned_model {cfg.output} --output DIR; fine-tune it: python train.py --pretrained_model {cfg.output} ...")


if __name__ == "__main__":
    sys.exit(run_cli(main))

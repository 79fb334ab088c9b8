"""Evaluate a trained or exported sparse model: top-1/top-5, sparsity of the whole model and of the pruned set, per layer.

    python evaluate.py --pruned_model output/run                      # a checkpoint (MODEL_PATH, .../latest, .../epoch_N)
    python evaluate.py --pruned_model output/export                   # the Paddle inference model written by export.py
    python evaluate.py --pruned_model output/export/model.onnx        # ... its ONNX file (ONNX Runtime)
    python evaluate.py --pruned_model output/export/model.sparse.npz  # ... its compressed sparse file
    python evaluate.py --pruned_model dense.pdparams --model MobileNet --scale 0.25 --data fashion_mnist

Model and data flags default to the ones saved with the checkpoint or export.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import json
import os
import sys

from sparsity import report
from suite import cli, data
from suite.analysis import plots
from suite.analysis.evaluation import open_artefact
from suite.artefacts.staging import staged_file
from suite.training import loop
from suite.training.log import Eta
from suite.errors import WriteError, run_cli


def parse_args(argv=None):
    p = cli.Parser(description="Evaluate a checkpoint, an exported model or a weights file.")
    add = p.add_argument
    add("--pruned_model", required=True, help="checkpoint folder, export folder, model.onnx, *.sparse.npz or a state-dict .pdparams")
    add("--data", default=None, help="default: the dataset saved with the model")
    add("--data_dir", default=None)
    add("--model", default=None, help="default: the model saved with the checkpoint (needed for a state-dict file)")
    add("--scale", type=cli.positive_float, default=None)
    add("--image_size", type=cli.positive_int, default=None)
    add("--num_classes", type=cli.positive_int, default=None, help="default: the dataset's")
    add("--batch_size", type=cli.positive_int, default=256)
    add("--test_subset", type=cli.positive_int, default=None, help="evaluate only the first N test samples")
    add("--num_workers", type=cli.non_negative_int, default=2)
    add("--use_gpu", type=cli.str2bool, default=None)
    add("--json", default=None, help="also write the results to this JSON file")
    add("--plots", default=None, help="write PNGs to this folder: per-layer sparsity, weight histograms of the pruned layers")
    return p.parse_args(argv)


def evaluate(cfg):
    place = cli.choose_place(cfg.use_gpu)
    overrides = {k: getattr(cfg, k) for k in ("model", "scale", "image_size", "num_classes", "data", "data_dir")}
    model = open_artefact(cfg.pruned_model, overrides, place)
    spec = model.spec
    test_set = data.load_dataset(spec["data"], "test", spec["data_dir"], spec["image_size"], cfg.test_subset)
    batches = data.batches(test_set, cfg.batch_size, False, drop_last=False, num_workers=cfg.num_workers)
    accuracy = loop.evaluate(model.predict, batches, progress_lines(data.num_batches(test_set, cfg.batch_size, drop_last=False)))
    sparsity = report.summarize([report.count(name, values) for name, values in model.weights.items()], model.targets)
    for row in sparsity["layers"]:
        row["layer"] = model.layers.get(row["name"], "")
    plotted = write_plots(cfg.plots, model, sparsity["layers"]) if cfg.plots else []
    return {
        "path": model.path,
        "kind": model.kind,
        "model": spec["model"],
        "scale": spec["scale"],
        "data": spec["data"],
        "top1": accuracy["top1"],
        "top5": accuracy["top5"],
        "samples": accuracy["samples"],
        "model_sparsity": sparsity["model"],
        "pruned_sparsity": sparsity["pruned"],
        "flops": model.counts[0].flops,
        "params": model.counts[0].params,
        "dense_flops": model.counts[1].flops if model.counts[1] else None,
        "layers": sparsity["layers"],
        "plots": plotted,
    }


def progress_lines(total, parts=10):
    """progress(done) for loop.evaluate: a line on stderr (stdout is the report) every tenth of the batches, with an ETA."""
    eta = Eta(total)

    def progress(done):
        if done == total or done % max(1, total // parts) == 0:
            print(f"evaluated {done}/{total} batches, {eta.update(done)}", file=sys.stderr, flush=True)
    return progress


def write_plots(folder, model, rows):
    """layer_sparsity.png and weight_histograms.png of the model in FOLDER (each staged); returns their paths."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"could not make --plots {folder} ({exc.strerror or exc}); nothing was written there") from exc
    title = f"{model.spec['model']} x{model.spec['scale']}, {model.kind.replace('_', ' ')} {os.path.relpath(model.path)}"
    bars = plots.layer_sparsity(rows, os.path.join(folder, "layer_sparsity.png"), title)
    pruned = {model.layers.get(r["name"]) or r["name"]: model.weights[r["name"]] for r in rows if r["pruned"]}
    histograms = plots.weight_histograms(pruned, os.path.join(folder, "weight_histograms.png"), f"{title}: pruned weights")
    return [p for p in (bars, histograms) if p]


def print_report(result):
    print(f"{result['kind']} {result['path']}: {result['model']} x{result['scale']} on {result['data']} ({result['samples']} test samples)")
    print(f"top1 {result['top1']:.4f}  top5 {result['top5']:.4f}")
    print(f"sparsity: whole model {result['model_sparsity']:.4f}, pruned set {result['pruned_sparsity']:.4f}")
    slimmed = f" ({result['flops'] / result['dense_flops']:.3f}x the FLOPs of the model before slimming)" if result["dense_flops"] else ""
    print(f"FLOPs {result['flops']:,}, parameters {result['params']:,}{slimmed}")
    rows = result["layers"]
    name_width = max(len(r["name"]) for r in rows)
    layer_width = max(len(r["layer"]) for r in rows)
    print(f"{'parameter':<{name_width}}  {'layer':<{layer_width}}  {'shape':<18} {'size':>9} {'sparsity':>9} {'target':>7}  pruned")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        target = f"{r['target']:.4f}" if r["target"] is not None else "-"
        print(f"{r['name']:<{name_width}}  {r['layer']:<{layer_width}}  {shape:<18} {r['size']:>9} {r['sparsity']:>9.4f} {target:>7}  {'yes' if r['pruned'] else 'no'}")
    if result["plots"]:
        print("plots: " + ", ".join(result["plots"]))


def main(argv=None):
    cfg = parse_args(argv)
    result = evaluate(cfg)
    print_report(result)
    if cfg.plots and not result["plots"]:
        print("note: matplotlib is not installed, so --plots wrote nothing (pip install matplotlib)")
    if cfg.json:
        with staged_file(cfg.json, "--json") as staged, open(staged, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(run_cli(main))

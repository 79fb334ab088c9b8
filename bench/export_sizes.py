"""What a sparse model costs on disk: checkpoints and exported artefacts at 0/50/75/90% sparsity, side by side.

Trains MobileNetV1 x0.25 on a Fashion-MNIST subset for one epoch per row (dense, and magnitude pruning
to each ratio: the sizes depend on the sparsity, not on how well the short run learned), then exports
every row with export.py and measures: the checkpoint folder, the Paddle inference model's weights
(.pdiparams, zeros stored as zeros), its gzip, the ONNX file, the compressed sparse file, the INT8 ONNX model
(int8 weights, BatchNorm folded in) and the INT8 sparse file (that model packed as a sparse file).

    python bench/export_sizes.py [--model MobileNet --scale 0.25] [--ratios 0.5 0.75 0.9] [--out bench/results/sizes]
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def gzip_bytes(path):
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=9))


def run(*args):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MobileNet")
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    parser.add_argument("--train_subset", type=int, default=1280)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "sizes"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    common = ["--data", "fashion_mnist", "--model", args.model, "--scale", args.scale, "--train_subset", args.train_subset,
              "--test_subset", 500, "--batch_size", 64, "--num_epochs", 1, "--lr", 0.05, "--num_workers", 0, "--log_period", 1000]
    rows = []
    for ratio in [0.0, *args.ratios]:
        name = "dense" if ratio == 0 else f"{ratio:.0%}"
        run_dir, export_dir = os.path.join(args.out, name, "run"), os.path.join(args.out, name, "export")
        pruning = ["--pruning_strategy", "none"] if ratio == 0 else ["--pruning_strategy", "base", "--ratio", ratio]
        run("train.py", *common, *pruning, "--model_path", run_dir)
        run("export.py", "--pruned_model", run_dir, "--output", export_dir, "--format", "paddle", "onnx", "sparse", "onnx_int8", "sparse_int8")
        manifest = json.load(open(os.path.join(export_dir, "export.json")))
        state = json.load(open(os.path.join(run_dir, "latest", "state.json")))
        params = os.path.join(export_dir, "model.pdiparams")
        rows.append({
            "row": name,
            "pruned_sparsity": state["history"][-1]["pruned_sparsity"],
            "model_sparsity": state["history"][-1]["model_sparsity"],
            "dense_float32": manifest["dense_float32_bytes"],
            "checkpoint": folder_bytes(os.path.realpath(os.path.join(run_dir, "latest"))),
            "pdiparams": os.path.getsize(params),
            "pdiparams_gzip": gzip_bytes(params),
            "onnx": manifest["files"].get("model.onnx"),
            "sparse": manifest["files"]["model.sparse.npz"],
            "onnx_int8": manifest["files"]["model.int8.onnx"],
            "sparse_int8": manifest["files"]["model.int8.sparse.npz"],
        })
        print(f"{name}: done", flush=True)

    dense = rows[0]["dense_float32"]
    print(f"\n{args.model} x{args.scale}: {dense / 1e6:.3f} MB of float32 weights; sizes in MB (ratio to that)")
    print("| sparsity (pruned set / whole model) | checkpoint | inference model .pdiparams | gzip of it | ONNX | sparse file | INT8 ONNX | INT8 sparse file |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k] / 1e6:.3f} ({r[k] / dense:.3f}x)" if r[k] is not None else "n/a"
                 for k in ("checkpoint", "pdiparams", "pdiparams_gzip", "onnx", "sparse", "onnx_int8", "sparse_int8")]
        print(f"| {r['row']} ({r['pruned_sparsity']:.1%} / {r['model_sparsity']:.1%}) | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "sizes.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

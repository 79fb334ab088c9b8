"""Which calibration suits INT8 export: MinMax, entropy and percentile side by side on one trained model.

Exports the model once per method with export.py (--format onnx onnx_int8), then runs the float ONNX model and
each INT8 model in ONNX Runtime on held-out training images (the last --held_out of the training set, which runs
on a --train_subset below it never train on: where to choose) and on the test set (what to report).

    python bench/int8_calibration.py --pruned_model output/gmp75 [--calibration_images 256] [--out bench/results/int8_calibration]
"""
import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")  # as run.sh sets: MKL's fast path on AMD CPUs; read when Paddle loads

import argparse
import json
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import suite  # noqa: F401, I001 - before paddle (see suite/__init__.py)
import paddle

from suite import data
from suite.deploy import export, quantize, runtimes
from suite.training import loop


def export_with(method, args, out):
    command = [sys.executable, "export.py", "--pruned_model", args.pruned_model, "--output", out, "--format", "onnx", "onnx_int8",
               "--calibration_images", str(args.calibration_images), "--calibration_method", method]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return json.load(open(os.path.join(out, export.MANIFEST)))


def accuracy(path, dataset):
    predict = runtimes.onnx_runtime(path, paddle.CPUPlace())
    return loop.evaluate(predict, data.batches(dataset, 256, False, drop_last=False))["top1"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruned_model", required=True)
    parser.add_argument("--calibration_images", type=int, default=quantize.DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--methods", nargs="+", default=list(quantize.CALIBRATION_METHODS))
    parser.add_argument("--held_out", type=int, default=5000)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "int8_calibration"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    manifests = {method: export_with(method, args, os.path.join(args.out, method)) for method in args.methods}
    spec = next(iter(manifests.values()))["spec"]
    sets = {"held-out": data.held_out(spec["data"], spec["data_dir"], spec["image_size"], args.held_out),
            "test": data.load_dataset(spec["data"], "test", spec["data_dir"], spec["image_size"])}
    first = os.path.join(args.out, args.methods[0], export.ONNX_FILE)
    rows = {"float32": {name: accuracy(first, dataset) for name, dataset in sets.items()}}
    for method in args.methods:
        path = os.path.join(args.out, method, quantize.VARIANT_FILES["onnx_int8"])
        rows[method] = {name: accuracy(path, dataset) for name, dataset in sets.items()}
        rows[method]["check"] = manifests[method]["checks"]["onnx_int8"]
    print(f"{args.pruned_model}: {spec['model']} x{spec['scale']}, calibrated on {args.calibration_images} training images")
    print(f"| model | top-1 held-out ({args.held_out}) | vs float | top-1 test | vs float | int8 sparsity (float) |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        held, test = row["held-out"], row["test"]
        versus = [f"{100 * (row[s] - rows['float32'][s]):+.2f}" if name != "float32" else "" for s in ("held-out", "test")]
        sparsity = f"{row['check']['int8_sparsity']:.4f} ({row['check']['float_sparsity']:.4f})" if "check" in row else ""
        print(f"| {name} | {held:.2%} | {versus[0]} | {test:.2%} | {versus[1]} | {sparsity} |")
    with open(os.path.join(args.out, "calibration.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""INT8 against float32 latency at 1 thread, batch 1: MobileNetV1 x1.0 and ResNet-50 at 224, dense and
magnitude-pruned to 75% and 90%, in ONNX Runtime, OpenVINO and DeepSparse 1.8 (the last two when installed).

Each model is exported the way users export (suite/deploy/export.py: float ONNX; suite/deploy/quantize.py:
onnx_int8 and onnx_int8_deepsparse), with random weights (speed does not depend on their values; calibration on
random images). ONNX Runtime and OpenVINO models are timed round-robin in this process; DeepSparse lives in its
own environment, so its models are timed round-robin in a child process against a float ONNX Runtime reference
timed there too, and its figures are ratios within that process. DeepSparse's licence allows evaluation only.

    python bench/int8_speed.py [--models mobilenet_v1 resnet50] [--ratios 0.75 0.9] [--rounds 5] [--iterations 5]
        [--deepsparse_python .venv-deepsparse/bin/python] [--out bench/results/int8_speed]

The functions (export_rows, onnx_runtime_predictor, openvino_predictor, round_robin, deepsparse_times) are what a
wider speed benchmark calls for its INT8 rows.
"""
import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")  # as run.sh sets: MKL's fast path on AMD CPUs; read when Paddle loads
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # DeepSparse: no usage reports

import argparse
import json
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import suite  # noqa: F401, I001 - before paddle (see suite/__init__.py)
import numpy as np

SIZE = 224
CALIBRATION = 16  # random images: enough to set ranges for a speed measurement
DEEPSPARSE_CHILD = os.path.join(ROOT, "bench", "deepsparse_child.py")


def export_rows(model, ratios, folder, scale=1.0):
    """{row: {"float32": path, "int8": path, "int8_deepsparse": path}} for the dense model and each pruning ratio."""
    import paddle

    from sparsity import UnstructuredPruner
    from suite.deploy import export, quantize
    from suite.training import program

    rows = {}
    calibration = np.random.default_rng(1).standard_normal((CALIBRATION, 3, SIZE, SIZE)).astype("float32")
    for ratio in [0.0, *ratios]:
        row = "dense" if ratio == 0 else f"u{round(ratio * 100)}"
        out = os.path.join(folder, f"{model}_{row}")
        if not os.path.isfile(os.path.join(out, export.ONNX_FILE)):
            paddle.enable_static()
            graph = program.build_test(model, scale, SIZE, 3, 1000)
            exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
            spec = {"model": model, "scale": scale, "image_size": SIZE, "in_channels": 3, "num_classes": 1000, "data": "imagenet", "data_dir": None}
            with paddle.static.scope_guard(scope):  # the inference model is saved from the current scope
                exe.run(graph.startup)
                if ratio:
                    UnstructuredPruner(graph.test, "ratio", ratio=ratio, scope=scope, startup_program=graph.startup).step()
                export.export(graph, exe, scope, spec, ["onnx"], out, "random weights", {})
        paths = {"float32": os.path.join(out, export.ONNX_FILE)}
        for variant, name in quantize.VARIANT_FILES.items():
            paths[variant.replace("onnx_", "")] = path = os.path.join(out, name)
            if not os.path.isfile(path):
                quantize.quantize(paths["float32"], path, calibration, variant)
        rows[row] = paths
    return rows


def onnx_runtime_predictor(path, threads=1):
    """run(image) with ONNX Runtime on THREADS threads, all graph optimizations (it fuses QDQ pairs into int8 kernels)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})[0]


def openvino_predictor(path, threads=1):
    """run(image) with OpenVINO's CPU plugin on THREADS threads (latency hint), or None when OpenVINO is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda image: request.infer([image])[compiled.output(0)]


def round_robin(predictors, image, rounds, iterations):
    """{name: median ms} of each predictor on IMAGE, taking turns (ITERATIONS runs each per round) so load hits all alike."""
    times = {name: [] for name in predictors}
    for predict in predictors.values():
        predict(image)  # warm-up: first runs allocate and pick kernels
    for _ in range(rounds):
        for name, predict in predictors.items():
            for _ in range(iterations):
                start = time.perf_counter()
                predict(image)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def deepsparse_times(python, reference, models, rounds, iterations):
    """{"ms": {name: median ms}, "native": {...}} of MODELS ({name: ONNX path}) in DeepSparse, run by PYTHON (its own
    environment) in a child process that also times the float ONNX model REFERENCE in ONNX Runtime; None without it."""
    if not python or not os.path.isfile(python):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as job:
        json.dump({"reference": reference, "models": models, "input_shape": [1, 3, SIZE, SIZE], "rounds": rounds, "iterations": iterations}, job)
    try:
        result = subprocess.run([python, DEEPSPARSE_CHILD, job.name], capture_output=True, text=True, env={**os.environ, "NM_DISABLE_ANALYTICS": "1"})
    finally:
        os.remove(job.name)
    if result.returncode != 0:
        sys.exit(f"DeepSparse child failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v1", "resnet50"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.9])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--deepsparse_python", default=os.path.join(ROOT, ".venv-deepsparse", "bin", "python"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "int8_speed"))
    args = parser.parse_args()
    image = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype("float32")
    results = {}
    for model in args.models:
        rows = export_rows(model, args.ratios, args.out)
        predictors = {}
        for row, paths in rows.items():
            for precision in ("float32", "int8"):
                predictors[f"onnxruntime {row} {precision}"] = onnx_runtime_predictor(paths[precision])
                openvino = openvino_predictor(paths[precision])
                if openvino:
                    predictors[f"openvino {row} {precision}"] = openvino
        ms = round_robin(predictors, image, args.rounds, args.iterations)
        deepsparse = deepsparse_times(args.deepsparse_python, rows["dense"]["float32"],
                                      {f"deepsparse {row} {p}": paths[key] for row, paths in rows.items()
                                       for p, key in (("float32", "float32"), ("int8", "int8_deepsparse"))}, args.rounds, args.iterations)
        results[model] = {"ms": ms, "deepsparse": deepsparse}
        print_table(model, ms, deepsparse)
    with open(os.path.join(args.out, "int8_speed.json"), "w") as f:
        json.dump(results, f, indent=1)


def print_table(model, ms, deepsparse):
    """Latency and its ratio to the dense float32 model in the same runtime and to ONNX Runtime's dense float32."""
    reference = ms["onnxruntime dense float32"]
    print(f"\n{model} at {SIZE}, 1 thread, batch 1: median ms (x of the same runtime's dense float32; x of ONNX Runtime's dense float32)")
    for name, value in ms.items():
        runtime = name.split()[0]
        print(f"  {name:<32} {value:8.2f} ms  {value / ms[f'{runtime} dense float32']:5.2f}x  {value / reference:5.2f}x")
    if deepsparse:
        ds_reference = deepsparse["ms"]["onnxruntime float32 reference"]
        print(f"  DeepSparse {deepsparse['deepsparse_version']} (evaluation licence), in its own process; x of ONNX Runtime's dense float32 timed there:")
        for name, value in deepsparse["ms"].items():
            native = deepsparse["native"].get(name)
            print(f"  {name:<32} {value:8.2f} ms  {value / ds_reference:5.2f}x" + (f"  native {native:.0%}" if native is not None else ""))


if __name__ == "__main__":
    main()

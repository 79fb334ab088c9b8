"""Inference latency of dense, channel-slimmed, unstructured-sparse and INT8 models, measured side by side in one process.

For each model (MobileNetV1 x1.0 and ResNet-50 at 224 x 224 by default, random weights: speed does not depend
on the values), the variants are:
  dense         the model as built
  slimK         channels removed to keep K of the dense FLOPs, chosen by the suite's own selection (ChannelPruner
                one-shot with target_flops=K, then slim.py's slimming), widths kept to multiples of 8
  uniformK      the same FLOPs with the same ratio removed from every group (local_sparsity: PaddleSlim's uniform
                filter pruning, the reference a global choice has to beat)
  uR            unstructured: a fraction R of every prunable weight zeroed (magnitude), shapes unchanged
Each is exported with export.py's code (Paddle inference model and ONNX, both checked against the program) and
timed in Paddle Inference (CPU, oneDNN) and ONNX Runtime for every batch size and thread count asked. The
--int8 variants are also quantized as export.py --format onnx_int8 does (calibrated on random images) and timed
in ONNX Runtime, and in OpenVINO when it is installed (`pip install openvino`), float32 beside INT8.
Everything of one (batch, threads) is loaded together and timed round-robin (one run of each per round, in a
rotating order), so drift on a shared machine hits all alike; no runtime's idle threads spin between runs (Paddle's
OpenMP and ONNX Runtime's pool would otherwise keep a core busy for the next model in the round); reported are the median latency, its ratio to the
same runtime's dense float32 model and the ratio of the minima.

DeepSparse 1.8.0, the one x86 runtime that skips unstructured zeros, needs its own environment (Python <= 3.11,
numpy<2; `python3.11 -m venv .venv-deepsparse && NM_DISABLE_ANALYTICS=1 .venv-deepsparse/bin/pip install
deepsparse==1.8.0`; its licence allows evaluation only): when --deepsparse_python exists, the --int8 variants
(float32 and its INT8 variant) are timed at batch 1, 1 thread in a child process of that environment
(bench/deepsparse_child.py) against a float ONNX Runtime reference timed there too, so its figures are ratios
within that process.

    python bench/inference_speed.py [--models mobilenet_v1,resnet50] [--batches 1 32] [--threads 1 2] [--out DIR]

Prints the tables; writes results.json and latency_vs_flops.png in --out (default bench/results/inference_speed).
Exports are kept in --out and reused by the next run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # Paddle Inference's OpenMP threads sleep when idle
os.environ.setdefault("KMP_BLOCKTIME", "0")
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # DeepSparse: no usage reports
import suite  # noqa: E402,F401,I001 - before paddle (see suite/__init__.py)
import numpy as np  # noqa: E402
import paddle  # noqa: E402

from sparsity import flops, masks, rules, selection, static  # noqa: E402
from sparsity.channel_pruner import ChannelPruner  # noqa: E402
from suite.deploy import export, quantize, runtimes, slim  # noqa: E402
from suite.training.program import build_test  # noqa: E402

SIZE = 224
CALIBRATION = 16  # random images: enough to set the INT8 ranges for a speed measurement
DEEPSPARSE_CHILD = os.path.join(ROOT, "bench", "deepsparse_child.py")


def spec_of(model):
    return {"model": model, "scale": 1.0, "image_size": SIZE, "in_channels": 3, "num_classes": 1000, "data": "imagenet",
            "data_dir": None, "widths": None}


def dense_graph(model, seed=0):
    """The model's test program with random weights in a scope of its own."""
    graph = build_test(model, 1.0, SIZE, 3, 1000)
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    graph.startup.random_seed = seed
    exe.run(graph.startup, scope=scope)
    return graph, exe, scope


def make_variant(model, make, folder):
    """Export one variant of `model` into FOLDER (Paddle inference model + ONNX, checked); returns its FLOPs."""
    graph, exe, scope = dense_graph(model)
    spec = spec_of(model)
    if make and make[0] in ("select", "uniform"):
        pruner = ChannelPruner(graph.test, target_flops=make[1], local_sparsity=make[0] == "uniform", scope=scope,
                               startup_program=graph.startup, structural_names={v: k for k, v in graph.structure.items()})
        pruner.step()
        result = slim.slim(graph, scope, spec, paddle.CPUPlace())
        graph, scope, spec = result.graph, result.scope, result.spec
    elif make:
        for p in selection.prunable_params(graph.test):
            static.write(scope, p.name, masks.prune_once(static.read(scope, p.name), rules.Element(), make[1]), paddle.CPUPlace())
    with paddle.static.scope_guard(scope):  # the inference model is saved from the current scope
        export.export(graph, exe, scope, spec, ["paddle", "onnx"], folder, f"random {model}", {})
    return flops.count_program(graph.test).flops


def make_variants(model, keep_flops, sparsities, int8, out):
    """{variant: {"folder", "flops", "int8": {precision: ONNX path}}} for `model`, exported into OUT/model/variant
    (reused when already there); the variants named in `int8` also get their INT8 files."""
    found = {}
    calibration = np.random.default_rng(1).standard_normal((CALIBRATION, 3, SIZE, SIZE)).astype("float32")
    for name, make in [("dense", None), *[(f"slim{k:g}", ("select", k)) for k in keep_flops],
                       *[(f"uniform{k:g}", ("uniform", k)) for k in keep_flops], *[(f"u{r:g}", ("unstructured", r)) for r in sparsities]]:
        folder = os.path.join(out, model, name)
        count_file = os.path.join(out, model, f"{name}.flops")
        if not os.path.exists(count_file):
            count = make_variant(model, make, folder)
            with open(count_file, "w") as f:
                f.write(str(count))
            print(f"{model} {name}: {count / 1e6:.1f} MFLOPs, exported to {folder}", flush=True)
        onnx = os.path.join(folder, export.ONNX_FILE)
        variant = {"folder": folder, "flops": int(open(count_file).read()), "onnx": onnx, "int8": {}}
        if name in int8:
            for fmt, file in quantize.VARIANT_FILES.items():
                path = os.path.join(folder, file)
                if not os.path.isfile(path):
                    quantize.quantize(onnx, path, calibration, fmt)
                variant["int8"][fmt] = path
        found[name] = variant
    return found


def paddle_predictor(folder, threads):
    """run(images) with Paddle Inference (CPU, oneDNN) on THREADS threads, the inference model in FOLDER."""
    model_file, params_file = runtimes.inference_model_files(folder)
    config = paddle.inference.Config(model_file, params_file)
    config.disable_gpu()
    (getattr(config, "enable_onednn", None) or config.enable_mkldnn)()
    config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    feed = predictor.get_input_handle(predictor.get_input_names()[0])

    def run(images):
        feed.reshape(list(images.shape))
        feed.copy_from_cpu(images)
        predictor.run()

    return run


def onnx_predictor(path, threads):
    """run(images) with ONNX Runtime on THREADS threads, all graph optimizations (it fuses QDQ pairs into int8 kernels)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})


def openvino_predictor(path, threads):
    """run(images) with OpenVINO's CPU plugin on THREADS threads (latency hint); None when OpenVINO is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda images: request.infer([images])


PREDICTORS = {"paddle": paddle_predictor, "onnxruntime": onnx_predictor, "openvino": openvino_predictor}


def time_round_robin(runners, images, seconds, min_rounds=5, max_rounds=60):
    """{name: [seconds per run]}: every runner run once per round, in a rotating order, after a warm-up round; as
    many rounds as fit in `seconds` (within min_rounds .. max_rounds)."""
    names = list(runners)
    for name in names:
        runners[name](images)
    began = time.perf_counter()
    for name in names:
        runners[name](images)
    per_round = time.perf_counter() - began
    rounds = int(min(max_rounds, max(min_rounds, seconds / max(per_round, 1e-9))))
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name](images)
            times[name].append(time.perf_counter() - start)
    return times


def runners_of(variants, runtimes_asked, threads):
    """{(runtime, variant, precision): run} of everything to time together: every variant in float32, the INT8 ones
    also in INT8 (ONNX Runtime, OpenVINO); OpenVINO only when installed, and only for the float32 / INT8 pairs."""
    found = {}
    for name, v in variants.items():
        for runtime in runtimes_asked:
            if runtime == "paddle":
                files = {"float32": v["folder"]}
            elif runtime == "openvino" and not v["int8"]:
                continue
            else:
                files = {"float32": v["onnx"], **({"int8": v["int8"]["onnx_int8"]} if v["int8"] else {})}
            for precision, path in files.items():
                run = PREDICTORS[runtime](path, threads)
                if run is not None:
                    found[(runtime, name, precision)] = run
    return found


def measure(model, variants, runtimes_asked, batch, threads, seconds):
    runners = runners_of(variants, runtimes_asked, threads)
    images = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype("float32")
    times = time_round_robin(runners, images, seconds)
    dense_flops = variants["dense"]["flops"]
    rows = []
    for (runtime, name, precision), t in times.items():
        dense = times[(runtime, "dense", "float32")]
        rows.append({"model": model, "variant": name, "precision": precision, "runtime": runtime, "batch": batch, "threads": threads,
                     "flops_ratio": variants[name]["flops"] / dense_flops, "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t),
                     "runs": len(t), "median_ratio": statistics.median(t) / statistics.median(dense), "min_ratio": min(t) / min(dense)})
    return rows


def deepsparse_rows(model, variants, python, rounds=5, iterations=5):
    """Rows of the INT8 variants' float32 and DeepSparse INT8 files timed in DeepSparse (batch 1, 1 thread) in a child
    process of its own environment, as ratios to the float ONNX Runtime reference timed there; [] without it."""
    if not python or not os.path.isfile(python):
        return []
    models = {f"{name} {precision}": path for name, v in variants.items() if v["int8"]
              for precision, path in (("float32", v["onnx"]), ("int8", v["int8"]["onnx_int8_deepsparse"]))}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as job:
        json.dump({"reference": variants["dense"]["onnx"], "models": models, "input_shape": [1, 3, SIZE, SIZE], "rounds": rounds,
                   "iterations": iterations}, job)
    try:
        result = subprocess.run([python, DEEPSPARSE_CHILD, job.name], capture_output=True, text=True)
    finally:
        os.remove(job.name)
    if result.returncode != 0:
        sys.exit(f"DeepSparse child failed:\n{result.stderr[-2000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    reference = found["ms"]["onnxruntime float32 reference"]
    return [{"model": model, "variant": key.split()[0], "precision": key.split()[1], "runtime": f"deepsparse {found['deepsparse_version']}",
             "batch": 1, "threads": 1, "flops_ratio": variants[key.split()[0]]["flops"] / variants["dense"]["flops"], "median_ms": ms,
             "median_ratio": ms / reference, "native": found["native"][key]} for key, ms in found["ms"].items() if key in models]


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["precision"] == "float32" and r["runtime"] in ("paddle", "onnxruntime") and r["threads"] == 1]
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for runtime, color in (("paddle", "tab:blue"), ("onnxruntime", "tab:orange")):
            name = "Paddle Inference" if runtime == "paddle" else "ONNX Runtime"
            for batch in sorted({r["batch"] for r in rows if r["model"] == model}):
                mine = [r for r in rows if (r["model"], r["runtime"], r["batch"]) == (model, runtime, batch)]
                kinds = (("slim", "o"), ("uniform", "s")) if batch == 1 else (("slim", "o"),)  # uniform at batch 1 only: fewer lines
                for kind, marker in kinds:
                    line = sorted([r for r in mine if r["variant"].startswith(kind) or r["variant"] == "dense"], key=lambda r: r["flops_ratio"])
                    ax.plot([r["flops_ratio"] for r in line], [r["median_ratio"] for r in line], "-" if batch == 1 else ":", color=color,
                            alpha=0.95 if kind == "slim" else 0.4, marker=marker, markersize=5, label=f"{name}, {kind}, batch {batch}")
                for r in mine:
                    if batch == 1 and r["variant"].startswith("u") and not r["variant"].startswith("uniform"):
                        ax.plot(r["flops_ratio"], r["median_ratio"], "x", color=color, markersize=8)
        ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle="--")
        ax.set_title(f"{model} at {SIZE}x{SIZE}, float32, 1 thread", fontsize=10)
        ax.set_xlabel("FLOPs relative to dense")
        ax.set_ylabel("median latency relative to dense, same runtime")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.25)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("o slim (the suite's global choice), s uniform (one ratio per group), x unstructured 75% / 90% (dense FLOPs, "
                 "batch 1); dashed grey: latency proportional to FLOPs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_tables(results):
    print("\nSlimming (float32): median latency, ratio to the same runtime's dense model (median; ratio of minima)")
    print("| model | variant | FLOPs vs dense | runtime | batch | threads | dense median ms | median ratio | ratio of minima |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["precision"] == "float32" and r["runtime"] in ("paddle", "onnxruntime"):
            dense = next(d for d in results if (d["model"], d["runtime"], d["batch"], d["threads"], d["variant"], d["precision"])
                         == (r["model"], r["runtime"], r["batch"], r["threads"], "dense", "float32"))
            print(f"| {r['model']} | {r['variant']} | {r['flops_ratio']:.3f} | {r['runtime']} | {r['batch']} | {r['threads']} | "
                  f"{dense['median_ms']:.2f} | {r['median_ratio']:.3f} | {r['min_ratio']:.3f} |")
    int8 = [r for r in results if r["precision"] == "int8" or r["runtime"] in ("openvino",) or r["runtime"].startswith("deepsparse")]
    if not int8:
        return
    print("\nINT8 beside float32, batch 1, 1 thread: median latency as a ratio to the same runtime's dense float32 model "
          "(DeepSparse: to ONNX Runtime's dense float32 timed in its own process)")
    print("| model | variant | precision | runtime | median ms | ratio to dense float32 |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if r["batch"] == 1 and r["threads"] == 1 and (r in int8 or (r["runtime"] == "onnxruntime" and any(
                i["variant"] == r["variant"] and i["model"] == r["model"] for i in int8))):
            native = f" ({r['native']:.0%} native)" if "native" in r else ""
            print(f"| {r['model']} | {r['variant']} | {r['precision']} | {r['runtime']}{native} | {r['median_ms']:.2f} | {r['median_ratio']:.3f} |")


def print_summary(results):
    """The README's two tables: slimming (float32) as median ratios per runtime, batch and threads; INT8 at batch 1,
    1 thread as ratios to ONNX Runtime's dense float32 model timed in the same process."""
    found = {(r["model"], r["variant"], r["precision"], r["runtime"], r["batch"], r["threads"]): r for r in results}
    settings = sorted({(r["batch"], r["threads"]) for r in results if r["runtime"] in ("paddle", "onnxruntime")}, key=lambda bt: (bt[1], bt[0]))
    columns = [(runtime, b, t) for b, t in settings for runtime in ("paddle", "onnxruntime")]
    names = {"paddle": "PI", "onnxruntime": "ORT"}
    print("\nSlimming, float32: median latency relative to the same runtime's dense model (PI: Paddle Inference, oneDNN; "
          "ORT: ONNX Runtime)")
    print("| model | variant | FLOPs | " + " | ".join(f"{names[rt]} b{b} t{t}" for rt, b, t in columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for model, variant in dict.fromkeys((r["model"], r["variant"]) for r in results if r["precision"] == "float32" and r["runtime"] == "paddle"):
        cells = [found.get((model, variant, "float32", rt, b, t)) for rt, b, t in columns]
        flops_ratio = next(c for c in cells if c)["flops_ratio"]
        print(f"| {model} | {variant} | {flops_ratio:.3f} | " + " | ".join(f"{c['median_ratio']:.2f}" if c else "" for c in cells) + " |")
    int8 = list(dict.fromkeys((r["model"], r["variant"]) for r in results if r["precision"] == "int8" and r["batch"] == r["threads"] == 1))
    if not int8:
        return
    engines = [(rt, p) for rt in ["onnxruntime", "openvino", *sorted({r["runtime"] for r in results if r["runtime"].startswith("deepsparse")})]
               for p in ("float32", "int8") if any(r["runtime"] == rt for r in results)]
    print("\nINT8, batch 1, 1 thread: median latency relative to ONNX Runtime's dense float32 model in the same process "
          "(DeepSparse: in its own process)")
    print("| model | variant | " + " | ".join(f"{rt} {p}" for rt, p in engines) + " |")
    print("|---|---|" + "---|" * len(engines))
    for model, variant in int8:
        cells = []
        for rt, p in engines:
            r = found.get((model, variant, p, rt, 1, 1))
            if r is None:
                cells.append("")
            elif rt.startswith("deepsparse"):
                cells.append(f"{r['median_ratio']:.2f}")
            else:
                cells.append(f"{r['median_ms'] / found[(model, 'dense', 'float32', 'onnxruntime', 1, 1)]['median_ms']:.2f}")
        print(f"| {model} | {variant} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mobilenet_v1,resnet50")
    parser.add_argument("--flops", type=float, nargs="+", default=[0.75, 0.5, 0.25], help="FLOPs kept by the slim variants")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.75, 0.9], help="unstructured variants")
    parser.add_argument("--int8", nargs="*", default=["dense", "u0.75", "u0.9", "slim0.5"], help="variants also timed in INT8")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runtimes", nargs="+", default=list(PREDICTORS), choices=list(PREDICTORS))
    parser.add_argument("--seconds", type=float, default=30.0, help="timing budget per (batch, threads), split into rounds")
    parser.add_argument("--deepsparse_python", default=os.path.join(ROOT, ".venv-deepsparse", "bin", "python"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "inference_speed"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    paddle.enable_static()
    results = []
    for model in args.models.split(","):
        variants = make_variants(model, args.flops, args.sparsity, args.int8, args.out)
        for threads in args.threads:
            for batch in args.batches:
                rows = measure(model, variants, args.runtimes, batch, threads, args.seconds)
                results += rows
                print(f"{model} batch {batch} {threads} thread(s): " + ", ".join(
                    f"{r['runtime']} {r['variant']} {r['precision']} {r['median_ratio']:.3f}" for r in rows if r["variant"] != "dense"), flush=True)
        results += deepsparse_rows(model, variants, args.deepsparse_python)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "latency_vs_flops.png"))
    print_tables(results)
    print_summary(results)
    print(f"\nwrote {args.out}/results.json and latency_vs_flops.png")


if __name__ == "__main__":
    main()

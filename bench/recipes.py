"""Accuracy, sparsity and size of each pruning pattern, from a dense pretrained start, under one budget.

The recipe users run: train MobileNetV1 x0.25 dense on Fashion-MNIST (the first 40,000 training
images), save its state dict, then prune and fine-tune from it with each pattern for the same number of
epochs, evaluate on the 10,000 test images and export the compressed sparse file. The dense row gets
the same extra epochs without pruning; GMP 75% is also run from scratch for the whole budget (dense
epochs + fine-tune epochs). The per-layer row uses the config sensitivity.py proposes for 75%.

The slimming rows (SLIM_ROWS) prune whole channel groups to a FLOPs budget, are slimmed by slim.py and
evaluated as the smaller model itself; beside them PaddleSlim 2.6.0's L1NormFilterPruner and FPGMFilterPruner
at the same FLOPs (one uniform ratio, bench/paddleslim_filter.py in .venv-paddleslim) from the same start, on
the same data, for the same epochs. Their ONNX exports are timed round-robin in one process against the dense
model (ONNX Runtime, 1 thread), a second table and slim_accuracy_vs_flops.png.

    python bench/recipes.py [--rows dense,gmp75,slim50,...] [--jobs 2] [--out bench/results/recipes]

Prints a Markdown table, writes results.json and accuracy_vs_sparsity.png in --out. Rows already
finished in --out are reused (train.py --resume), so an interrupted run continues. About 7 minutes of
CPU per row here; with --jobs 2 two rows share the 2 cores.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from suite.artefacts import safe_pickle  # noqa: E402

DATA = ["--data", "fashion_mnist", "--model", "mobilenet_v1", "--scale", "0.25",
        "--batch_size", "128", "--lr_strategy", "cosine_decay", "--l2_decay", "4e-5", "--log_period", "100"]
GMP = ["--pruning_strategy", "gmp", "--initial_ratio", "0.15", "--stable_epochs", "0", "--pruning_epochs", "1", "--pruning_steps", "30"]
BASE = ["--pruning_strategy", "base"]

# name -> (pattern for the plot, flags); "{threshold}" and "{config}" are filled in from the dense model
ROWS = {
    "dense": ("dense", ["--pruning_strategy", "none"]),
    "base55": ("element, one-shot", [*BASE, "--ratio", "0.55"]),
    "base75": ("element, one-shot", [*BASE, "--ratio", "0.75"]),
    "base90": ("element, one-shot", [*BASE, "--ratio", "0.9"]),
    "gmp75": ("element, GMP", [*GMP, "--ratio", "0.75"]),
    "gmp90": ("element, GMP", [*GMP, "--ratio", "0.9"]),
    "gmp75_local": ("element, GMP, each layer 75%", [*GMP, "--ratio", "0.75", "--local_sparsity", "True"]),
    "gmp75_conv1x1": ("1x1 convs only, GMP", [*GMP, "--ratio", "0.75", "--prune_params_type", "conv1x1_only"]),
    "gmp75_block2x1": ("2x1 blocks, GMP", [*GMP, "--ratio", "0.75", "--sparse_block", "2", "1"]),
    "nm2of4": ("N:M 2:4", [*BASE, "--pruning_mode", "nm", "--nm_pattern", "2", "4"]),
    "threshold50": ("threshold", [*BASE, "--pruning_mode", "threshold", "--threshold", "{threshold}"]),
    "sens75": ("per-layer (sensitivity.py), GMP", [*GMP, "--ratio", "0.75", "--sparsity_config", "{config}"]),
    "gmp75_scratch": ("element, GMP from scratch", ["--pruning_strategy", "gmp", "--initial_ratio", "0.15", "--ratio", "0.75", "--pruning_steps", "30"]),
}


# name -> (what it is, flags of train.py) or (what it is, ("paddleslim", method, FLOPs kept))
SLIM_ROWS = {
    "slim30": ("channel groups, l2, GMP, -30% FLOPs", [*GMP, "--granularity", "channel", "--target_flops", "0.7"]),
    "slim50": ("channel groups, l2, GMP, -50% FLOPs", [*GMP, "--granularity", "channel", "--target_flops", "0.5"]),
    "slim50_fpgm": ("channel groups, FPGM, GMP, -50% FLOPs", [*GMP, "--granularity", "channel", "--target_flops", "0.5", "--channel_score", "fpgm"]),
    "slim30_bn": ("channel groups, BN scale + L1 (Network Slimming), GMP, -30% FLOPs",
                  [*GMP, "--granularity", "channel", "--target_flops", "0.7", "--channel_score", "bn_scale", "--bn_l1", "1e-4"]),
    "slim50_bn": ("channel groups, BN scale + L1 (Network Slimming), GMP, -50% FLOPs",
                  [*GMP, "--granularity", "channel", "--target_flops", "0.5", "--channel_score", "bn_scale", "--bn_l1", "1e-4"]),
    "slim50_uniform": ("channel groups, one ratio per group, GMP, -50% FLOPs", [*GMP, "--granularity", "channel", "--target_flops", "0.5", "--local_sparsity", "True"]),
    "slim30_oneshot": ("channel groups, l2, one-shot, -30% FLOPs", [*BASE, "--granularity", "channel", "--target_flops", "0.7"]),
    "slim50_oneshot": ("channel groups, l2, one-shot, -50% FLOPs", [*BASE, "--granularity", "channel", "--target_flops", "0.5"]),
    "paddleslim_l1_30": ("PaddleSlim L1NormFilterPruner, uniform, -30% FLOPs", ("paddleslim", "l1", 0.7)),
    "paddleslim_l1_50": ("PaddleSlim L1NormFilterPruner, uniform, -50% FLOPs", ("paddleslim", "l1", 0.5)),
    "paddleslim_fpgm_50": ("PaddleSlim FPGMFilterPruner, uniform, -50% FLOPs", ("paddleslim", "fpgm", 0.5)),
}
PADDLESLIM_PYTHON = os.environ.get("PADDLESLIM_PYTHON", os.path.join(ROOT, ".venv-paddleslim", "bin", "python"))


def run(log, *args, python=sys.executable):
    """Run a script of the suite with its output in LOG; stop the bench with the log's tail if it fails."""
    with open(log, "a") as f:
        result = subprocess.run([python, *map(str, args)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, args[:2]))} failed (exit {result.returncode}); see {log}:\n" + open(log).read()[-3000:])


def finished(model_path, epochs):
    state = os.path.join(model_path, "latest", "state.json")
    return os.path.exists(state) and json.load(open(state))["epoch"] == epochs - 1


def prepare_dense(args, names):
    """The dense start: train, export its state dict, and what the threshold and per-layer rows need from it."""
    dense_run = os.path.join(args.out, "dense_start")
    log = os.path.join(args.out, "dense_start.log")
    if not finished(dense_run, args.dense_epochs):
        run(log, "train.py", *DATA, "--train_subset", args.train_subset, "--pruning_strategy", "none", "--num_epochs", args.dense_epochs,
            "--lr", args.dense_lr, "--model_path", dense_run, "--resume")
    state_dict = os.path.join(args.out, "dense_start_export", "model.pdparams")
    if not os.path.exists(state_dict):
        run(log, "export.py", "--pruned_model", dense_run, "--output", os.path.dirname(state_dict), "--format", "state_dict")
    sensitivity = os.path.join(args.out, "sensitivity")
    if "sens75" in names and not os.path.exists(os.path.join(sensitivity, "sparsity_config.json")):
        run(log, "sensitivity.py", "--pretrained_model", state_dict, "--output", sensitivity, "--target_sparsity", "0.75", "--max_drop", "0.1")
    weights = [np.abs(a).ravel() for a in safe_pickle.load_arrays(state_dict).values() if a.ndim > 1]
    threshold = float(np.quantile(np.concatenate(weights), 0.5))  # |w| below which half the prunable weights lie
    return state_dict, {"threshold": f"{threshold:.6g}", "config": os.path.join(sensitivity, "sparsity_config.json")}


def train_row(name, args, state_dict, fill):
    pattern, flags = ROWS[name]
    flags = [f.format(**fill) for f in flags]
    model_path = os.path.join(args.out, name)
    log = os.path.join(args.out, f"{name}.log")
    scratch = name.endswith("_scratch")
    epochs = args.dense_epochs + args.epochs if scratch else args.epochs
    timing = os.path.join(args.out, f"{name}.seconds")
    if not finished(model_path, epochs):
        thirds = str(max(1, epochs // 3))  # from scratch: a third dense, a third of ramp, the rest at the target
        schedule = ["--stable_epochs", thirds, "--pruning_epochs", thirds] if scratch else []
        start = ["--lr", args.dense_lr] if scratch else ["--pretrained_model", state_dict, "--lr", args.lr]
        began = time.time()
        run(log, "train.py", *DATA, "--train_subset", args.train_subset, *flags, *schedule, *start, "--num_epochs", epochs, "--model_path", model_path, "--resume")
        with open(timing, "w") as f:
            f.write(f"{time.time() - began:.1f}")
    seconds = float(open(timing).read()) if os.path.exists(timing) else float("nan")
    export_dir = os.path.join(args.out, f"{name}_export")
    if not os.path.exists(export_dir):
        run(log, "export.py", "--pruned_model", model_path, "--output", export_dir, "--format", "sparse")
    manifest = json.load(open(os.path.join(export_dir, "export.json")))
    final = json.load(open(os.path.join(model_path, "latest", "state.json")))["history"][-1]
    strategy, own = next(((label, flags[len(common):]) for label, common in (("GMP", GMP), ("base", BASE)) if flags[: len(common)] == common), ("", flags))
    return {
        "row": name, "pattern": pattern, "strategy": strategy, "flags": " ".join(own), "epochs": epochs, "from": "scratch" if scratch else "dense start",
        "top1": final["top1"], "top5": final["top5"], "pruned_sparsity": final["pruned_sparsity"], "model_sparsity": final["model_sparsity"],
        "minutes": seconds / 60, "sparse_bytes": manifest["files"]["model.sparse.npz"], "dense_bytes": manifest["dense_float32_bytes"],
    }


def slim_row(name, args, state_dict, fill):
    """Train (or run PaddleSlim) to the row's FLOPs, slim, evaluate the slim model itself, export it to ONNX."""
    label, how = SLIM_ROWS[name]
    log = os.path.join(args.out, f"{name}.log")
    slim_dir = os.path.join(args.out, f"{name}_slim")
    began = time.time()
    if how[0] == "paddleslim":
        artefact = os.path.join(slim_dir, "model.pdparams")
        if not os.path.exists(artefact):
            run(log, "bench/paddleslim_filter.py", "--state_dict", state_dict, "--method", how[1], "--target_flops", how[2], "--epochs", args.epochs,
                "--lr", args.lr, "--train_subset", args.train_subset, "--out", slim_dir, python=PADDLESLIM_PYTHON)
        flags = f"{how[1]}, target FLOPs {how[2]}"
    else:
        model_path = os.path.join(args.out, name)
        if not finished(model_path, args.epochs):
            run(log, "train.py", *DATA, "--train_subset", args.train_subset, *how, "--pretrained_model", state_dict, "--lr", args.lr,
                "--num_epochs", args.epochs, "--model_path", model_path, "--resume")
        if not os.path.exists(slim_dir):
            run(log, "slim.py", "--pruned_model", model_path, "--output", slim_dir)
        artefact = slim_dir
        flags = " ".join(how[len(GMP) if how[: len(GMP)] == GMP else len(BASE):])
    seconds = time.time() - began
    evaluation = os.path.join(args.out, f"{name}_eval.json")
    if not os.path.exists(evaluation):
        run(log, "evaluate.py", "--pruned_model", artefact, "--json", evaluation)
    onnx_dir = os.path.join(args.out, f"{name}_onnx")
    if not os.path.exists(onnx_dir):
        run(log, "export.py", "--pruned_model", artefact, "--output", onnx_dir, "--format", "onnx")
    result = json.load(open(evaluation))
    return {"row": name, "pattern": label, "flags": flags, "top1": result["top1"], "top5": result["top5"], "flops": result["flops"],
            "params": result["params"], "dense_flops": result["dense_flops"], "onnx": os.path.join(onnx_dir, "model.onnx"), "minutes": seconds / 60}


def dense_onnx(args):
    """The dense row's ONNX export and FLOPs, the reference of the slimming table."""
    onnx_dir = os.path.join(args.out, "dense_onnx")
    log = os.path.join(args.out, "dense.log")
    if not os.path.exists(onnx_dir):
        run(log, "export.py", "--pruned_model", os.path.join(args.out, "dense"), "--output", onnx_dir, "--format", "onnx")
    return os.path.join(onnx_dir, "model.onnx")


def onnx_latency(files, batch, seconds=20.0):
    """{name: median latency ratio to 'dense'} of ONNX files timed round-robin in this process (ONNX Runtime, 1 thread)."""
    from inference_speed import onnx_predictor, time_round_robin

    runners = {name: onnx_predictor(path, 1) for name, path in files.items()}
    images = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype("float32")
    times = time_round_robin(runners, images, seconds, min_rounds=50, max_rounds=2000)
    dense = float(np.median(times["dense"]))
    return {name: float(np.median(t)) / dense for name, t in times.items()}


def plot_slim(rows, dense, path):
    """Test top-1 of each slim model against its FLOPs relative to dense; the suite's rows and PaddleSlim's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    if dense:
        ax.axhline(100 * dense["top1"], color="gray", linestyle="--", label="dense (the same epochs, no pruning)")
    labels = []  # (x, y) of the points labelled so far: a label near another one goes below it
    for r in sorted(rows, key=lambda r: -r["top1"]):
        ours = not r["row"].startswith("paddleslim")
        x, y = r["flops"] / r["dense_flops"], 100 * r["top1"]
        ax.plot(x, y, "o" if ours else "s", markersize=9, color="tab:blue" if ours else "tab:orange")
        offset = 4 - 11 * sum(abs(x - lx) < 0.03 and abs(y - ly) < 0.25 for lx, ly in labels)
        labels.append((x, y))
        ax.annotate(r["row"], (x, y), textcoords="offset points", xytext=(8, offset), fontsize=8)
    ax.plot([], [], "o", color="tab:blue", label="this suite: channel groups, slimmed")
    ax.plot([], [], "s", color="tab:orange", label="PaddleSlim 2.6.0 filter pruners, uniform ratio")
    ax.set_xlabel("FLOPs relative to the dense model")
    ax.set_ylabel("test top-1 (%) of the slim model")
    ax.set_title("MobileNetV1 x0.25 on Fashion-MNIST: channels removed from a dense start, the same budget per row", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(rows, path):
    """Test top-1 against pruned-set sparsity, a line per pattern; rows far below the rest are listed, not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = next((r for r in rows if r["row"] == "dense"), None)
    best = max(r["top1"] for r in rows)
    shown = [r for r in rows if r["row"] != "dense" and r["top1"] >= best - 0.15]
    hidden = [r for r in rows if r["row"] != "dense" and r not in shown]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    if dense:
        ax.axhline(100 * dense["top1"], color="gray", linestyle="--", label=f"dense ({dense['epochs']} more epochs)")
    patterns = {}
    for r in shown:
        patterns.setdefault(r["pattern"], []).append(r)
    colors = plt.get_cmap("tab20").colors
    for i, (pattern, members) in enumerate(sorted(patterns.items())):
        members.sort(key=lambda r: r["pruned_sparsity"])
        ax.plot([100 * r["pruned_sparsity"] for r in members], [100 * r["top1"] for r in members], marker="osD^v<>ph*XP"[i % 11],
                markersize=8, color=colors[(2 * i) % 20], linestyle="-" if len(members) > 1 else "none", label=pattern)
    low = min(100 * r["top1"] for r in shown + ([dense] if dense else []))
    ax.set_ylim(low - 1.5, 100 * best + 1.0)
    ax.set_xlabel("sparsity of the pruned set (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("MobileNetV1 x0.25 on Fashion-MNIST: pruned from a dense start, the same budget per row", fontsize=10)
    ax.grid(alpha=0.3)
    if hidden:
        ax.text(0.01, 0.02, "below the chart: " + "; ".join(f"{r['pattern']} {100 * r['top1']:.1f}%" for r in hidden),
                transform=ax.transAxes, fontsize=8, color="tab:red")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join([*ROWS, *SLIM_ROWS]), help=f"comma-separated, from {', '.join([*ROWS, *SLIM_ROWS])}")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at the same time")
    parser.add_argument("--train_subset", type=int, default=40000, help="the first N training images (the rest stay held out)")
    parser.add_argument("--dense_epochs", type=int, default=3)
    parser.add_argument("--dense_lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of every row from the dense start")
    parser.add_argument("--lr", type=float, default=0.05, help="fine-tuning LR (cosine) from the dense start")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "recipes"))
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS and n not in SLIM_ROWS]
    if unknown:
        sys.exit(f"unknown row(s) {unknown}; choose from {', '.join([*ROWS, *SLIM_ROWS])}")
    os.makedirs(args.out, exist_ok=True)
    state_dict, fill = prepare_dense(args, names)
    with ThreadPoolExecutor(args.jobs) as pool:  # every row queued at once, so no core waits for the slowest of a kind
        futures = {name: pool.submit(train_row if name in ROWS else slim_row, name, args, state_dict, fill) for name in names}
        rows = [futures[n].result() for n in names if n in ROWS]
        slim_rows = [futures[n].result() for n in names if n in SLIM_ROWS]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows + slim_rows, f, indent=1)
    if slim_rows:
        report_slim(args, rows, slim_rows)
    if not rows:
        return
    plot(rows, os.path.join(args.out, "accuracy_vs_sparsity.png"))
    print(f"\nMobileNetV1 x0.25, Fashion-MNIST (first {args.train_subset:,} training images; test: the 10,000 test images); "
          f"dense start: {args.dense_epochs} epochs at LR {args.dense_lr}; every row: {args.epochs} epochs at LR {args.lr} from it "
          f"(from scratch: {args.dense_epochs + args.epochs} epochs at LR {args.dense_lr}); GMP: `{' '.join(GMP[2:])}`; base: pruned at the first step; "
          f"{args.jobs} rows at a time on this machine")
    print("| row | pattern | strategy | flags | from | top-1 | top-5 | sparsity, pruned set | sparsity, whole model | epochs | wall time | sparse file vs dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        flags = f"`{r['flags']}`" if r["flags"] else ""
        print(f"| {r['row']} | {r['pattern']} | {r['strategy']} | {flags} | {r['from']} | {r['top1']:.2%} | {r['top5']:.2%} | {r['pruned_sparsity']:.2%} | "
              f"{r['model_sparsity']:.2%} | {r['epochs']} | {r['minutes']:.1f} min | {r['sparse_bytes'] / r['dense_bytes']:.3f}x |")


def report_slim(args, rows, slim_rows):
    """The slimming table: top-1 of each slim model, FLOPs, parameters, ONNX Runtime latency against dense."""
    dense = next((r for r in rows if r["row"] == "dense"), None)
    files = {"dense": dense_onnx(args), **{r["row"]: r["onnx"] for r in slim_rows}} if dense else {}
    latency = {batch: onnx_latency(files, batch) for batch in (1, 32)} if dense else {}
    plot_slim(slim_rows, dense, os.path.join(args.out, "slim_accuracy_vs_flops.png"))
    print(f"\nSlimming, MobileNetV1 x0.25 on Fashion-MNIST: from the same dense start, {args.epochs} epochs at LR {args.lr} each; "
          "top-1 of the slim model itself (slim.py, or PaddleSlim's pruned model); latency: ONNX Runtime, 1 thread, "
          "every model timed round-robin in one process, median ratio to the dense model")
    print("| row | what | top-1 | vs dense | top-5 | FLOPs vs dense | parameters | latency batch 1 | latency batch 32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in slim_rows:
        versus = f"{100 * (r['top1'] - dense['top1']):+.2f}" if dense else ""
        times = " | ".join(f"{latency[b][r['row']]:.2f}x" if latency else "" for b in (1, 32))
        print(f"| {r['row']} | {r['pattern']} | {r['top1']:.2%} | {versus} | {r['top5']:.2%} | {r['flops'] / r['dense_flops']:.3f} | {r['params']:,} | {times} |")


if __name__ == "__main__":
    main()

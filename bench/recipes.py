"""Accuracy, sparsity and size of each pruning pattern, from a dense pretrained start, under one budget.

The recipe users run: train MobileNetV1 x0.25 dense on Fashion-MNIST (the first 40,000 training
images), save its state dict, then prune and fine-tune from it with each pattern for the same number of
epochs, evaluate on the 10,000 test images and export the compressed sparse file. The dense row gets
the same extra epochs without pruning; GMP 75% is also run from scratch for the whole budget (dense
epochs + fine-tune epochs). The per-layer row uses the config sensitivity.py proposes for 75%.

    python bench/recipes.py [--rows dense,gmp75,...] [--jobs 2] [--out bench/results/recipes]

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
    "channel50": ("channels (filters), GMP, each layer 50%", [*GMP, "--ratio", "0.5", "--granularity", "channel", "--local_sparsity", "True"]),
    "channel50_global": ("channels (filters), GMP, one global threshold", [*GMP, "--ratio", "0.5", "--granularity", "channel"]),
    "threshold50": ("threshold", [*BASE, "--pruning_mode", "threshold", "--threshold", "{threshold}"]),
    "sens75": ("per-layer (sensitivity.py), GMP", [*GMP, "--ratio", "0.75", "--sparsity_config", "{config}"]),
    "gmp75_scratch": ("element, GMP from scratch", ["--pruning_strategy", "gmp", "--initial_ratio", "0.15", "--ratio", "0.75", "--pruning_steps", "30"]),
}


def run(log, *args):
    """Run a script of the suite with its output in LOG; stop the bench with the log's tail if it fails."""
    with open(log, "a") as f:
        result = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, args[:2]))} failed (exit {result.returncode}); see {log}:\n" + open(log).read()[-3000:])


def finished(model_path, epochs):
    state = os.path.join(model_path, "latest", "state.json")
    return os.path.exists(state) and json.load(open(state))["epoch"] == epochs - 1


def prepare_dense(args):
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
    if not os.path.exists(os.path.join(sensitivity, "sparsity_config.json")):
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
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at the same time")
    parser.add_argument("--train_subset", type=int, default=40000, help="the first N training images (the rest stay held out)")
    parser.add_argument("--dense_epochs", type=int, default=3)
    parser.add_argument("--dense_lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of every row from the dense start")
    parser.add_argument("--lr", type=float, default=0.05, help="fine-tuning LR (cosine) from the dense start")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "recipes"))
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    os.makedirs(args.out, exist_ok=True)
    state_dict, fill = prepare_dense(args)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda name: train_row(name, args, state_dict, fill), names))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
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


if __name__ == "__main__":
    main()

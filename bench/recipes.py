"""Accuracy at a given sparsity: the main job's recipe, dense and with other pruning settings, side by side.

Each recipe is a train.py run with the flags of `bash run.sh` (MobileNetV1 x0.25, Fashion-MNIST,
the first 40,000 training images x 3 epochs, cosine LR 0.1) plus its own pruning flags; then a table of test top-1/top-5,
sparsity and wall time. About 15 minutes per recipe on 2 CPU cores.

    python bench/recipes.py [--recipes dense,gmp75,...] [--out bench/results]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = [
    "--data", "fashion_mnist", "--model", "MobileNet", "--scale", "0.25", "--train_subset", "40000", "--batch_size", "128", "--num_epochs", "3", "--lr", "0.1", "--lr_strategy", "cosine_decay", "--l2_decay", "4e-5",
    "--log_period", "100",
]
GMP = ["--pruning_strategy", "gmp", "--initial_ratio", "0.15", "--stable_epochs", "1", "--pruning_epochs", "1",
       "--tunning_epochs", "1", "--pruning_steps", "30"]
RECIPES = {
    "dense": ["--pruning_strategy", "none"],
    "gmp75": [*GMP, "--ratio", "0.75"],
    "gmp75_conv1x1": [*GMP, "--ratio", "0.75", "--prune_params_type", "conv1x1_only"],
    "gmp75_block2x1": [*GMP, "--ratio", "0.75", "--sparse_block", "2", "1"],
    "gmp90": [*GMP, "--ratio", "0.9"],
    "nm2of4": ["--pruning_strategy", "base", "--pruning_mode", "nm", "--nm_pattern", "2", "4"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="dense,gmp75", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()
    rows = []
    for name in args.recipes.split(","):
        model_path = os.path.join(args.out, name)
        start = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *BASE, *RECIPES[name], "--model_path", model_path, "--resume"], check=True)
        final = json.load(open(os.path.join(model_path, "latest", "state.json")))["history"][-1]
        rows.append((name, final, time.time() - start))
    print("\n| recipe | flags | test top-1 | test top-5 | sparsity, pruned set | sparsity, all parameters | wall time |")
    print("|---|---|---|---|---|---|---|")
    for name, final, seconds in rows:
        print(f"| {name} | `{' '.join(RECIPES[name])}` | {final['top1']:.2%} | {final['top5']:.2%} | "
              f"{final['pruned_sparsity']:.2%} | {final['model_sparsity']:.2%} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()

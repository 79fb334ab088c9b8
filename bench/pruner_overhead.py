"""What the pruner costs: training throughput with and without it, and mask recomputes against model size.

1. Throughput: MobileNetV1 x0.25 at 28x28, batch 128, the same program built twice (same seed), once with
   GMPUnstructuredPruner at 75% (masks already computed: the steady state), once without; timed in
   interleaved rounds so both see the same machine load. Target: with / without >= 0.97.
2. Scale: for LeNet, MobileNetV1 x0.25, MobileNetV1 x1.0 and ResNet-50, a mask recompute on the device
   (the pruner's own, dense weights and 75% already zero) against a PaddleSlim-style host recompute (copy
   every weight to NumPy, np.sort of |w|, write masks and weights back), and the steady-state step();
   medians, side by side in one run; a table and a log-log PNG.

    python bench/pruner_overhead.py [--rounds 6] [--steps 10] [--repeats 7] [--out bench/results/overhead]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import suite  # noqa: E402,F401,I001 - before paddle (see suite/__init__.py)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.utils import unique_name  # noqa: E402

import models  # noqa: E402
from sparsity import GMPUnstructuredPruner, UnstructuredPruner, static  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE_MODELS = [("LeNet", "lenet", 1.0, 28, 1), ("MobileNetV1 x0.25", "mobilenet_v1", 0.25, 28, 1),
                ("MobileNetV1 x1.0", "mobilenet_v1", 1.0, 28, 1), ("ResNet-50", "resnet50", 1.0, 32, 3)]


def median_ms(fn, repeats, prepare=lambda: None):
    times = []
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def training_program(with_pruner, place):
    """MobileNetV1 x0.25 training program (+ pruner), startup run in a scope of its own."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    startup.random_seed = 1
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope), paddle.static.program_guard(main, startup), unique_name.guard():
        x = paddle.static.data("x", [None, 1, 28, 28], "float32")
        y = paddle.static.data("y", [None, 1], "int64")
        net = models.create("mobilenet_v1", num_classes=10, in_channels=1, scale=0.25, image_size=28)
        loss = paddle.nn.functional.cross_entropy(net(x), y).mean()
        paddle.optimizer.Momentum(0.05, momentum=0.9).minimize(loss)
        exe = paddle.static.Executor(place)
        exe.run(startup)
        pruner = None
        if with_pruner:
            configs = {"stable_iterations": 0, "pruning_iterations": 1, "tunning_iterations": 0, "pruning_steps": 1}
            pruner = GMPUnstructuredPruner(main, ratio=0.75, scope=scope, place=place, startup_program=startup, configs=configs)
    return main, scope, exe, loss, pruner


def throughput(args, place):
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((128, 1, 28, 28)).astype("float32"), "y": rng.integers(0, 10, (128, 1)).astype("int64")}
    runs = {name: training_program(name == "with pruner", place) for name in ("without pruner", "with pruner")}
    for main, scope, exe, loss, pruner in runs.values():
        for _ in range(3):  # warm-up; the pruner computes its masks at the first step and attaches its masking
            exe.run(main, feed=feed, fetch_list=[loss], scope=scope)
            if pruner:
                pruner.step()
    seconds = {name: 0.0 for name in runs}
    for _ in range(args.rounds):
        for name, (main, scope, exe, loss, pruner) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                exe.run(main, feed=feed, fetch_list=[loss], scope=scope)
                if pruner:
                    pruner.step()
            seconds[name] += time.perf_counter() - start
    images = args.rounds * args.steps * 128
    rates = {name: images / s for name, s in seconds.items()}
    sparsity = runs["with pruner"][4].sparsity()["pruned"]
    print(f"\n1. Training throughput, MobileNetV1 x0.25 28x28 batch 128 ({args.rounds} interleaved rounds of {args.steps} steps; pruned set {sparsity:.1%} zero)")
    for name, rate in rates.items():
        print(f"   {name:<16} {rate:8.1f} images/s")
    print(f"   with / without: {rates['with pruner'] / rates['without pruner']:.3f} (target >= 0.97)")


def host_recompute(scope, pruner, place, ratio):
    """What a host-side pruner does per recompute: gather |w|, np.sort, threshold, set masks and weights."""
    weights = [static.read(scope, p.name) for p in pruner.params]
    flat = np.sort(np.abs(np.concatenate([w.ravel() for w in weights])))
    threshold = flat[int(round(ratio * flat.size)) - 1]
    for p, w in zip(pruner.params, weights):
        mask = (np.abs(w) > threshold).astype("float32")
        static.write(scope, pruner.masks[p.name], mask, place)
        static.write(scope, p.name, w * mask, place)


def scale(args, place):
    rows = []
    for label, name, width, size, channels in SCALE_MODELS:
        main, startup = paddle.static.Program(), paddle.static.Program()
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope), paddle.static.program_guard(main, startup), unique_name.guard():
            x = paddle.static.data("x", [None, channels, size, size], "float32")
            models.create(name, num_classes=10, in_channels=channels, scale=width, image_size=size)(x)
            paddle.static.Executor(place).run(startup)
            pruner = UnstructuredPruner(main, "ratio", ratio=0.75, scope=scope, place=place, startup_program=startup)
            dense = {p.name: static.read(scope, p.name) for p in pruner.params}

            def restore():
                for key, value in dense.items():
                    static.write(scope, key, value, place)

            repeats = max(3, args.repeats // 2) if name == "resnet50" else args.repeats
            pruner.update_masks()  # builds the recompute program once, outside the timing
            row = {"model": label, "weights": sum(v.size for v in dense.values())}
            row["device_dense"] = median_ms(pruner.update_masks, repeats, restore)
            row["host_dense"] = median_ms(lambda: host_recompute(scope, pruner, place, 0.75), repeats, restore)
            pruner.update_masks()
            row["device_sparse"] = median_ms(pruner.update_masks, repeats)
            row["host_sparse"] = median_ms(lambda: host_recompute(scope, pruner, place, 0.75), repeats)
            pruner.step()
            row["step"] = median_ms(pruner.step, repeats * 100)
        rows.append(row)
        print(f"   {label}: done", flush=True)
    print("\n2. Mask recompute against model size (medians, ms; 75% target)")
    print("| model | prunable weights | device, dense | host np.sort, dense | device, 75% zero | host np.sort, 75% zero | steady step() |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['weights']:,} | {r['device_dense']:.1f} | {r['host_dense']:.1f} | {r['device_sparse']:.1f} | {r['host_sparse']:.1f} | {r['step']:.4f} |")
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [r["weights"] for r in rows]
    for key, label, style in (("device_dense", "device recompute, dense", "o-"), ("device_sparse", "device recompute, 75% zero", "o--"),
                              ("host_dense", "host np.sort, dense", "s-"), ("host_sparse", "host np.sort, 75% zero", "s--"),
                              ("step", "steady-state step()", "^:")):
        ax.plot(sizes, [max(r[key], 1e-4) for r in rows], style, label=label)
    for r in rows:
        ax.annotate(r["model"], (r["weights"], r["host_dense"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(sizes) / 2, max(sizes) * 4)  # room for the model labels
    ax.set_xlabel("prunable weights")
    ax.set_ylabel("milliseconds (median)")
    ax.set_title("Mask recompute cost on this CPU (Paddle 3.3.1)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "overhead"))
    args = parser.parse_args()
    paddle.enable_static()
    place = static.default_place()
    print(f"IR: {'PIR' if static.pir_enabled() else 'legacy'}; place: {place}; Paddle {paddle.__version__}")
    throughput(args, place)
    rows = scale(args, place)
    os.makedirs(args.out, exist_ok=True)
    plot(rows, os.path.join(args.out, "recompute_vs_size.png"))
    print(f"\nplot: {os.path.join(args.out, 'recompute_vs_size.png')}")


if __name__ == "__main__":
    main()

"""Cost of the pruner on MobileNetV1 x1.0 (28x28, batch 128): training step, step(), mask recompute.

Compares, on the same weights and in one run, the device-side recompute with a PaddleSlim-style host
recompute (copy every weight to NumPy, sort |w|, set masks and weights back).

    python bench/pruner_overhead.py [--repeats 20] [--train_steps 3]
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

import models  # noqa: E402
from sparsity import UnstructuredPruner, static  # noqa: E402


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def host_recompute(scope, pruner, place):
    """What a host-side pruner does per recompute: gather |w|, np.sort, threshold, set masks and weights."""
    weights = [static.read(scope, p.name) for p in pruner.params]
    flat = np.sort(np.abs(np.concatenate([w.ravel() for w in weights])))
    k = int(round(pruner.ratio * flat.size))
    threshold = flat[k - 1]
    for p, w in zip(pruner.params, weights):
        mask = (np.abs(w) > threshold).astype("float32")
        static.write(scope, pruner.masks[p.name].name, mask, place)
        static.write(scope, p.name, w * mask, place)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train_steps", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.75)
    args = parser.parse_args()

    paddle.enable_static()
    place = static.default_place()
    main_prog, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main_prog, startup):
        x = paddle.static.data("x", [None, 1, 28, 28], "float32")
        y = paddle.static.data("y", [None, 1], "int64")
        net = models.create("MobileNet", num_classes=10, in_channels=1, image_size=28)
        loss = paddle.nn.functional.cross_entropy(net(x), y).mean()
        paddle.optimizer.Momentum(0.1, momentum=0.9).minimize(loss)
    exe = paddle.static.Executor(place)
    exe.run(startup)
    scope = paddle.static.global_scope()
    pruner = UnstructuredPruner(main_prog, "ratio", ratio=args.ratio, place=place, startup_program=startup)
    n = sum(int(np.prod(p.shape)) for p in pruner.params)
    print(f"IR: {'PIR' if static.pir_enabled() else 'legacy'}; place: {place}; "
          f"{n:,} prunable weights in {len(pruner.params)} tensors; ratio {args.ratio}")

    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((128, 1, 28, 28)).astype("float32"),
            "y": rng.integers(0, 10, (128, 1)).astype("int64")}
    dense = {p.name: static.read(scope, p.name) for p in pruner.params}

    def restore_dense():
        for name, value in dense.items():
            static.write(scope, name, value, place)

    def timed(fn, prepare):
        times = []
        for _ in range(args.repeats):
            prepare()
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    recompute_dense = timed(pruner.update_masks, restore_dense)
    host_dense = timed(lambda: host_recompute(scope, pruner, place), restore_dense)
    pruner.update_masks()  # weights now 75% zero, as at every later GMP step
    recompute_sparse = median_ms(pruner.update_masks, args.repeats)
    host_sparse = median_ms(lambda: host_recompute(scope, pruner, place), args.repeats)
    pruner.step()
    steady = median_ms(pruner.step, args.repeats * 50)
    exe.run(main_prog, feed=feed, fetch_list=[loss])  # warm-up
    train = median_ms(lambda: exe.run(main_prog, feed=feed, fetch_list=[loss]), args.train_steps)

    print(f"{'what':<44}{'median ms':>12}")
    rows = [
        ("training step (batch 128, in-graph masking)", train),
        ("pruner.step(), steady state", steady),
        ("mask recompute on device, dense weights", recompute_dense),
        ("host recompute (np.sort), dense weights", host_dense),
        (f"mask recompute on device, {args.ratio:.0%} zero", recompute_sparse),
        (f"host recompute (np.sort), {args.ratio:.0%} zero", host_sparse),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>12.3f}")
    print(f"steady step() / training step: {steady / train:.5%} (target <= 1%)")
    print(f"host / device recompute: {host_dense / recompute_dense:.1f}x dense, "
          f"{host_sparse / recompute_sparse:.1f}x at {args.ratio:.0%} zero (target >= 10x)")


if __name__ == "__main__":
    main()

"""Training speed of MobileNetV1 x0.25 at 28x28 (grey, batch 128, static graph): our old model vs paddle.vision's.

Four variants in one process, timed in interleaved rounds so a busy machine slows them alike:
the old own MobileNetV1 (read from git at --old_commit, before models/ moved to paddle.vision) and the
registry's paddle.vision one, each with its standard stride-2 stem and with a stride-1 stem. The stride-1
rows re-check why MobileNets keep their standard strides on small inputs (models/adapt.py).

    python bench/model_speed.py [--old_commit 639bb17] [--rounds 5] [--steps 10]
"""
import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")  # as run.sh sets: MKL's fast path on AMD CPUs; read when Paddle loads

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import suite  # noqa: F401, I001 - before paddle (see suite/__init__.py)
import numpy as np
import paddle

import models
from models import adapt
from sparsity.ops import pir_enabled

BATCH, SIZE, SCALE = 128, 28, 0.25
OLD_FILES = ("layers.py", "mobilenet_v1.py")


def import_old_models(commit):
    """The old models package's MobileNetV1 class, written out of git history into a temporary package."""
    package = os.path.join(tempfile.mkdtemp(), "old_models")
    os.mkdir(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in OLD_FILES:
        source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:models/{name}"], check=True, capture_output=True, text=True).stdout
        with open(os.path.join(package, name), "w") as file:
            file.write(source)
    sys.path.insert(0, os.path.dirname(package))
    return importlib.import_module("old_models.mobilenet_v1").MobileNetV1


def paddle_vision(stem_stride):
    """The registry's MobileNetV1 x0.25 for 28x28 grey images, its stem stride set to `stem_stride`."""
    net = models.create("mobilenet_v1", num_classes=10, in_channels=1, scale=SCALE, image_size=SIZE)
    adapt.set_stride(net.conv1[0], stem_stride)
    return net


def training_program(build_net):
    """Startup and main program of one Momentum step on cross-entropy, and the loss."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        images = paddle.static.data("image", [None, 1, SIZE, SIZE], "float32")
        labels = paddle.static.data("label", [None, 1], "int64")
        loss = paddle.nn.functional.cross_entropy(build_net()(images), labels).mean()
        paddle.optimizer.Momentum(0.1, momentum=0.9).minimize(loss)
    return startup, main, loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old_commit", default="639bb17", help="a commit whose models/ still has the own MobileNetV1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant and round")
    args = parser.parse_args()

    old_mobilenet_v1 = import_old_models(args.old_commit)
    variants = {
        "old own MobileNetV1, stride-2 stem": lambda: old_mobilenet_v1(10, in_channels=1, scale=SCALE, small_input=False),
        "paddle.vision MobileNetV1, stride-2 stem": lambda: paddle_vision(2),
        "old own MobileNetV1, stride-1 stem": lambda: old_mobilenet_v1(10, in_channels=1, scale=SCALE, small_input=True),
        "paddle.vision MobileNetV1, stride-1 stem": lambda: paddle_vision(1),
    }
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    rng = np.random.default_rng(0)
    feed = {"image": rng.standard_normal((BATCH, 1, SIZE, SIZE)).astype("float32"),
            "label": rng.integers(0, 10, (BATCH, 1)).astype("int64")}
    programs = {}
    for name, build_net in variants.items():
        scope = paddle.static.Scope()
        startup, program, loss = training_program(build_net)
        with paddle.static.scope_guard(scope):
            exe.run(startup)
            exe.run(program, feed=feed, fetch_list=[loss])  # warm-up: first-run allocations
        programs[name] = (scope, program, loss)

    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (scope, program, loss) in programs.items():
            with paddle.static.scope_guard(scope):
                start = time.perf_counter()
                for _ in range(args.steps):
                    exe.run(program, feed=feed, fetch_list=[loss])
                rates[name].append(args.steps * BATCH / (time.perf_counter() - start))

    print(f"Paddle {paddle.__version__}, {'PIR' if pir_enabled() else 'legacy IR'}, MKL_DEBUG_CPU_TYPE={os.environ['MKL_DEBUG_CPU_TYPE']}; "
          f"MobileNetV1 x{SCALE} at {SIZE}x{SIZE} grey, batch {BATCH}; median of {args.rounds} rounds x {args.steps} steps")
    print("| model | training images/s | step time |")
    print("|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.0f} | {BATCH / rate * 1000:.0f} ms |")


if __name__ == "__main__":
    main()

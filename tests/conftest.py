"""Shared fixtures: static-graph mode with a fresh scope, and a small conv + BN + fc program."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import suite  # noqa: E402,F401,I001 - before paddle (see suite/__init__.py)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402
from paddle.utils import unique_name  # noqa: E402


@pytest.fixture
def static_mode():
    """Static-graph mode with a fresh global scope and fresh default programs; dygraph again afterwards."""
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope), paddle.static.program_guard(main, startup), unique_name.guard():
        paddle.seed(1)
        yield main, startup, scope
    paddle.disable_static()


class SmallNet:
    """conv(1->8, 3x3) + BN + ReLU + conv1x1(8->8) + fc(8*8*8 -> 10): the layers a pruner must tell apart."""

    def __init__(self):
        self.conv = paddle.nn.Conv2D(1, 8, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(8)
        self.conv1x1 = paddle.nn.Conv2D(8, 8, 1)
        self.fc = paddle.nn.Linear(8 * 8 * 8, 10)

    def __call__(self, x):
        h = paddle.nn.functional.relu(self.bn(self.conv(x)))
        return self.fc(paddle.flatten(self.conv1x1(h), 1))


def build_small_program():
    """Builds the SmallNet training program in the current program guard; returns (net, loss)."""
    x = paddle.static.data("x", [None, 1, 8, 8], "float32")
    y = paddle.static.data("y", [None, 1], "int64")
    net = SmallNet()
    loss = paddle.nn.functional.cross_entropy(net(x), y).mean()
    return net, loss


def small_batches(count, batch=16, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x = rng.standard_normal((batch, 1, 8, 8)).astype("float32")
        y = (x.reshape(batch, -1)[:, :10].argmax(axis=1)).reshape(batch, 1).astype("int64")
        yield {"x": x, "y": y}

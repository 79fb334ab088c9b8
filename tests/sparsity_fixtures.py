"""Shared pieces of the sparsity tests: the library rules beside their NumPy references, a small nn.Layer
that builds the same model in dygraph and in a static program, and weight copying between the two."""
import math

import numpy as np
import paddle
from paddle.utils import unique_name

from sparsity import rules, static
from tests.conftest import SmallNet

RULES = {
    "element": rules.Element(),
    "block2x1": rules.Block(2, 1),
    "block2x3_per_position": rules.Block(2, 3, per_position=True),
    "channel0_l2": rules.Channel(0, 2),
    "channel1_l1": rules.Channel(1, 1),
    "channel0_inf": rules.Channel(0, math.inf),
    "random7": rules.Random(7),
}


class SmallLayer(paddle.nn.Layer):
    """conftest's SmallNet as a paddle.nn.Layer, so it has structural names and runs in dygraph and static mode."""

    def __init__(self):
        super().__init__()
        SmallNet.__init__(self)

    forward = SmallNet.__call__


def static_small_layer(optimizer=True, lr=0.05):
    """SmallLayer built into fresh static programs: (layer, main, startup, loss); run inside a scope_guard."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), unique_name.guard():
        x = paddle.static.data("x", [None, 1, 8, 8], "float32")
        y = paddle.static.data("y", [None, 1], "int64")
        layer = SmallLayer()
        loss = paddle.nn.functional.cross_entropy(layer(x), y).mean()
        if optimizer:
            paddle.optimizer.SGD(lr).minimize(loss)
    return layer, main, startup, loss


def write_structural(scope, layer, values):
    """Write {structural name: array} into a static scope through a static-mode layer's variable names."""
    for var_name, key in static.structural_names(layer).items():
        static.write(scope, var_name, values[key], paddle.CPUPlace())


def random_state(model, seed=0):
    """Distinct random values for every parameter of a dygraph model, by structural name."""
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(p.shape).astype("float32") for key, p in model.named_parameters()}

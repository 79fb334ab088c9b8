"""Registry models at other widths: a model rebuilt with the channel counts of a slimmed model's weights.

A slimmed model (channels removed, suite/deploy/slim.py) keeps every parameter's name but not its shape, and
the model code computes its layers' widths from nominal settings that must not change (MobileNetV2 decides
whether a block has a residual from them). So the model is built twice: once at its nominal widths, recording
the order in which its Conv2D, BatchNorm2D and Linear layers are constructed and the structural name each ends
up with; then again with those classes' constructors given the channel counts that `widths` ({structural
weight name: shape}) asks for, layer by layer in the same order. Layers not named in `widths` keep theirs.
"""
import contextlib
import inspect

import paddle
from paddle import nn
from paddle.utils import unique_name

LAYERS = (nn.Conv2D, nn.BatchNorm2D, nn.Linear)


@contextlib.contextmanager
def _constructing(change):
    """Within: every LAYERS constructor runs `change(layer, arguments)` on its bound arguments, then itself."""
    originals = {cls: cls.__init__ for cls in LAYERS}

    def patched(original):
        signature = inspect.signature(original)

        def init(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            change(self, bound.arguments)
            original(*bound.args, **bound.kwargs)

        return init

    for cls, original in originals.items():
        cls.__init__ = patched(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__init__ = original


@contextlib.contextmanager
def _scratch():
    """Layers built within leave no trace: in static mode their parameters go to a throwaway program, and in either
    mode the unique-name counters are restored, so the real build's parameter names are the usual ones."""
    with unique_name.guard():
        if paddle.in_dynamic_mode():
            yield
        else:
            with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
                yield


def construction_order(build):
    """[(structural name, layer class, nominal arguments)] of the layers `build()` constructs, in order (built
    once at the nominal widths, leaving no parameters behind)."""
    made = []
    with _scratch(), _constructing(lambda layer, arguments: made.append((layer, type(layer), dict(arguments)))):
        model = build()
        names = {id(layer): name for name, layer in model.named_sublayers()}
        return [(names.get(id(layer)), cls, arguments) for layer, cls, arguments in made]


def _resized(cls, arguments, shape):
    """The constructor arguments of a layer whose weight has `shape` instead of the nominal one."""
    if issubclass(cls, nn.Conv2D):
        depthwise = arguments["groups"] > 1 and arguments["groups"] == arguments["in_channels"]
        if arguments["groups"] > 1 and not depthwise:
            raise ValueError("a grouped convolution cannot be rebuilt at another width")
        out = shape[0]
        return {"out_channels": out, "in_channels": out if depthwise else shape[1], "groups": out if depthwise else 1}
    if issubclass(cls, nn.BatchNorm2D):
        return {"num_features": shape[0]}
    return {"in_features": shape[0], "out_features": shape[1]}


def build_with_widths(build, widths):
    """`build()` with every Conv2D / BatchNorm2D / Linear whose weight `widths` names made to that shape."""
    order = construction_order(build)
    wanted = iter([widths.get(f"{name}.weight") if name is not None else None for name, _, _ in order])
    unknown = set(widths) - {f"{name}.weight" for name, _, _ in order if name is not None}
    if unknown:
        raise ValueError(f"widths name {sorted(unknown)[0]!r}, which is not a Conv2D, BatchNorm2D or Linear weight of this model")

    def change(layer, arguments):
        shape = next(wanted)
        if shape is not None:
            arguments.update(_resized(type(layer), arguments, shape))

    with _constructing(change):
        return build()

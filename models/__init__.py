"""Registry of image classifiers built only from paddle.nn layers, usable in dygraph and both static IRs."""

from collections import namedtuple
from functools import partial

from .lenet import LeNet
from .mlp import MLP
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet

__all__ = ["create", "names", "LeNet", "MLP", "MobileNetV1", "MobileNetV2", "ResNet"]

# ResNets given inputs at most this wide (MNIST 28, CIFAR 32) get a stride-1 stem without max-pool,
# as is usual for CIFAR; MobileNets keep their standard strides at every size (a stride-1 stem at
# 28x28 costs 1.4x to 1.7x the training time on CPU: see README).
SMALL_INPUT_MAX_SIZE = 64

# builder(num_classes, in_channels, small_input, **extra); supports_scale says whether `scale` is
# accepted, small_stem whether small inputs switch the builder to its small-input stem.
_Entry = namedtuple("_Entry", ["builder", "supports_scale", "small_stem"], defaults=[True])

_REGISTRY = {
    "MobileNet": _Entry(MobileNetV1, True, small_stem=False),
    "mobilenet_v1": _Entry(MobileNetV1, True, small_stem=False),
    "MobileNetV2": _Entry(MobileNetV2, True, small_stem=False),
    "mobilenet_v2": _Entry(MobileNetV2, True, small_stem=False),
    "ResNet18": _Entry(partial(ResNet, 18), False),
    "resnet18": _Entry(partial(ResNet, 18), False),
    "ResNet34": _Entry(partial(ResNet, 34), False),
    "resnet34": _Entry(partial(ResNet, 34), False),
    "ResNet50": _Entry(partial(ResNet, 50), False),
    "resnet50": _Entry(partial(ResNet, 50), False),
    "LeNet": _Entry(LeNet, False),
    "lenet": _Entry(LeNet, False),
    "MLP": _Entry(MLP, False),
    "mlp": _Entry(MLP, False),
}


def names():
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def create(name, num_classes=10, in_channels=3, scale=1.0, image_size=224):
    """Build the registered model `name` for `image_size`-pixel inputs with `in_channels` channels."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(_REGISTRY)}")
    entry = _REGISTRY[name]
    extra = {}
    if entry.supports_scale:
        extra["scale"] = scale
    elif scale != 1.0:
        raise ValueError(f"model {name!r} does not support a width multiplier; got scale={scale}, expected 1.0")
    return entry.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        small_input=entry.small_stem and image_size <= SMALL_INPUT_MAX_SIZE,
        **extra,
    )


def classifier_prefixes(name):
    """Structural-name prefixes of the classifier head of `name`: what a state dict of another class count may skip."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(_REGISTRY)}")
    return ("classifier.",)

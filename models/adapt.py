"""Input adaptations for paddle.vision models, all in one place; none changes a parameter's name or shape.

So a zoo state dict loads into an adapted model as it is. Two kinds:
* channels: a grey (1-channel) image feeds a 3-channel stem by repeating the channel in the graph;
* small images (<= SMALL_INPUT_MAX_SIZE px): one rule per family, in SMALL_INPUT_RULES.
"""
import paddle
from paddle import nn

# Inputs at most this wide (MNIST 28, CIFAR 32) count as small.
SMALL_INPUT_MAX_SIZE = 64


def _grey_to_rgb(layer, inputs):
    """Forward pre-hook: the model's image input with its single channel repeated three times."""
    images, *rest = inputs
    return (paddle.tile(images, [1, 3, 1, 1]), *rest)


def repeat_grey_channel(model):
    """Let a 3-channel model take 1-channel images: the channel is repeated before the stem (a grey photo in RGB)."""
    model.register_forward_pre_hook(_grey_to_rgb)
    return model


def set_stride(conv, stride):
    """Change a built Conv2D's stride in place: its weight (and so the zoo's shape) stays, no parameter is created."""
    if not hasattr(conv, "_stride"):
        raise TypeError(f"{type(conv).__name__} has no _stride attribute; this Paddle's Conv2D changed")
    conv._stride = [stride, stride]


def cifar_stem(model, image_size):
    """ResNet: stride-1 7x7 stem and no max-pool (CIFAR practice), so a 28-32 px image keeps 4x4 maps at the end."""
    set_stride(model.conv1, 1)
    model.maxpool = nn.Identity()


def fitting_max_pools(model, image_size):
    """VGG: a max-pool left with a 1 px map becomes identity (28 px keeps four of five); its 3x3 convs keep the size."""
    size = image_size
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2D):
            if size >= 2:
                size //= 2
            else:
                model.features[index] = nn.Identity()


# family -> what changes for small inputs (None: nothing; our own families take any size). MobileNets keep their
# standard strides: a stride-1 stem at 28x28 made a training step 1.2-1.3x slower on this 2-core CPU
# (bench/model_speed.py; 1.4-1.7x when first measured) for about +1 point of Fashion-MNIST accuracy.
SMALL_INPUT_RULES = {
    "mobilenet": None,
    "resnet": cifar_stem,
    "vgg": fitting_max_pools,
    "lenet": None,
    "mlp": None,
}


def to_input(model, entry, image_size, in_channels):
    """Adapt `model`, built from ModelSpec `entry`, to `image_size`-px images with `in_channels` channels."""
    if entry.stem_channels not in (None, in_channels):
        if (in_channels, entry.stem_channels) != (1, 3):
            raise ValueError(
                f"model {entry.name!r} takes {entry.stem_channels}-channel images (as its zoo weights do); "
                f"got in_channels={in_channels}, accepted: {entry.stem_channels}, or 1 (grey, repeated to 3 channels)"
            )
        repeat_grey_channel(model)
    rule = SMALL_INPUT_RULES[entry.family]
    if rule is not None and image_size <= SMALL_INPUT_MAX_SIZE:
        rule(model, image_size)
    return model

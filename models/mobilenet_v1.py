"""MobileNetV1 (Howard et al., 2017): a stack of depthwise-separable convolutions."""

from paddle import nn

from .layers import ConvBN, PooledClassifier

# (output channels, stride) of the 13 depthwise-separable blocks at 224x224.
BLOCK_SPECS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32
MIN_CHANNELS = 8


def scaled_channels(channels, scale):
    """Apply the width multiplier, keeping at least MIN_CHANNELS so thin models still learn."""
    return max(MIN_CHANNELS, int(round(channels * scale)))


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (carries the stride) followed by a 1x1 pointwise conv."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(
            ConvBN(in_channels, in_channels, 3, stride, groups=in_channels, activation=nn.ReLU),
            ConvBN(in_channels, out_channels, 1, activation=nn.ReLU),
        )


class MobileNetV1(PooledClassifier):
    """MobileNetV1 classifier; `small_input=True` makes the stem stride 1 (the registry keeps the standard stride)."""

    def __init__(self, num_classes=10, in_channels=3, scale=1.0, small_input=False):
        stem_channels = scaled_channels(STEM_CHANNELS, scale)
        layers = [ConvBN(in_channels, stem_channels, 3, 1 if small_input else 2, activation=nn.ReLU)]
        channels = stem_channels
        for out_channels, stride in BLOCK_SPECS:
            out_channels = scaled_channels(out_channels, scale)
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        super().__init__(nn.Sequential(*layers), channels, num_classes)

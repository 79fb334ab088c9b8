"""MobileNetV1 (Howard et al., 2017): a stack of depthwise-separable convolutions."""

import paddle
from paddle import nn

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


class ConvBNReLU(nn.Sequential):
    """Bias-free conv + BatchNorm + ReLU; the BN shift makes a conv bias redundant."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, groups=1):
        super().__init__(
            nn.Conv2D(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias_attr=False,
            ),
            nn.BatchNorm2D(out_channels),
            nn.ReLU(),
        )


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (carries the stride) followed by a 1x1 pointwise conv."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1, 1),
        )


class MobileNetV1(nn.Layer):
    """MobileNetV1 classifier; `small_input` makes the stem stride 1 for 28x28/32x32 images."""

    def __init__(self, num_classes=10, in_channels=3, scale=1.0, small_input=False):
        super().__init__()
        stem_channels = scaled_channels(STEM_CHANNELS, scale)
        layers = [ConvBNReLU(in_channels, stem_channels, 3, 1 if small_input else 2)]
        channels = stem_channels
        for out_channels, stride in BLOCK_SPECS:
            out_channels = scaled_channels(out_channels, scale)
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images):
        features = self.pool(self.features(images))
        return self.classifier(paddle.flatten(features, start_axis=1))

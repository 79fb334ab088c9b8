"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks with linear bottlenecks."""

from paddle import nn

from .layers import ConvBN, PooledClassifier

# (expansion t, output channels c, repeats n, first stride s) at 224x224.
INVERTED_RESIDUAL_SPECS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
CHANNEL_DIVISOR = 8


def make_divisible(channels, divisor=CHANNEL_DIVISOR):
    """Round to the nearest multiple of `divisor` (at least `divisor`), never dropping below 90%."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Layer):
    """1x1 expand, 3x3 depthwise, linear 1x1 project; identity shortcut when shapes match."""

    def __init__(self, in_channels, out_channels, stride, expansion):
        super().__init__()
        hidden_channels = int(round(in_channels * expansion))
        layers = []
        if expansion != 1:
            layers.append(ConvBN(in_channels, hidden_channels, 1, activation=nn.ReLU6))
        layers += [
            ConvBN(hidden_channels, hidden_channels, 3, stride, groups=hidden_channels, activation=nn.ReLU6),
            ConvBN(hidden_channels, out_channels, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, inputs):
        outputs = self.block(inputs)
        return inputs + outputs if self.use_shortcut else outputs


class MobileNetV2(PooledClassifier):
    """MobileNetV2 classifier; `small_input=True` makes the stem stride 1 (the registry keeps the standard stride)."""

    def __init__(self, num_classes=10, in_channels=3, scale=1.0, small_input=False):
        channels = make_divisible(STEM_CHANNELS * scale)
        layers = [ConvBN(in_channels, channels, 3, 1 if small_input else 2, activation=nn.ReLU6)]
        for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SPECS:
            out_channels = make_divisible(out_channels * scale)
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        # The head is only widened, never thinned, as in the paper.
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, scale))
        layers.append(ConvBN(channels, last_channels, 1, activation=nn.ReLU6))
        super().__init__(nn.Sequential(*layers), last_channels, num_classes)

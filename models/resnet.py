"""ResNet-18/34/50 (He et al., 2016) with the stride on the 3x3 conv of each bottleneck."""

from paddle import nn

from .layers import ConvBN, PooledClassifier

STAGE_CHANNELS = (64, 128, 256, 512)


class BasicBlock(nn.Layer):
    """Two 3x3 convs plus a shortcut; used by ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.residual = nn.Sequential(
            ConvBN(in_channels, channels, 3, stride),
            nn.ReLU(),
            ConvBN(channels, channels, 3),
        )
        self.shortcut = projection_shortcut(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, inputs):
        return self.relu(self.residual(inputs) + self.shortcut(inputs))


class Bottleneck(nn.Layer):
    """1x1 reduce, 3x3, 1x1 expand (x4) plus a shortcut; used by ResNet-50."""

    expansion = 4

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.residual = nn.Sequential(
            ConvBN(in_channels, channels, 1),
            nn.ReLU(),
            ConvBN(channels, channels, 3, stride),
            nn.ReLU(),
            ConvBN(channels, channels * self.expansion, 1),
        )
        self.shortcut = projection_shortcut(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, inputs):
        return self.relu(self.residual(inputs) + self.shortcut(inputs))


def projection_shortcut(in_channels, out_channels, stride):
    """Identity when shapes match, else a strided 1x1 conv + BN to match them."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBN(in_channels, out_channels, 1, stride)


# depth -> (block type, blocks per stage)
DEPTH_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(PooledClassifier):
    """ResNet classifier; `small_input` uses a 3x3 stride-1 stem without max-pool for 28x28/32x32."""

    def __init__(self, depth, num_classes=10, in_channels=3, small_input=False):
        if depth not in DEPTH_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(DEPTH_SPECS)}")
        block, blocks_per_stage = DEPTH_SPECS[depth]
        stem_channels = STAGE_CHANNELS[0]
        if small_input:
            stem = [ConvBN(in_channels, stem_channels, 3), nn.ReLU()]
        else:
            stem = [
                ConvBN(in_channels, stem_channels, 7, stride=2),
                nn.ReLU(),
                nn.MaxPool2D(kernel_size=3, stride=2, padding=1),
            ]
        layers = stem
        channels = stem_channels
        for stage, (stage_channels, num_blocks) in enumerate(zip(STAGE_CHANNELS, blocks_per_stage)):
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(block(channels, stage_channels, stride))
                channels = stage_channels * block.expansion
        super().__init__(nn.Sequential(*layers), channels, num_classes)

"""Building blocks shared by the models."""
import paddle
from paddle import nn


class ConvBN(nn.Sequential):
    """Bias-free conv + BatchNorm, then `activation()` if given; the BN shift makes a conv bias redundant."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, activation=None):
        conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias_attr=False
        )
        layers = [conv, nn.BatchNorm2D(out_channels)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class PooledClassifier(nn.Layer):
    """`features`, global average pooling, then a Linear classifier: the head every model here shares."""

    def __init__(self, features, channels, num_classes):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images):
        return self.classifier(paddle.flatten(self.pool(self.features(images)), start_axis=1))

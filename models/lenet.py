"""LeNet-5 style CNN with BatchNorm: small and fast, for quick runs and tests on 28x28 / 32x32 images."""
import paddle
from paddle import nn

from .registry import register


@register("lenet", family="lenet", head_prefixes=("classifier.",), stem_channels=None, aliases=("LeNet",))
class LeNet(nn.Layer):
    """conv5x5(6) + pool, conv5x5(16) + pool, fc 120, fc 84, classifier; BatchNorm after each conv."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(in_channels, 6, 5, padding=2, bias_attr=False),
            nn.BatchNorm2D(6),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(6, 16, 5, bias_attr=False),
            nn.BatchNorm2D(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2D(5),
        )
        self.head = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, images):
        return self.classifier(self.head(paddle.flatten(self.features(images), start_axis=1)))

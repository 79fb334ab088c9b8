"""A two-layer perceptron: no normalization layers, so data-parallel runs can be compared exactly."""
import paddle
from paddle import nn

from .registry import register


@register("mlp", family="mlp", head_prefixes=("classifier.",), stem_channels=None, aliases=("MLP",))
class MLP(nn.Layer):
    """Average-pool to 14x14, flatten, Linear(256) + ReLU, classifier."""

    def __init__(self, num_classes=10, in_channels=1, hidden=256):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(14)
        self.hidden = nn.Linear(in_channels * 14 * 14, hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, images):
        features = paddle.flatten(self.pool(images), start_axis=1)
        return self.classifier(nn.functional.relu(self.hidden(features)))

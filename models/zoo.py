"""The families paddle.vision.models has, built by it: their parameter names and shapes are the zoo's.

So `model.set_state_dict(paddle.load('resnet18.pdparams'))` loads a file of Paddle's model zoo (or PaddleClas's
weights for the same architectures) as it is. Inputs other than 3 x 224 x 224 are handled in models/adapt.py.
"""
from paddle.vision import models as vision

from .registry import register

# A width multiplier below 1/32 leaves MobileNetV1's first layers without a channel (it truncates 32 * scale).
MOBILENET_V1_MIN_SCALE = 1 / 32


@register("mobilenet_v1", family="mobilenet", head_prefixes=("fc.",), min_scale=MOBILENET_V1_MIN_SCALE, aliases=("MobileNet",))
def mobilenet_v1(num_classes, scale):
    return vision.mobilenet_v1(scale=scale, num_classes=num_classes)


@register("mobilenet_v2", family="mobilenet", head_prefixes=("classifier.1.",), min_scale=0.0, aliases=("MobileNetV2",))
def mobilenet_v2(num_classes, scale):
    return vision.mobilenet_v2(scale=scale, num_classes=num_classes)


@register("mobilenet_v3_small", family="mobilenet", head_prefixes=("classifier.3.",), min_scale=0.0)
def mobilenet_v3_small(num_classes, scale):
    return vision.mobilenet_v3_small(scale=scale, num_classes=num_classes)


@register("mobilenet_v3_large", family="mobilenet", head_prefixes=("classifier.3.",), min_scale=0.0)
def mobilenet_v3_large(num_classes, scale):
    return vision.mobilenet_v3_large(scale=scale, num_classes=num_classes)


@register("resnet18", family="resnet", head_prefixes=("fc.",), aliases=("ResNet18",))
def resnet18(num_classes):
    return vision.resnet18(num_classes=num_classes)


@register("resnet34", family="resnet", head_prefixes=("fc.",), aliases=("ResNet34",))
def resnet34(num_classes):
    return vision.resnet34(num_classes=num_classes)


@register("resnet50", family="resnet", head_prefixes=("fc.",), aliases=("ResNet50",))
def resnet50(num_classes):
    return vision.resnet50(num_classes=num_classes)


@register("resnet101", family="resnet", head_prefixes=("fc.",))
def resnet101(num_classes):
    return vision.resnet101(num_classes=num_classes)


@register("vgg16", family="vgg", head_prefixes=("classifier.6.",))
def vgg16(num_classes):
    return vision.vgg16(num_classes=num_classes)

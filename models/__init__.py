"""Image classifiers by name: paddle.vision.models where the family exists there (zoo-compatible weights), our own otherwise.

    models.create(name, num_classes=10, in_channels=3, scale=1.0, image_size=224, widths=None) -> paddle.nn.Layer
    models.names()  -> accepted names;  models.spec(name) -> ModelSpec (head prefixes, stem channels, ...)
"""
from . import lenet, mlp, zoo  # noqa: F401 - importing them fills the registry
from .adapt import SMALL_INPUT_MAX_SIZE, to_input
from .registry import ModelSpec, names, spec, width_options
from .widths import build_with_widths

__all__ = ["SMALL_INPUT_MAX_SIZE", "ModelSpec", "create", "names", "spec"]


def create(name, num_classes=10, in_channels=3, scale=1.0, image_size=224, widths=None):
    """Build model `name` for `image_size`-px images with `in_channels` channels; parameter shapes are the zoo's,
    or those `widths` ({structural weight name: shape}, a slimmed model's) gives."""
    entry = spec(name)
    options = width_options(entry, scale)
    if entry.stem_channels is None:
        options["in_channels"] = in_channels

    def build():
        return entry.build(num_classes=num_classes, **options)

    model = build_with_widths(build, widths) if widths else build()
    return to_input(model, entry, image_size, in_channels)

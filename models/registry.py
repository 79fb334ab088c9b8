"""The model registry: each name registered once with what the suite needs to know; aliases kept apart."""
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and the facts that loading pretrained weights relies on.

    build: called with num_classes, plus scale= when min_scale is set and in_channels= when stem_channels is None.
    family: key of adapt.SMALL_INPUT_RULES (which small-input adaptation applies).
    head_prefixes: state-dict key prefixes of the classifier head, the only keys whose shapes follow num_classes.
    stem_channels: input channels of the stem weights (3 for paddle.vision models, as in the zoo files);
        None when the stem is built for the data's in_channels (our own models, which have no zoo weights).
    min_scale: smallest accepted width multiplier, or None when the model has none (scale must be 1.0).
    """

    name: str
    build: Callable
    family: str
    head_prefixes: tuple[str, ...]
    stem_channels: int | None
    min_scale: float | None


_MODELS = {}
_ALIASES = {}


def register(name, *, family, head_prefixes, stem_channels=3, min_scale=None, aliases=()):
    """Decorator: register `build` under `name` (and its aliases, which must not shadow any name)."""

    def decorate(build):
        for new in (name, *aliases):
            if new in _MODELS or new in _ALIASES:
                raise ValueError(f"model name {new!r} is registered twice")
        _MODELS[name] = ModelSpec(name, build, family, tuple(head_prefixes), stem_channels, min_scale)
        _ALIASES.update(dict.fromkeys(aliases, name))
        return build

    return decorate


def names(include_aliases=True):
    """Accepted model names: registered names in registration order, then (by default) their aliases."""
    return [*_MODELS, *(_ALIASES if include_aliases else ())]


def spec(name):
    """The ModelSpec registered under `name` or an alias of it; ValueError naming the accepted names otherwise."""
    canonical = _ALIASES.get(name, name)
    if canonical not in _MODELS:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(names())}")
    return _MODELS[canonical]


def width_options(entry, scale):
    """{'scale': scale} for a model with a width multiplier, {} otherwise; ValueError for a scale it cannot take."""
    if entry.min_scale is None:
        if scale != 1.0:
            raise ValueError(f"model {entry.name!r} does not support a width multiplier; got scale={scale}, expected 1.0")
        return {}
    if not (math.isfinite(scale) and scale > 0 and scale >= entry.min_scale):
        lowest = f">= {entry.min_scale:g}" if entry.min_scale > 0 else "> 0"
        raise ValueError(f"model {entry.name!r} accepts a finite width multiplier scale {lowest}; got scale={scale}")
    return {"scale": scale}

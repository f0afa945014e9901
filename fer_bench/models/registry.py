"""A timm-style model registry: builders registered by decorator, each paired with its facts.

`create_model(name, ...)` and `list_models(pattern)` are the whole public surface. Every model
takes the same input, raw grayscale pixels 0-255 of shape (48, 48, 1), and does its own resizing
and preprocessing as layers, so a saved `.keras` file predicts from raw pixels.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError


@dataclass(frozen=True)
class ModelInfo:
    """What a model needs and prefers: input sizes, weights, and whether its base is pretrained."""

    name: str
    description: str
    default_size: int
    min_size: int
    transfer: bool = False
    keras_weights_file: str | None = None  # ImageNet no-top weights file name in ~/.keras/models (or shipped)
    pretrained: str = "imagenet"  # the name of a transfer base's own pretrained weights (--weights default)
    default_width: float | None = None  # channel multiplier of models that have a width setting


@dataclass
class BuiltModel:
    """The full model (raw pixels → class probabilities) and, for transfer models, its two halves.

    `extractor` maps raw pixels to pooled base features and `head` maps those features to
    probabilities; `full` is head(extractor(pixels)) and shares their weights.
    """

    info: ModelInfo
    full: object
    extractor: object | None = None
    head: object | None = None
    base: object | None = None


_REGISTRY: dict[str, tuple[ModelInfo, Callable[..., BuiltModel]]] = {}


def register_model(info: ModelInfo):
    """Decorator: register `builder(info, num_classes, image_size, **options) -> BuiltModel`."""

    def wrap(builder):
        _REGISTRY[info.name] = (info, builder)
        return builder

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """The facts registered for `name`, or a UserError listing what exists."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name][0]


def builder_key(name: str) -> str:
    """A short hash of the source file that builds model `name`: what a per-machine cache of facts
    about the built model (its FLOPs) is keyed by, so a changed architecture is counted again."""
    import hashlib
    import inspect

    model_info(name)
    return hashlib.sha256(Path(inspect.getsourcefile(_REGISTRY[name][1])).read_bytes()).hexdigest()[:12]


def check_image_size(info: ModelInfo, image_size: int) -> None:
    """Refuse input sizes below the model's minimum with a clear message."""
    if image_size < info.min_size:
        raise UserError(f"--image-size {image_size} is too small for {info.name}: its minimum is {info.min_size}")


def create_model(name: str, num_classes: int, image_size: int | None = None, **options) -> BuiltModel:
    """Build a registered model for `num_classes` at `image_size` (default: the model's own)."""
    info = model_info(name)
    size = image_size or info.default_size
    check_image_size(info, size)
    return _REGISTRY[name][1](info, num_classes, size, **options)

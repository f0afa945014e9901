"""The seed report's CNN, layer for layer, registered as `scratch`."""

from __future__ import annotations

import keras
from keras import layers

from ..data.dataset import NATIVE_SIZE
from .batchnorm import FusedBatchNormalization
from .dropout import FewBitsDropout
from .registry import BuiltModel, ModelInfo, register_model

SCRATCH = ModelInfo(
    name="scratch",
    description="the seed's small CNN trained from scratch (Conv32-Conv16-Dense200)",
    default_size=48,  # the data's native size; the seed upscaled to 244 (`--image-size 244`)
    min_size=8,
)


def seed_layers(x, num_classes: int, batch_norm=FusedBatchNormalization, dropout=FewBitsDropout):
    """The seed's layers, from pixels scaled to 0..1 to class probabilities. fer_bench computes the
    BatchNorm with the fused kernel and draws dropout masks from fewer random bits;
    `batch_norm=layers.BatchNormalization, dropout=layers.Dropout` are the seed's own layers."""
    x = layers.Conv2D(32, 3, padding="same")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(16, 3, padding="same")(x)
    x = layers.LeakyReLU(negative_slope=0.5)(x)
    x = batch_norm()(x)
    x = layers.MaxPooling2D(2)(x)
    x = dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(200)(x)
    x = layers.Activation("relu")(x)
    x = dropout(0.5)(x)
    x = layers.Dense(num_classes)(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


@register_model(SCRATCH)
def build_scratch(info: ModelInfo, num_classes: int, image_size: int, **_options) -> BuiltModel:
    """Raw pixels → resize (nearest, like the seed's directory reader) → /255 → the seed's layers."""
    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = pixels
    if image_size != NATIVE_SIZE:
        x = layers.Resizing(image_size, image_size, interpolation="nearest", name="resize")(x)
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    return BuiltModel(info, keras.Model(pixels, seed_layers(x, num_classes), name="scratch"))

"""On-the-fly augmentation as Keras layers in front of a model: they change images only in
training, so a saved model predicts deterministically from raw pixels 0-255.

Shift, rotation and zoom are one affine transform with one bilinear resampling (`RandomAffine`):
Keras' separate RandomTranslation, RandomRotation and RandomZoom resample three times, which
blurs 48x48 faces so much that a network trained on them misjudges the sharp test faces.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

SHIFT = 0.1  # fraction of height/width
ROTATION_DEGREES = 10
ZOOM = 0.1  # scale in 1 ± ZOOM
ERASING_PROBABILITY = 0.5
ERASING_AREA = (0.02, 0.15)  # fraction of the image erased


@keras.saving.register_keras_serializable(package="fer_bench")
class RandomAffine(layers.Layer):
    """Random shift (fraction of size), rotation (degrees) and zoom (scale range), per image, in
    one bilinear resampling with nearest-edge fill; the identity outside training."""

    def __init__(self, shift: float = 0.0, rotation: float = 0.0, zoom: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shift, self.rotation, self.zoom, self.seed = shift, rotation, zoom, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        shape = ops.shape(images)
        n, h, w = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def uniform(limit):
            return keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)

        angle = uniform(self.rotation * math.pi / 180)
        scale = 1.0 + uniform(self.zoom)
        tx, ty = uniform(self.shift) * w, uniform(self.shift) * h
        cx, cy = (w - 1) / 2, (h - 1) / 2
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        zeros = ops.zeros_like(cos)
        # output pixel (x, y) reads input pixel centre + R(angle)·((x, y) − centre)/scale + shift
        transform = ops.stack([cos, -sin, cx - cos * cx + sin * cy + tx,
                               sin, cos, cy - sin * cx - cos * cy + ty, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="nearest")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift": self.shift, "rotation": self.rotation, "zoom": self.zoom,
                "seed": self.seed}


def augmentation_layers(augment: str, seed: int) -> list:
    """The layers for a canonical comma list such as 'flip,shift,rotation,zoom,erasing' ('none': [])."""
    ops_wanted = [] if augment == "none" else augment.split(",")
    exact = {"dtype": "float32"}  # pixels stay float32 under a mixed policy
    stack = []
    if "flip" in ops_wanted:
        stack.append(layers.RandomFlip("horizontal", seed=seed, name="aug_flip", **exact))
    geometry = {"shift": SHIFT, "rotation": ROTATION_DEGREES, "zoom": ZOOM}
    if any(op in ops_wanted for op in geometry):
        stack.append(RandomAffine(**{op: value for op, value in geometry.items() if op in ops_wanted}, seed=seed + 1,
                                  name="aug_affine", **exact))
    if "erasing" in ops_wanted:
        stack.append(layers.RandomErasing(ERASING_PROBABILITY, scale=ERASING_AREA, value_range=(0, 255), seed=seed + 2,
                                          name="aug_erasing", **exact))
    return stack


def with_augmentation(model, augment: str, seed: int):
    """`model` behind the augmentation layers; `model` itself when there are none."""
    stack = augmentation_layers(augment, seed)
    if not stack:
        return model
    pixels = keras.Input(model.input_shape[1:], name="pixels")
    x = pixels
    for layer in stack:
        x = layer(x)
    return keras.Model(pixels, model(x), name=f"{model.name}_augmented")

"""On-the-fly augmentation as Keras layers in front of a model: they change images only in
training, so a saved model predicts deterministically from raw pixels 0-255.

Photometric changes (brightness, contrast, gamma, blur, JPEG compression) imitate what real photos
do to faces (`RandomPhotometric`); they come before erasing, after the geometry.

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


BRIGHTNESS = 0.3  # pixel values scaled by 1 ± BRIGHTNESS
CONTRAST = 0.4  # distance from the image's mean scaled by 1 ± CONTRAST
GAMMA = 1.5  # (x/255)^g with log g uniform in ± log GAMMA
BLUR_SIGMA = 1.0  # pixels: each image blends with its Gaussian blur by a random weight
JPEG_QUALITY = (30, 90)  # half the images are JPEG-compressed at a random quality in this range


def _gaussian_kernel(sigma: float, radius: int = 2):
    import numpy as np

    x = np.arange(-radius, radius + 1, dtype="float32")
    g = np.exp(-x**2 / (2 * sigma**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    return kernel[:, :, None, None].astype("float32")


@keras.saving.register_keras_serializable(package="fer_bench")
class RandomPhotometric(layers.Layer):
    """What real photos do to a face that FER2013 rarely shows, per image: brightness, contrast,
    gamma, blur and JPEG compression (each only if switched on); the identity outside training."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, gamma: float = 1.0, blur: float = 0.0,
                 jpeg: bool = False, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.brightness, self.contrast, self.gamma, self.blur, self.jpeg, self.seed = (
            brightness, contrast, gamma, blur, jpeg, seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        n = ops.shape(images)[0]

        def uniform(low, high):
            return keras.random.uniform((n, 1, 1, 1), low, high, seed=self.seed_generator)

        x = images
        if self.brightness:
            x = x * uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * uniform(1 - self.contrast, 1 + self.contrast) + mean
        x = ops.clip(x, 0.0, 255.0)
        if self.gamma > 1:
            x = 255.0 * ops.power(x / 255.0, ops.exp(uniform(-math.log(self.gamma), math.log(self.gamma))))
        if self.blur:
            blurred = ops.depthwise_conv(ops.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="symmetric"),
                                         _gaussian_kernel(self.blur), padding="valid")
            x = x + uniform(0.0, 1.0) * (blurred - x)
        if self.jpeg:
            x = self._jpeg(x)
        return x

    def _jpeg(self, x):
        import tensorflow as tf  # JPEG round trips exist only as TensorFlow image ops

        n = tf.shape(x)[0]
        quality = keras.random.randint((n,), JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, seed=self.seed_generator)
        apply = keras.random.uniform((n,), 0, 1, seed=self.seed_generator) < 0.5
        pixels = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)

        def one(args):
            image, q, on = args
            return tf.where(on, tf.image.adjust_jpeg_quality(image, q), image)

        out = tf.map_fn(one, (pixels, tf.cast(quality, tf.int32), apply), fn_output_signature=tf.uint8)
        return tf.cast(out, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast, "gamma": self.gamma,
                "blur": self.blur, "jpeg": self.jpeg, "seed": self.seed}


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
    photometric = {"brightness": BRIGHTNESS, "contrast": CONTRAST, "gamma": GAMMA, "blur": BLUR_SIGMA, "jpeg": True}
    if any(op in ops_wanted for op in photometric):
        stack.append(RandomPhotometric(**{op: value for op, value in photometric.items() if op in ops_wanted},
                                       seed=seed + 3, name="aug_photometric", **exact))
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

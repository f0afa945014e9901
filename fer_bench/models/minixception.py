"""mini-Xception (Arriaga, Valdenegro-Toro & Plöger 2017, "Real-time Convolutional Neural Networks
for Emotion and Gender Classification"), the network inside the `fer` package, registered as
`minixception`: two plain 3x3 convolutions, four residual blocks of depthwise-separable
convolutions (16→128 channels), then a convolution to one map per class and global average
pooling. About 60 k parameters; 64x64 input as in the paper (48x48 faces are resized)."""

from __future__ import annotations

import keras
from keras import layers

from ..data.dataset import NATIVE_SIZE
from .batchnorm import FusedBatchNormalization
from .registry import BuiltModel, ModelInfo, register_model

MINIXCEPTION = ModelInfo(
    name="minixception",
    description="mini-Xception (Arriaga et al. 2017), ~60k params, the `fer` package's network",
    default_size=64,
    min_size=32,
)
BLOCK_CHANNELS = (16, 32, 64, 128)
L2 = 0.01


@register_model(MINIXCEPTION)
def build_minixception(info: ModelInfo, num_classes: int, image_size: int, **_options) -> BuiltModel:
    """Raw pixels → resize → −1..1 → two convs → four separable residual blocks → class maps → GAP → softmax."""
    reg = keras.regularizers.L2(L2)
    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = pixels
    if image_size != NATIVE_SIZE:
        x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(x)
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    for i in (1, 2):
        x = layers.Conv2D(8, 3, use_bias=False, kernel_regularizer=reg, name=f"stem_conv{i}")(x)
        x = FusedBatchNormalization(name=f"stem_bn{i}")(x)
        x = layers.ReLU(name=f"stem_relu{i}")(x)
    for block, channels in enumerate(BLOCK_CHANNELS, start=1):
        # The shortcut is a 1x1 convolution with stride 2, written as subsampling then a 1x1 convolution:
        # the same function and weights, but TensorFlow 2.21's oneDNN kernel for the strided 1x1
        # convolution corrupts memory in training on AVX-512 CPUs (e.g. at 60x60 with 8 channels).
        residual = layers.MaxPooling2D(1, strides=2, padding="same", name=f"block{block}_subsample")(x)
        residual = layers.Conv2D(channels, 1, use_bias=False, name=f"block{block}_shortcut")(residual)
        residual = FusedBatchNormalization(name=f"block{block}_shortcut_bn")(residual)
        x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, depthwise_regularizer=reg,
                                   pointwise_regularizer=reg, name=f"block{block}_sep1")(x)
        x = FusedBatchNormalization(name=f"block{block}_bn1")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, depthwise_regularizer=reg,
                                   pointwise_regularizer=reg, name=f"block{block}_sep2")(x)
        x = FusedBatchNormalization(name=f"block{block}_bn2")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
        x = layers.Add(name=f"block{block}_add")([x, residual])
    x = layers.Conv2D(num_classes, 3, padding="same", name="class_maps")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return BuiltModel(info, keras.Model(pixels, probs, name="minixception"))

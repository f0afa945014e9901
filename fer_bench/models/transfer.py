"""Frozen-base transfer models: VGG16, ResNet50 and InceptionV3 from keras.applications.

Each takes the same raw grayscale pixels 0-255 as `scratch` and does, as layers: resize to its
input size (bilinear), grayscale → 3 channels, its own `preprocess_input` (VGG16/ResNet50 "caffe":
BGR, ImageNet mean subtracted, 0-255 in; InceptionV3 "tf": scaled to -1..1), then the base called
with `training=False` (its BatchNormalization folded into the convolutions, or computed by the
fused kernel in the blocks fine-tuning may train), global average pooling. The head is the same
for all three: feature standardisation (a Normalization layer adapted on the training features) →
dropout 0.3 → dense softmax: a regularised linear probe, so the comparison measures the features
rather than a head architecture, and plain SGD behaves the same whatever the scale of a base's
features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from ..data.dataset import NATIVE_SIZE
from ..errors import UserError
from .batchnorm import with_fast_batchnorm
from .registry import BuiltModel, ModelInfo, register_model

HEAD_DROPOUT = 0.3
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications "caffe" preprocessing
_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BaseFacts:
    """How to build one keras.applications base and where its ImageNet weights live."""

    application: str  # attribute of keras.applications
    preprocessing: str  # "caffe" or "tf"
    weights_url_dir: str
    top_blocks_after: str  # the last layer below the block(s) the finetune variant unfreezes


_BASES = {
    "vgg16": BaseFacts("VGG16", "caffe", "vgg16/", "block4_pool"),  # block5
    "resnet50": BaseFacts("ResNet50", "caffe", "resnet/", "conv4_block6_out"),  # conv5
    "inceptionv3": BaseFacts("InceptionV3", "tf", "inception_v3/", "mixed8"),  # mixed9 and mixed10
}

_INFOS = [
    ModelInfo("vgg16", "VGG16 ImageNet base (frozen) + linear head", 224, 32, True,
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("resnet50", "ResNet50 ImageNet base (frozen) + linear head", 224, 32, True,
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("inceptionv3", "InceptionV3 ImageNet base (frozen) + linear head", 299, 75, True,
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
]


def model_info_for(name: str) -> ModelInfo:
    """The registered facts of one transfer model."""
    return next(info for info in _INFOS if info.name == name)


def keras_cache_file(info: ModelInfo) -> Path:
    """Where Keras keeps the downloaded ImageNet weights ($KERAS_HOME/models, default ~/.keras/models)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / info.keras_weights_file


def resolve_weights_file(info: ModelInfo, weights: str) -> Path:
    """The weights file for 'imagenet' (Keras cache, else Keras' own download) or an explicit path."""
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        return path
    cached = keras_cache_file(info)
    if cached.is_file():
        return cached
    try:
        return Path(keras.utils.get_file(info.keras_weights_file, _WEIGHTS_URL + _BASES[info.name].weights_url_dir
                                         + info.keras_weights_file, cache_subdir="models",
                                         cache_dir=str(cached.parent.parent)))
    except Exception as error:  # no network, proxy, HTTP error: all mean "not available"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise UserError(
            f"ImageNet weights for {info.name} are not in the Keras cache ({cached}) and could not be downloaded "
            f"({reason}); put that file there, or use --weights PATH or --weights none"
        ) from None


def load_base_weights(base, path: Path) -> None:
    """Load a Keras-3 `.weights.h5` or a legacy `.h5` (the ImageNet files) into the base."""
    try:
        base.load_weights(str(path))
    except Exception as error:
        raise UserError(f"cannot load weights from {path} into {base.name}: {str(error).splitlines()[0]}") from None


def _preprocess(x, mode: str):
    if mode == "caffe":  # RGB→BGR is a no-op on replicated gray; subtract the BGR means
        return layers.Normalization(mean=IMAGENET_MEAN_BGR, variance=(1.0, 1.0, 1.0), name="caffe_preprocess")(x)
    return layers.Rescaling(1 / 127.5, offset=-1.0, name="tf_preprocess")(x)


VARIANCE_FLOOR = 0.01  # of the median feature variance


def adapt_feature_norm(built: BuiltModel, features) -> None:
    """Adapt the head's standardisation to the training features, with each feature's variance
    floored at VARIANCE_FLOOR x the median: a feature (nearly) constant over the training set would
    otherwise be divided by ~0, and the first change fine-tuning makes to the base would blow it up."""
    import numpy as np

    norm = built.head.get_layer("feature_norm")
    norm.adapt(features)
    variance = np.asarray(norm.adapt_variance)
    norm.adapt_variance.assign(np.maximum(variance, VARIANCE_FLOOR * np.median(variance)))
    norm.finalize_state()


def top_blocks_after(name: str) -> str:
    """The last layer of a transfer model's base below the block(s) its finetune variant trains."""
    return _BASES[name].top_blocks_after


def _top_block_layers(base, name: str) -> set[str]:
    names = [layer.name for layer in base.layers]
    return set(names[names.index(top_blocks_after(name)) + 1:])


def unfreeze_top(built: BuiltModel) -> int:
    """Make the base's top block(s) trainable, BatchNorm excepted; returns layers unfrozen."""
    top = _top_block_layers(built.base, built.info.name)
    built.base.trainable = True
    count = 0
    for layer in built.base.layers:
        unfrozen = layer.name in top and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = unfrozen
        count += unfrozen
    return count


def build_transfer(info: ModelInfo, num_classes: int, image_size: int, weights: str | None = None, **_options) -> BuiltModel:
    """Raw pixels → resize → 3 channels → preprocess → frozen base → pooled features → head."""
    facts = _BASES[info.name]
    application = getattr(keras.applications, facts.application)
    base = application(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights not in (None, "none"):
        load_base_weights(base, resolve_weights_file(info, weights))
    # same numbers; BatchNorm below the block(s) fine-tuning may train folded into the convolutions
    top = _top_block_layers(base, info.name)
    base = with_fast_batchnorm(base, may_train=lambda name: name in top)
    base.trainable = False

    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(pixels)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = _preprocess(x, facts.preprocessing)
    x = base(x, training=False)
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    extractor = keras.Model(pixels, features, name=f"{info.name}_features")

    feature_in = keras.Input((features.shape[-1],), name="features")
    h = layers.Normalization(name="feature_norm")(feature_in)
    h = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(h)
    probs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(h)
    head = keras.Model(feature_in, probs, name="head")

    full = keras.Model(pixels, head(extractor(pixels)), name=info.name)
    return BuiltModel(info, full, extractor=extractor, head=head, base=base)


for _info in _INFOS:
    register_model(_info)(build_transfer)

"""Frozen-base transfer models: VGG16, ResNet50, InceptionV3 and MobileNet from keras.applications.

Each takes the same raw grayscale pixels 0-255 as `scratch` and does, as layers: resize to its
input size (bilinear), grayscale → 3 channels, its own `preprocess_input` (VGG16/ResNet50 "caffe":
BGR, ImageNet mean subtracted, 0-255 in; InceptionV3 and MobileNet "tf": scaled to -1..1), then the base called
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
    has_width: bool = False  # MobileNet: a width multiplier (alpha), part of its weights file's name


_BASES = {
    "vgg16": BaseFacts("VGG16", "caffe", "vgg16/", "block4_pool"),  # block5
    "resnet50": BaseFacts("ResNet50", "caffe", "resnet/", "conv4_block6_out"),  # conv5
    "inceptionv3": BaseFacts("InceptionV3", "tf", "inception_v3/", "mixed8"),  # mixed9 and mixed10
    "mobilenet": BaseFacts("MobileNet", "tf", "mobilenet/", "conv_pw_11_relu", True),  # blocks 12 and 13
}
MOBILENET_WEIGHT_SIZES = (128, 160, 192, 224)  # the input sizes they were trained at

_INFOS = [
    ModelInfo("vgg16", "VGG16 ImageNet base (frozen) + linear head", 224, 32, True,
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("resnet50", "ResNet50 ImageNet base (frozen) + linear head", 224, 32, True,
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("inceptionv3", "InceptionV3 ImageNet base (frozen) + linear head", 299, 75, True,
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("mobilenet", "MobileNet v1 ImageNet base (frozen; width = alpha) + linear head", 224, 32, True,
              "mobilenet_{alpha}_{size}_tf_no_top.h5", default_width=0.25),
]


def model_info_for(name: str) -> ModelInfo:
    """The registered facts of one transfer model."""
    return next(info for info in _INFOS if info.name == name)


_ALPHA_TEXT = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}  # how Keras writes a MobileNet width in file names


def imagenet_file_names(info: ModelInfo, width: float | None = None, image_size: int | None = None) -> list[str]:
    """The names Keras gives a base's ImageNet no-top weights, preferred first. MobileNet's name its width
    and the size they were trained at: `image_size` where Keras publishes that size, then 224 (what Keras
    itself loads for any other size; the weights fit every size)."""
    if not _BASES[info.name].has_width:
        return [info.keras_weights_file]
    width = info.default_width if width is None else width
    if width not in _ALPHA_TEXT:
        raise UserError(f"--width {width} has no ImageNet MobileNet weights (Keras publishes "
                        f"{', '.join(map(str, _ALPHA_TEXT))}); use one of those, or --weights none/PATH")
    sizes = [image_size] if image_size in MOBILENET_WEIGHT_SIZES and image_size != 224 else []
    return [info.keras_weights_file.format(alpha=_ALPHA_TEXT[width], size=size) for size in sizes + [224]]


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded ImageNet weights ($KERAS_HOME/models, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def cached_imagenet_file(info: ModelInfo, width: float | None = None, image_size: int | None = None) -> Path | None:
    """The ImageNet weights file in Keras' cache that a base would load, or None (no download tried)."""
    return next((keras_cache_dir() / name for name in imagenet_file_names(info, width, image_size)
                 if (keras_cache_dir() / name).is_file()), None)


def resolve_weights_file(info: ModelInfo, weights: str, width: float | None = None,
                         image_size: int | None = None) -> Path:
    """The weights file for 'imagenet' (Keras cache, else Keras' own download) or an explicit path."""
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        return path
    cached = cached_imagenet_file(info, width, image_size)
    if cached is not None:
        return cached
    cached = keras_cache_dir() / imagenet_file_names(info, width, image_size)[0]
    try:
        return Path(keras.utils.get_file(cached.name, _WEIGHTS_URL + _BASES[info.name].weights_url_dir
                                         + cached.name, cache_subdir="models",
                                         cache_dir=str(cached.parent.parent)))
    except Exception as error:  # no network, proxy, HTTP error: all mean "not available"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise UserError(
            f"ImageNet weights for {info.name} are not in the Keras cache ({cached}) and could not be downloaded "
            f"({reason}); put that file there, or use --weights PATH or --weights none"
        ) from None


def width_of_weights_file(path: Path) -> float:
    """A MobileNet weights file's width multiplier, read off its first convolution (32 x alpha filters)."""
    import h5py

    kernels = []
    try:
        with h5py.File(path, "r") as f:
            group = f["conv1"] if "conv1" in f else f["layers/conv1/vars"]  # legacy .h5 / Keras-3 .weights.h5
            group.visititems(lambda _, item: kernels.append(item.shape) if len(getattr(item, "shape", ())) == 4 else None)
            return kernels[0][-1] / 32
    except (OSError, KeyError, IndexError):
        raise UserError(f"{path} is not a MobileNet weights file (no first convolution 'conv1' in it)") from None


def load_base_weights(base, path: Path) -> None:
    """Load a Keras-3 `.weights.h5` or a legacy `.h5` (the ImageNet files) into the base; a file that
    does not fill every layer of it (Keras would only warn, leaving layers at random) is an error."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            base.load_weights(str(path))
        except Exception as error:
            raise UserError(f"cannot load weights from {path} into {base.name}: {str(error).splitlines()[0]}") from None
    unfilled = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
    if unfilled:
        raise UserError(f"cannot load weights from {path} into {base.name}: {unfilled[0].split('.')[0]}")


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


def has_width(name: str) -> bool:
    """Whether a transfer base has a width multiplier (MobileNet's alpha)."""
    return _BASES[name].has_width


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


def build_transfer(info: ModelInfo, num_classes: int, image_size: int, weights: str | None = None,
                   width: float | None = None, variant: str = "frozen", **_options) -> BuiltModel:
    """Raw pixels → resize → 3 channels → preprocess → frozen base → pooled features → head.
    Variant 'full' trains the whole network end to end instead (BatchNorm too), from the weights
    loaded (ImageNet: full fine-tuning; none: the architecture from random initialisation)."""
    facts = _BASES[info.name]
    application = getattr(keras.applications, facts.application)
    shape = {"alpha": width or info.default_width} if facts.has_width else {}
    base = application(include_top=False, weights=None, input_shape=(image_size, image_size, 3), **shape)
    if weights not in (None, "none"):
        load_base_weights(base, resolve_weights_file(info, weights, width, image_size))
    full_training = variant == "full"
    # same numbers; BatchNorm that never trains folded into the convolution before it
    top = _top_block_layers(base, info.name)
    base = with_fast_batchnorm(base, may_train=lambda name: full_training or name in top)
    base.trainable = full_training

    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(pixels)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = _preprocess(x, facts.preprocessing)
    x = base(x) if full_training else base(x, training=False)
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    if full_training:  # one network, trained like a scratch model
        h = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(features)
        probs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(h)
        return BuiltModel(info, keras.Model(pixels, probs, name=info.name), base=base)
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

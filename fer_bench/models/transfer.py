"""Transfer models: VGG16, ResNet50, InceptionV3, MobileNet and MobileNetV2 from keras.applications
(ImageNet), and MobileFaceNet (face identity, MS-Celeb-1M; models/mobilefacenet.py).

Each takes the same raw grayscale pixels 0-255 as `scratch` and does, as layers: resize to its
input size (bilinear), grayscale → 3 channels, its own `preprocess_input` (VGG16/ResNet50 "caffe":
BGR, ImageNet mean subtracted, 0-255 in; InceptionV3 and the MobileNets "tf": scaled to -1..1;
MobileFaceNet "torch": 0..1 standardised by ImageNet's mean and std), then the base called
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
from typing import Callable

import keras
from keras import layers

from ..data.dataset import NATIVE_SIZE
from ..errors import UserError
from . import mobilefacenet
from .batchnorm import with_fast_batchnorm
from .registry import BuiltModel, ModelInfo, register_model

HEAD_DROPOUT = 0.3
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications "caffe" preprocessing
IMAGENET_MEAN_RGB, IMAGENET_STD_RGB = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # "torch" preprocessing, on 0..1
_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BaseFacts:
    """How to build one base (random weights) and where its pretrained weights live."""

    build: Callable[..., keras.Model]  # (input_shape, **width) → the base, weights random
    preprocessing: str  # "caffe", "tf" or "torch"
    weights_url_dir: str | None  # under Keras' download address; None: shipped inside this package
    top_blocks_after: str  # the last layer below the block(s) the finetune variant unfreezes
    width_argument: str | None = None  # the MobileNets: a width multiplier (alpha), part of their file names


def _application(name: str) -> Callable[..., keras.Model]:
    return lambda input_shape, **width: getattr(keras.applications, name)(include_top=False, weights=None,
                                                                           input_shape=input_shape, **width)


_BASES = {
    "vgg16": BaseFacts(_application("VGG16"), "caffe", "vgg16/", "block4_pool"),  # block5
    "resnet50": BaseFacts(_application("ResNet50"), "caffe", "resnet/", "conv4_block6_out"),  # conv5
    "inceptionv3": BaseFacts(_application("InceptionV3"), "tf", "inception_v3/", "mixed8"),  # mixed9 and mixed10
    "mobilenet": BaseFacts(_application("MobileNet"), "tf", "mobilenet/", "conv_pw_11_relu", "alpha"),  # blocks 12-13
    "mobilenetv2": BaseFacts(_application("MobileNetV2"), "tf", "mobilenet_v2/", "block_15_add", "alpha"),  # 16, Conv_1
    "mobilefacenet": BaseFacts(lambda input_shape: mobilefacenet.mobilefacenet(input_shape), "torch", None,
                               "features_12_project_bn"),  # blocks 13-14, conv2
}
# The input sizes Keras publishes ImageNet weights for (the weights fit every size; Keras loads 224's otherwise)
_WEIGHT_SIZES = {"mobilenet": (128, 160, 192, 224), "mobilenetv2": (96, 128, 160, 192, 224)}

_INFOS = [
    ModelInfo("vgg16", "VGG16 ImageNet base (frozen) + linear head", 224, 32, True,
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("resnet50", "ResNet50 ImageNet base (frozen) + linear head", 224, 32, True,
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("inceptionv3", "InceptionV3 ImageNet base (frozen) + linear head", 299, 75, True,
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ModelInfo("mobilenet", "MobileNet v1 ImageNet base (frozen; width = alpha) + linear head", 224, 32, True,
              "mobilenet_{alpha}_{size}_tf_no_top.h5", default_width=0.25),
    ModelInfo("mobilenetv2", "MobileNetV2 ImageNet base (frozen; width = alpha) + linear head", 224, 32, True,
              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5", default_width=1.0),
    ModelInfo("mobilefacenet", "MobileFaceNet face-identity base (MS-Celeb-1M; frozen) + linear head", 112, 32, True,
              mobilefacenet.SHIPPED_WEIGHTS.name, pretrained="ms1m"),
]

# How Keras writes a width in file names
_ALPHA_TEXT = {"mobilenet": {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"},
               "mobilenetv2": {a: str(a) for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)}}


def imagenet_file_names(info: ModelInfo, width: float | None = None, image_size: int | None = None) -> list[str]:
    """The names Keras gives a base's ImageNet no-top weights, preferred first. The MobileNets' name their
    width and the size they were trained at: `image_size` where Keras publishes that size, then 224 (what
    Keras itself loads for any other size; the weights fit every size)."""
    if not _BASES[info.name].width_argument:
        return [info.keras_weights_file]
    width = info.default_width if width is None else width
    alphas = _ALPHA_TEXT[info.name]
    if width not in alphas:
        raise UserError(f"--width {width} has no ImageNet {info.name} weights (Keras publishes "
                        f"{', '.join(map(str, alphas))}); use one of those, or --weights none/PATH")
    sizes = [image_size] if image_size in _WEIGHT_SIZES[info.name] and image_size != 224 else []
    return [info.keras_weights_file.format(alpha=alphas[width], size=size) for size in sizes + [224]]


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded ImageNet weights ($KERAS_HOME/models, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def cached_pretrained_file(info: ModelInfo, width: float | None = None, image_size: int | None = None) -> Path | None:
    """The file a base's own pretrained weights come from: shipped in this package (MobileFaceNet), or
    ImageNet's in Keras' cache; None when that is not there (no download tried)."""
    if _BASES[info.name].weights_url_dir is None:
        return mobilefacenet.SHIPPED_WEIGHTS
    return next((keras_cache_dir() / name for name in imagenet_file_names(info, width, image_size)
                 if (keras_cache_dir() / name).is_file()), None)


def weights_key(cfg) -> str:
    """Identity of a resolved run config's base weights: a random base depends on the seed, a file
    (ImageNet's too: whichever file sits in Keras' cache; a shipped one) on its content. ImageNet weights
    not in the cache (yet) count as 'imagenet-missing': such a run cannot train until they are there."""
    import hashlib

    from .registry import model_info

    if cfg.weights == "none":
        return f"random-seed{cfg.seed}"
    info = model_info(cfg.model)
    path = cfg.weights if cfg.weights != info.pretrained else cached_pretrained_file(info, cfg.width, cfg.image_size)
    if path is None:
        return f"{cfg.weights}-missing"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"file-{h.hexdigest()[:16]}"


def resolve_weights_file(info: ModelInfo, weights: str, width: float | None = None,
                         image_size: int | None = None) -> Path:
    """The weights file for the base's own pretrained name (shipped, Keras cache, else Keras' own
    download) or an explicit path."""
    if weights != info.pretrained:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        return path
    cached = cached_pretrained_file(info, width, image_size)
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
            f"({reason}); put that file there, or name a file with --weights PATH (in an experiment: --weights "
            f"{info.name}=PATH, or [weights] {info.name} = \"PATH\"), or use --weights none"
        ) from None


# The layer whose filters tell a MobileNet's width, and their number at width 1 (MobileNetV2's first
# layers round their widths to multiples of 8, so widths 0.35 and 0.5 are told apart only by the last block)
_WIDTH_LAYER = {"mobilenet": ("conv1", 32), "mobilenetv2": ("block_16_project", 320)}


def width_of_weights_file(name: str, path: Path) -> float:
    """A MobileNet weights file's width multiplier, read off the number of filters of one convolution."""
    import h5py

    layer, filters = _WIDTH_LAYER[name]
    kernels = []
    try:
        with h5py.File(path, "r") as f:
            group = f[layer] if layer in f else f[f"layers/{layer}/vars"]  # legacy .h5 / Keras-3 .weights.h5
            group.visititems(lambda _, item: kernels.append(item.shape) if len(getattr(item, "shape", ())) == 4 else None)
            return round(kernels[0][-1] / filters, 2)
    except (OSError, KeyError, IndexError, TypeError):
        raise UserError(f"{path} is not a {name} weights file (no convolution '{layer}' in it)") from None


def load_base_weights(base, path: Path) -> None:
    """Load a Keras-3 `.weights.h5` or a legacy `.h5` (the ImageNet files), or MobileFaceNet's state dict
    (.npz), into the base; a file that does not fill every layer of it (Keras would only warn, leaving
    layers at random) is an error."""
    import warnings

    if Path(path).suffix == ".npz":
        return mobilefacenet.load_state_dict(base, Path(path))

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
    if mode == "torch":  # (x / 255 - mean) / std, as one standardisation of 0..255
        return layers.Normalization(mean=[255 * m for m in IMAGENET_MEAN_RGB],
                                    variance=[(255 * s) ** 2 for s in IMAGENET_STD_RGB], name="torch_preprocess")(x)
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
    """Whether a transfer base has a width multiplier (the MobileNets' alpha)."""
    return _BASES[name].width_argument is not None


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


def arcface_border(image_size: int) -> int:
    """The side border that turns FER2013's framing into ArcFace's at `image_size`: FER2013's crop (eyes
    36.5 % of the width apart, at 39 % of the height, the mouth 39 % of the width below them) shrunk to
    0.89 of the frame (the mean of the two distance ratios against ArcFace's 112 px template: eyes 31.5 %
    apart at 46 % of the height, the mouth 36 % below), with this border on each side, twice it on top
    (the eyes then sit at 46 %) and none below."""
    return round(image_size / 16)


def build_transfer(info: ModelInfo, num_classes: int, image_size: int, weights: str | None = None,
                   width: float | None = None, variant: str = "frozen", framing: str = "fer",
                   **_options) -> BuiltModel:
    """Raw pixels → resize → 3 channels → preprocess (→ ArcFace framing) → frozen base → pooled features →
    head. Variant 'full' trains the whole network end to end instead (BatchNorm too), from the weights
    loaded (ImageNet: full fine-tuning; none: the architecture from random initialisation)."""
    facts = _BASES[info.name]
    shape = {facts.width_argument: width or info.default_width} if facts.width_argument else {}
    base = facts.build((image_size, image_size, 3), **shape)
    if weights not in (None, "none"):
        load_base_weights(base, resolve_weights_file(info, weights, width, image_size))
    full_training = variant == "full"
    # same numbers; BatchNorm that never trains folded into the convolution before it
    top = _top_block_layers(base, info.name)
    base = with_fast_batchnorm(base, may_train=lambda name: full_training or name in top)
    base.trainable = full_training

    border = arcface_border(image_size) if framing == "arcface" else 0
    inner = image_size - 2 * border
    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = layers.Resizing(inner, inner, interpolation="bilinear", name="resize")(pixels)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = _preprocess(x, facts.preprocessing)
    if border:  # padded with zeros after preprocessing: the base's mean colour
        x = layers.ZeroPadding2D(((2 * border, 0), (border, border)), name="arcface_framing")(x)
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

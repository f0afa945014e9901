"""A VGG-style CNN with BatchNorm for 48x48 faces, after Khaireddin & Chen (2021, "Facial Emotion
Recognition: State of the Art Performance on FER2013"), registered as `vggnet`.

Four stages of 2 x (3x3 conv → BatchNorm → ReLU) then 2x2 max-pooling, 64→128→256→512 channels at
width 1.0, then a dropout-regularised fully connected head. The paper's network (width 1.0 and
two 4096-unit layers, ~30 M parameters) is far beyond a CPU budget; `--width` scales every stage,
and the head is one 256-unit layer. The default width 0.5 (32→256 channels) has 1.8 M parameters.
"""

from __future__ import annotations

import keras
from keras import layers

from ..data.dataset import NATIVE_SIZE
from .batchnorm import FusedBatchNormalization
from .registry import BuiltModel, ModelInfo, register_model

VGGNET = ModelInfo(
    name="vggnet",
    description="VGG-style CNN with BatchNorm (Khaireddin & Chen 2021), 4 stages, width-scaled",
    default_size=48,
    min_size=16,
    default_width=0.5,
)
STAGE_CHANNELS = (64, 128, 256, 512)
HEAD_UNITS = 256
DROPOUT = 0.4


def _channels(base: int, width: float) -> int:
    return max(8, int(round(base * width / 8)) * 8)


@register_model(VGGNET)
def build_vggnet(info: ModelInfo, num_classes: int, image_size: int, width: float | None = None, **_options) -> BuiltModel:
    """Raw pixels → (resize) → /255 → 4 conv stages → flatten → dense 256 → softmax."""
    width = width or info.default_width
    pixels = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 1), name="pixels")
    x = pixels
    if image_size != NATIVE_SIZE:
        x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(x)
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    for stage, base in enumerate(STAGE_CHANNELS, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(_channels(base, width), 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}")(x)
            x = FusedBatchNormalization(name=f"stage{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(DROPOUT, name="dropout1")(x)
    x = layers.Dense(HEAD_UNITS, activation="relu", name="fc")(x)
    x = layers.Dropout(DROPOUT, name="dropout2")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return BuiltModel(info, keras.Model(pixels, probs, name="vggnet"))

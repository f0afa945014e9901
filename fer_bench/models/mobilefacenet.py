"""MobileFaceNet (Chen et al. 2018), written here layer by layer so that a random initialisation is the
same network, and its face-identity weights (trained on MS-Celeb-1M by foamliu/MobileFaceNet, Apache-2.0)
read straight from the authors' PyTorch state dict saved as numpy arrays.

The network: conv1 (3x3/2, ReLU6) → dw_conv (depthwise + pointwise, ReLU) → 15 inverted residual
blocks → conv2 (1x1, 512, ReLU6) → gdconv (7x7 global depthwise) → conv3 + BN: the 128-d embedding.
As a transfer base it ends at conv2 (any input size >= 32; global average pooling follows, as for
every base here); the embedding head exists for the parity check against the authors' ONNX export at
112 px. PyTorch pads 1 pixel on every side of a 3x3 convolution, also at stride 2 (Keras' "same"
pads only bottom/right there), so every 3x3 layer is ZeroPadding2D(1) + "valid".

MS-Celeb-1M was withdrawn by its publisher (Microsoft, 2019) over consent concerns: say so wherever
a model built on these weights is described.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from ..errors import UserError

BLOCKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))  # (t, c, n, s)
BN_EPSILON = 1e-5  # PyTorch's
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "mobilefacenet_ms1m_state_dict.npz"
FEATURES_LAYER = "conv2_relu"  # the base's output (7x7x512 at 112 px)


def _bn(x, name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)(x)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: str | None, depthwise=False):
    """PyTorch's Conv2d(pad kernel//2, no bias) → BatchNorm → activation (relu6, relu or none)."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, use_bias=False, name=f"{name}_conv")(x)
    x = _bn(x, f"{name}_bn")
    if activation == "relu6":
        return layers.ReLU(6.0, name=f"{name}_relu")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if activation == "relu" else x


def _inverted_residual(x, expansion: int, filters: int, stride: int, name: str):
    inputs = x
    x = _conv_bn(x, inputs.shape[-1] * expansion, 1, 1, f"{name}_expand", "relu6")
    x = _conv_bn(x, None, 3, stride, f"{name}_depthwise", "relu6", depthwise=True)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", None)
    if stride == 1 and inputs.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def mobilefacenet(input_shape: tuple[int, int, int], embedding: bool = False, name: str = "mobilefacenet") -> keras.Model:
    """The network on preprocessed RGB input, weights random: up to conv2 (a transfer base), or with
    `embedding` through gdconv and conv3 to the 128-d face embedding (needs 112 px)."""
    inputs = keras.Input(input_shape, name="rgb")
    x = _conv_bn(inputs, 64, 3, 2, "conv1", "relu6")
    x = _conv_bn(x, None, 3, 1, "dw_conv_depthwise", "relu", depthwise=True)
    x = _conv_bn(x, 64, 1, 1, "dw_conv_pointwise", "relu")
    index = 0
    for expansion, filters, repeats, stride in BLOCKS:
        for repeat in range(repeats):
            x = _inverted_residual(x, expansion, filters, stride if repeat == 0 else 1, f"features_{index}")
            index += 1
    x = _conv_bn(x, 512, 1, 1, "conv2", "relu6")
    if embedding:
        x = layers.DepthwiseConv2D(7, use_bias=False, name="gdconv_conv")(x)
        x = _bn(x, "gdconv_bn")
        x = layers.Conv2D(128, 1, name="conv3")(x)
        x = layers.Flatten(name="flatten")(_bn(x, "bn"))
    return keras.Model(inputs, x, name=name)


def _torch_names(layer_name: str) -> str:
    """The PyTorch prefix of one of our layers (e.g. features_3_depthwise_conv → features.3.conv.1.0)."""
    parts = layer_name.split("_")
    if parts[0] == "features":
        block, role, kind = parts[1], parts[2], parts[3]
        inner = {"expand": "conv.0.", "depthwise": "conv.1.", "project": ""}[role]
        if role == "project":
            return f"features.{block}.conv.{2 if kind == 'conv' else 3}"
        return f"features.{block}.{inner}{0 if kind == 'conv' else 1}"
    if parts[0] == "dw":  # dw_conv_depthwise_conv / _bn, dw_conv_pointwise_conv / _bn
        return {"depthwise_conv": "dw_conv.depthwise", "depthwise_bn": "dw_conv.bn1",
                "pointwise_conv": "dw_conv.pointwise", "pointwise_bn": "dw_conv.bn2"}["_".join(parts[2:])]
    fixed = {"conv1_conv": "conv1.0", "conv1_bn": "conv1.1", "conv2_conv": "conv2.0", "conv2_bn": "conv2.1",
             "gdconv_conv": "gdconv.depthwise", "gdconv_bn": "gdconv.bn", "conv3": "conv3", "bn": "bn"}
    return fixed[layer_name]


def _keras_arrays(layer, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One layer's Keras weights from the PyTorch arrays (kernels transposed to Keras' layout)."""
    prefix = _torch_names(layer.name)
    if isinstance(layer, layers.BatchNormalization):
        return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    kernel = state[f"{prefix}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):  # (c, 1, kh, kw) → (kh, kw, c, 1)
        arrays = [kernel.transpose(2, 3, 0, 1)]
    else:  # (out, in, kh, kw) → (kh, kw, in, out)
        arrays = [kernel.transpose(2, 3, 1, 0)]
    return arrays + ([state[f"{prefix}.bias"]] if layer.use_bias else [])


def load_state_dict(network: keras.Model, path: Path) -> None:
    """Fill every weighted layer of `network` from the authors' state dict (.npz of PyTorch-named
    arrays); a file that lacks a layer or holds another shape is one clear error."""
    try:
        with np.load(path) as archive:
            state = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read MobileFaceNet weights {path}: {error}") from None
    for layer in network.layers:
        if not layer.weights:
            continue
        try:
            layer.set_weights([a.astype(np.float32) for a in _keras_arrays(layer, state)])
        except (KeyError, ValueError) as error:
            raise UserError(f"{path} is not a MobileFaceNet state dict (layer {layer.name}: {error})") from None

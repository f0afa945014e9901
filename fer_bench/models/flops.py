"""Floating-point operations per image of a built model: convolutions and dense layers, a
multiply-add counted as two, everything else (BatchNorm, activations, pooling) left out as small."""

from __future__ import annotations

import math

from keras import layers


def _layer_flops(layer) -> int:
    if isinstance(layer, (layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Conv2D)):
        out_h, out_w, out_c = layer.output.shape[1:4]
        in_c = layer.input.shape[-1]
        k = math.prod(layer.kernel_size)
        positions = out_h * out_w
        if isinstance(layer, layers.SeparableConv2D):
            return 2 * positions * in_c * (k * layer.depth_multiplier + out_c)
        if isinstance(layer, layers.DepthwiseConv2D):
            return 2 * positions * out_c * k
        return 2 * positions * out_c * k * in_c // layer.groups
    if isinstance(layer, layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def flops_per_image(model) -> int:
    """FLOPs of one forward pass of `model` on one image, nested models included."""
    total = 0
    for layer in model.layers:
        total += flops_per_image(layer) if hasattr(layer, "layers") else _layer_flops(layer)
    return total

"""Keras' BatchNormalization computed by TensorFlow's fused kernel.

Keras 3 normalises a batch with about ten separate elementwise operations (moments, subtract,
multiply, add, and as many again for the gradient), each a full pass over the activations, and in
bfloat16 it casts to float32 and back around them. On a CPU those passes, not the convolutions,
dominate a step at large activations: profiled on the seed CNN at 244 px, BatchNorm cost as much as
the forward convolutions. TensorFlow's FusedBatchNormV3 normalises in one pass (training: the batch
statistics in the same pass, the gradient in one more; inference: the moving statistics). Same
function, same variables, same moving-average update; every case the fused kernel does not cover
(masks, renormalisation, synchronised statistics, non-TensorFlow backends) is left to Keras.
`with_fast_batchnorm` gives a built model (a keras.applications base) the same layer, and where a
BatchNormalization will never train it folds the layer into the convolution before it, which then
normalises for free (one more profile: in a frozen ResNet50 at 244 px the fused kernel's passes were
still 12 % of the time, 9 % in InceptionV3).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="fer_bench")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel."""

    def _fused(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and rank == 4 and self.axis in (-1, rank - 1)
                and mask is None and not self.renorm and not self.synchronized)

    def call(self, inputs, training=None, mask=None):
        learning = bool(training) and self.trainable  # a frozen layer normalises with its moving statistics
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        if not learning:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon, is_training=False)
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, is_training=True)
        # The fused kernel returns the unbiased batch variance; Keras averages the biased one.
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


@keras.saving.register_keras_serializable(package="fer_bench")
class FoldedBatchNormalization(layers.Layer):
    """Where a BatchNormalization stood whose work now happens in the convolution before it: passes
    its input through (and takes the BatchNormalization's call arguments)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _fold(conv: layers.Conv2D, norm: layers.BatchNormalization) -> list:
    """Kernel and bias of `conv` followed by `norm` at inference, as one convolution (computed in float64)."""
    factor = (np.asarray(norm.gamma, "float64") if norm.scale else 1.0) / np.sqrt(
        np.asarray(norm.moving_variance, "float64") + norm.epsilon)
    bias = np.asarray(conv.bias, "float64") if conv.use_bias else 0.0
    shift = np.asarray(norm.beta, "float64") if norm.center else 0.0
    kernel = np.asarray(conv.kernel, "float64") * factor  # output channels are the kernel's last axis
    return [kernel.astype("float32"), ((bias - np.asarray(norm.moving_mean, "float64")) * factor + shift).astype("float32")]


def _foldable(model: keras.Model, may_train: Callable[[str], bool]) -> dict[str, layers.BatchNormalization]:
    """{convolution name: the BatchNormalization folded into it}: each channels-last BatchNormalization
    fed by a Conv2D whose output goes nowhere else, neither of them ever to be trained."""
    producer = {id(layer.output): layer for layer in model.layers}
    uses = Counter(id(tensor) for layer in model.layers if not isinstance(layer, layers.InputLayer)
                   for tensor in keras.tree.flatten(layer.input))
    pairs = {}
    for norm in model.layers:
        conv = producer.get(id(norm.input)) if isinstance(norm, layers.BatchNormalization) else None
        if (type(conv) is layers.Conv2D and uses[id(conv.output)] == 1 and norm.axis in (-1, 3)
                and not may_train(conv.name) and not may_train(norm.name)):
            pairs[conv.name] = norm
    return pairs


def with_fast_batchnorm(model: keras.Model, may_train: Callable[[str], bool] = lambda name: True) -> keras.Model:
    """A copy of a functional model (same layer names, weights and trainable flags) whose
    BatchNormalization layers are FusedBatchNormalization, except those `may_train` says will never
    train (by layer name): folded into the Conv2D before them, they become FoldedBatchNormalization."""
    folds = _foldable(model, may_train)
    folded = {norm.name for norm in folds.values()}

    def clone(layer):
        if layer.name in folds:
            return type(layer).from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded:
            return FoldedBatchNormalization(name=layer.name, dtype=layer.dtype_policy.name)
        cls = FusedBatchNormalization if type(layer) is layers.BatchNormalization else type(layer)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for original, cloned in zip(model.layers, copy.layers):  # the same graph, layer for layer
        if original.name in folds:
            cloned.set_weights(_fold(original, folds[original.name]))
        elif original.name not in folded:
            cloned.set_weights(original.get_weights())
        cloned.trainable = original.trainable
    return copy

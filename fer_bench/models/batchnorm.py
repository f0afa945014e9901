"""Keras' BatchNormalization computed by TensorFlow's fused kernel.

Keras 3 normalises a batch with about ten separate elementwise operations (moments, subtract,
multiply, add, and as many again for the gradient), each a full pass over the activations, and in
bfloat16 it casts to float32 and back around them. On a CPU those passes, not the convolutions,
dominate a step at large activations: profiled on the seed CNN at 244 px, BatchNorm cost as much as
the forward convolutions. TensorFlow's FusedBatchNormV3 normalises in one pass (training: the batch
statistics in the same pass, the gradient in one more; inference: the moving statistics). Same
function, same variables, same moving-average update; every case the fused kernel does not cover
(masks, renormalisation, synchronised statistics, non-TensorFlow backends) is left to Keras.
`with_fused_batchnorm` gives a built model (a keras.applications base) the same layer.
"""

from __future__ import annotations

import keras
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


def with_fused_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of a functional model (same layer names, weights and trainable flags) whose
    BatchNormalization layers are FusedBatchNormalization."""
    def clone(layer):
        cls = FusedBatchNormalization if type(layer) is layers.BatchNormalization else type(layer)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    for original, cloned in zip(model.layers, copy.layers):
        cloned.trainable = original.trainable
    return copy

"""Keras' BatchNormalization computed by TensorFlow's fused kernel while training.

Keras 3 normalises a batch with about ten separate elementwise operations (moments, subtract,
multiply, add, and as many again for the gradient), each a full pass over the activations. On a CPU
those passes, not the convolutions, dominate a step at large activations: profiled on the seed CNN
at 244 px, BatchNorm cost as much as the forward convolutions. TensorFlow's FusedBatchNormV3 does
the statistics and the normalisation in one pass and the gradient in one more. Same function, same
variables, same moving-average update; inference and every case the fused kernel does not cover
(masks, renormalisation, synchronised statistics, non-TensorFlow backends, frozen layers) are left
to Keras.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="fer_bench")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step uses TensorFlow's fused kernel."""

    def _fused(self, inputs) -> bool:
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and rank == 4 and self.axis in (-1, rank - 1)
                and not self.renorm and not self.synchronized and self.trainable)

    def call(self, inputs, training=None, mask=None):
        if not training or mask is not None or not self._fused(inputs):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones((channels,), "float32")
        offset = self.beta if self.center else tf.zeros((channels,), "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(scale, "float32"), tf.cast(offset, "float32"), epsilon=self.epsilon, is_training=True)
        # The fused kernel returns the unbiased batch variance; Keras averages the biased one.
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

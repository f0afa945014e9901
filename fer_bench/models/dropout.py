"""Keras' Dropout drawing fewer random bits.

Keras' TensorFlow backend draws a 32-bit random number per activation (one uniform float each) and
keeps the activation where it is at or above the rate. At the seed CNN's 244 px its first dropout
covers 122x122x16 activations per image, and drawing those numbers cost about 8 % of a training
step (profiled). `FewBitsDropout` draws 8 random bits per activation where the rate is a multiple
of 1/256 (the seed's 0.25 and 0.5), else 16: the same Bernoulli mask (a rate that is not a multiple
of 1/65536 rounds to the nearest one), the same 1/(1 - rate) scaling, the identity outside
training. It draws from the layer's own seed generator, so a seeded run repeats itself.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="fer_bench")
class FewBitsDropout(layers.Dropout):
    """`keras.layers.Dropout` drawing 8 or 16 random bits per activation instead of 32."""

    def call(self, inputs, training=False):
        if not training or self.rate in (0, 1) or self.noise_shape is not None or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        import tensorflow as tf

        bits = 8 if float(self.rate * 256).is_integer() else 16
        per_word = 32 // bits
        count = tf.size(inputs)
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), "int32")  # as Keras draws
        words = tf.random.stateless_uniform([(count + per_word - 1) // per_word], seed, minval=None, maxval=None,
                                            dtype="uint32")
        draws = tf.reshape(tf.bitcast(words, "uint8" if bits == 8 else "uint16"), [-1])[:count]
        keep = tf.reshape(draws, tf.shape(inputs)) >= tf.cast(round(self.rate * 2**bits), draws.dtype)
        return tf.where(keep, inputs * tf.cast(1 / (1 - self.rate), inputs.dtype), tf.zeros((), inputs.dtype))

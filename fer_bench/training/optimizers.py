"""Keras' SGD, Adam and AdamW, each weight updated by TensorFlow's fused kernel.

Keras 3 writes an update step as separate tensor operations (SGD: multiply, then subtract; Adam:
about ten), each a full pass over the weights. Where the weights are large the passes cost real
time: the seed CNN's 47.6 M-weight dense layer at 244 px, 47.6 M floats read and written per
pass. TensorFlow's ResourceApplyGradientDescent, ResourceApplyKerasMomentum and ResourceApplyAdam
compute the same formulas as Keras (Keras copied them) in one pass. Everything around the update
stays Keras': learning-rate schedules, weight decay, gradient clipping, the EMA of the weights,
optimizer state in checkpoints. Cases the fused kernels do not cover (sparse gradients, AMSGrad,
other backends) take Keras' own step.
"""

from __future__ import annotations

import keras


def _fusable(gradient) -> bool:
    import tensorflow as tf

    return keras.backend.backend() == "tensorflow" and not isinstance(gradient, tf.IndexedSlices)


def _handle(variable):
    """The TensorFlow resource handle of a Keras or TensorFlow variable."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="fer_bench")
class FusedSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` (plain, momentum or Nesterov) with a one-pass update per weight."""

    def update_step(self, gradient, variable, learning_rate):
        if not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        gradient, learning_rate = tf.cast(gradient, dtype), tf.cast(learning_rate, dtype)
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=learning_rate, delta=gradient)
            return
        accumulator = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(var=_handle(variable), accum=_handle(accumulator), lr=learning_rate,
                                              grad=gradient, momentum=tf.cast(self.momentum, dtype),
                                              use_nesterov=self.nesterov)


class _FusedAdamStep:
    """Adam's update step (shared by Adam and AdamW, whose weight decay Keras applies before it)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


@keras.saving.register_keras_serializable(package="fer_bench")
class FusedAdam(_FusedAdamStep, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with a one-pass update per weight."""


@keras.saving.register_keras_serializable(package="fer_bench")
class FusedAdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a one-pass update per weight."""

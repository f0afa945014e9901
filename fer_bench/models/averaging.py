"""Several finished models as one Keras model: each member's probabilities calibrated with its own
temperature, then averaged. The result takes the same raw pixels as its members, saves as one
`.keras` file and predicts like any single model, so every command that reads a run folder reads
an ensemble's too."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_bench")
class TemperatureScaled(keras.layers.Layer):
    """softmax(log(p) / T) of class probabilities p, in float32: temperature scaling as a layer."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probs):
        log_probs = ops.log(ops.clip(ops.cast(probs, "float32"), 1e-12, 1.0))
        return ops.softmax(log_probs / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def average_of_calibrated(members: list, temperatures: list[float | None]):
    """One model whose output is the mean of the members' calibrated probabilities (a member without a
    temperature enters raw). Members must take the same input. A member that ends in a softmax is
    calibrated with stock layers (its logits scaled by 1/T, then the softmax), so the ensemble opens
    with plain Keras; any other member (an ensemble) through TemperatureScaled."""
    shapes = {tuple(m.inputs[0].shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"members take different inputs: {sorted(shapes)}")
    pixels = keras.Input(shapes.pop(), name="pixels")
    outputs = []
    for i, (member, temperature) in enumerate(zip(members, temperatures)):
        last = member.layers[-1]
        if isinstance(last, keras.layers.Activation) and last.get_config()["activation"] == "softmax":
            logits = keras.Model(member.inputs[0], last.input, name=f"member_{i}")(pixels)
            scaled = keras.layers.Rescaling(1 / (temperature or 1.0), dtype="float32", name=f"calibrated_{i}")(logits)
            outputs.append(keras.layers.Activation("softmax", dtype="float32", name=f"probs_{i}")(scaled))
        else:
            probs = keras.Model(member.inputs[0], member.outputs[0], name=f"member_{i}")(pixels)
            outputs.append(TemperatureScaled(temperature or 1.0, name=f"calibrated_{i}")(probs))
    return keras.Model(pixels, keras.layers.Average(name="mean_probability", dtype="float32")(outputs), name="ensemble")

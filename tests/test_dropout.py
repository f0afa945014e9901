"""FewBitsDropout is Keras' Dropout from fewer random bits: the asked-for share of activations dropped
(8-bit and 16-bit draws), neighbours independent, kept values scaled by 1/(1 - rate), gradients
through the same mask, the identity outside training, a seeded layer repeating itself, the cheap
random op actually used, and a saved model loading in safe mode. TensorFlow kernels can crash
natively, so it runs in a subprocess."""

from conftest import script_report

CHECK = """
import json, sys
import numpy as np, keras, tensorflow as tf
from fer_bench.models.dropout import FewBitsDropout
from fer_bench.models.saved import load_saved_model

x = tf.constant(np.random.default_rng(0).uniform(1, 2, (64, 50, 50, 8)).astype("float32"))
report = {}
for rate in (0.25, 0.4, 0.5):
    layer = FewBitsDropout(rate, seed=3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    grad = tape.gradient(total, x).numpy()
    y = y.numpy()
    kept = y != 0
    pairs = kept.reshape(-1, 2)
    report[str(rate)] = {
        "dropped": float(1 - kept.mean()),
        "both_of_neighbours_kept": float(np.mean(pairs[:, 0] & pairs[:, 1])),
        "kept_scaled": float(np.max(np.abs(y[kept] - x.numpy()[kept] / (1 - rate)))),
        "grad_is_mask": float(np.max(np.abs(grad - kept / (1 - rate)))),
        "inference_identity": bool(np.array_equal(layer(x, training=False).numpy(), x.numpy())),
        "next_call_differs": bool(np.mean((layer(x, training=True).numpy() != 0) != kept) > 0.1),
        "seeded_repeat": bool(np.array_equal(FewBitsDropout(rate, seed=3)(x, training=True).numpy(), y)),
    }
keras.mixed_precision.set_global_policy("mixed_bfloat16")
y16 = FewBitsDropout(0.25, seed=3)(x, training=True)
report["bfloat16"] = [y16.dtype.name, float(np.mean(y16.numpy() == 0))]
keras.mixed_precision.set_global_policy("float32")
layer = FewBitsDropout(0.25)
graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
report["random_ops"] = sorted({op.type for op in graph.get_operations() if "Random" in op.type})
inputs = keras.Input((4,))
model = keras.Model(inputs, FewBitsDropout(0.5)(inputs))
model.save(sys.argv[1])
report["loaded"] = type(load_saved_model(sys.argv[1]).layers[-1]).__name__
print(json.dumps(report))
"""


def test_few_bits_dropout_is_keras_dropout(tmp_path):
    report = script_report(CHECK, str(tmp_path / "d.keras"))
    for rate in (0.25, 0.4, 0.5):
        r = report[str(rate)]
        assert abs(r["dropped"] - rate) < 0.003, r  # 1.28 M draws: the standard error is 0.0004
        assert abs(r["both_of_neighbours_kept"] - (1 - rate) ** 2) < 0.004, r
        assert r["kept_scaled"] < 1e-6 and r["grad_is_mask"] < 1e-6, r
        assert r["inference_identity"] and r["next_call_differs"] and r["seeded_repeat"], r
    assert report["bfloat16"][0] == "bfloat16" and abs(report["bfloat16"][1] - 0.25) < 0.003
    assert "StatelessRandomUniformFullIntV2" in report["random_ops"]  # raw bits, not a uniform float each
    assert "StatelessRandomUniformV2" not in report["random_ops"], report["random_ops"]
    assert report["loaded"] == "FewBitsDropout"

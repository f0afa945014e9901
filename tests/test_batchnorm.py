"""The fused BatchNormalization is Keras' BatchNormalization computed faster: the same outputs,
gradients and moving statistics in float32 and bfloat16, the fused kernel actually used while
training and for inference, and a saved model that loads in safe mode. A transfer base (ResNet50
with ImageNet-format weights the test writes), its BatchNorm folded into the convolutions below
the fine-tuned block and fused in it, gives Keras' features and saves and loads as a run's model.
TensorFlow kernels could crash natively, so the comparisons run in a subprocess."""

from conftest import script_report

COMPARE = """
import json
import sys
import numpy as np, keras, tensorflow as tf
from keras import layers
from fer_bench.models.batchnorm import FusedBatchNormalization
from fer_bench.models.saved import load_saved_model
x = tf.constant(np.random.default_rng(0).normal(2, 3, (8, 6, 6, 5)).astype("float32"))
report = {}
for policy in ("float32", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    results = []
    for layer in (layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2, 5))
        layer.beta.assign(np.linspace(-1, 1, 5))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * tf.range(1, 6, dtype="float32") * x)
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        results.append([np.asarray(v, "float32") for v in
                        (y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False))])
    names = ("output", "grad_input", "grad_gamma", "grad_beta", "moving_mean", "moving_variance", "inference")
    report[policy] = {n: float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
                      for n, a, b in zip(names, *results)}
keras.mixed_precision.set_global_policy("float32")
layer = FusedBatchNormalization()
layer.build(x.shape)
for mode in (True, False):
    graph = tf.function(lambda t: layer(t, training=mode)).get_concrete_function(x).graph
    report[f"fused_ops_training_{mode}"] = sorted({op.type for op in graph.get_operations() if "BatchNorm" in op.type})
inputs = keras.Input((6, 6, 5))
model = keras.Model(inputs, FusedBatchNormalization()(inputs))
model.save(sys.argv[1])
loaded = load_saved_model(sys.argv[1])
report["loaded_class"] = type(loaded.layers[-1]).__name__
report["loaded_same"] = bool(np.allclose(loaded(x), model(x)))
print(json.dumps(report))
"""


def test_fused_batchnorm_equals_keras_batchnorm_and_uses_the_fused_kernel(tmp_path):
    report = script_report(COMPARE, str(tmp_path / "bn.keras"))
    for name, error in report["float32"].items():
        assert error < 1e-4, f"float32 {name}: relative difference {error}"
    for name, error in report["mixed_bfloat16"].items():
        assert error < 2e-2, f"bfloat16 {name}: relative difference {error}"
    assert report["fused_ops_training_True"] == report["fused_ops_training_False"] == ["FusedBatchNormV3"]
    assert report["loaded_class"] == "FusedBatchNormalization" and report["loaded_same"]


BASE = """
import json
import numpy as np, keras
from keras import layers
from fer_bench.models import create_model
from fer_bench.models.batchnorm import FoldedBatchNormalization, FusedBatchNormalization
from fer_bench.models.saved import load_saved_model
from fer_bench.precision import precision_policy
report = {}
for precision in ("float32", "bfloat16"):
    with precision_policy(precision):
        keras.utils.set_random_seed(0)
        plain = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
        rng = np.random.default_rng(0)
        for layer in plain.layers:  # non-trivial statistics and scales, so normalising matters
            if isinstance(layer, layers.BatchNormalization):
                layer.set_weights([rng.uniform(0.5, 2, layer.gamma.shape), rng.normal(0, 0.5, layer.beta.shape),
                                   rng.normal(0, 0.5, layer.moving_mean.shape),
                                   rng.uniform(0.5, 2, layer.moving_variance.shape)])
        plain.save_weights("resnet50.weights.h5")
        built = create_model("resnet50", 2, 32, weights="resnet50.weights.h5")
        x = rng.uniform(-100, 150, (4, 32, 32, 3)).astype("float32")
        ours, theirs = (np.asarray(m(x, training=False), "float32") for m in (built.base, plain))
        report[precision] = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
        report["fused_layers"] = sorted({layer.name[:5] for layer in built.base.layers
                                         if type(layer) is FusedBatchNormalization})
        report["folded_layers"] = sum(type(layer) is FoldedBatchNormalization for layer in built.base.layers)
        report["keras_layers"] = sum(type(layer) is layers.BatchNormalization for layer in plain.layers)
        report["frozen"] = not built.base.trainable and not any(w.trainable for w in built.base.weights)
        built.full.save(f"{precision}.keras")  # a run's best.keras: raw pixels in, probabilities out
        pixels = rng.integers(0, 256, (4, 48, 48, 1)).astype("float32")
        reloaded = np.asarray(load_saved_model(f"{precision}.keras")(pixels), "float32")
        report[f"saved_{precision}"] = float(np.max(np.abs(reloaded - np.asarray(built.full(pixels), "float32"))))
print(json.dumps(report))
"""


def test_transfer_base_folds_or_fuses_batchnorm_and_gives_keras_features(tmp_path):
    report = script_report(BASE, cwd=tmp_path)
    assert report["keras_layers"] == 53  # every BatchNormalization of ResNet50: 43 folded, conv5's 10 fused
    assert report["folded_layers"] == 43 and report["fused_layers"] == ["conv5"], report
    assert report["frozen"]
    assert report["float32"] < 1e-4 and report["bfloat16"] < 3e-2, report
    assert report["saved_float32"] < 1e-6 and report["saved_bfloat16"] < 1e-6, report

"""Recipes, augmentation, precision, test-time augmentation and the strong scratch models."""

import json

import keras
import numpy as np
import pytest

from fer_bench.config import AUGMENTATIONS, RECIPES, RunConfig, resolve
from fer_bench.errors import UserError
from fer_bench.models import create_model
from fer_bench.models.augment import with_augmentation
from fer_bench.precision import (
    bfloat16_unavailable,
    cpu_has_fast_bfloat16,
    precision_policy,
    resolve_precision,
)
from fer_bench.reporting.evaluation import predict_with_tta, tta_views
from fer_bench.run_folder import run_id
from fer_bench.runs.run import execute

FINGERPRINT = {"train_sha256": "a", "test_sha256": "b"}


def test_recipe_values_fill_unset_options_and_change_the_run_id():
    seed = resolve(RunConfig())
    strong = resolve(RunConfig(recipe="strong"))
    assert (seed.epochs, seed.optimizer, seed.learning_rate, seed.augment) == (10, "sgd", 0.01, "none")
    assert strong.optimizer == "adamw" and strong.label_smoothing == 0.1 and strong.schedule == "cosine"
    assert strong.augment == RECIPES["strong"]["augment"]
    assert run_id(seed, FINGERPRINT) != run_id(strong, FINGERPRINT)
    # an override wins over the recipe and is part of the identity too
    assert resolve(RunConfig(recipe="strong", epochs=3)).epochs == 3
    assert run_id(strong, FINGERPRINT) != run_id(resolve(RunConfig(recipe="strong", epochs=3)), FINGERPRINT)
    # the same augmentations in another order are the same run
    a = resolve(RunConfig(augment="zoom,flip"))
    b = resolve(RunConfig(augment="flip,zoom"))
    assert a.augment == "flip,zoom" and run_id(a, FINGERPRINT) == run_id(b, FINGERPRINT)


@pytest.mark.parametrize("options, message", [
    ({"recipe": "fancy"}, "--recipe must be one of"),
    ({"augment": "flip,sepia"}, "--augment must be one of"),
    ({"precision": "int8"}, "--precision must be one of"),
    ({"tta": "all"}, "--tta must be one of"),
    ({"width": 0.5}, "scratch has no width setting"),
    ({"label_smoothing": -0.1}, r"--label-smoothing must be a number in \[0, 1\)"),
])
def test_bad_recipe_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        resolve(RunConfig(**options))


def test_unknown_option_names_the_nearest():
    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        RunConfig.from_dict({"learning_rat": 0.1})


def test_precision_auto_follows_the_cpu(tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("flags\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_fast_bfloat16(flags)
    flags.write_text("flags\t: fpu avx2 fma\n")
    assert not cpu_has_fast_bfloat16(flags)
    assert resolve_precision("float32") == "float32"


def test_bfloat16_is_not_native_where_onednn_is_capped_below_it_or_off(tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("flags\t: fpu avx2 avx512f avx512_bf16\n")
    for environ in ({}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, {"ONEDNN_MAX_CPU_ISA": "all"},
                    {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}):
        assert bfloat16_unavailable(environ) is None, environ
    assert cpu_has_fast_bfloat16(flags, {}) and cpu_has_fast_bfloat16(flags, {"ONEDNN_MAX_CPU_ISA": "avx10_1_512"})
    # emulated (AVX512_CORE) or TensorFlow's own kernels (oneDNN off): runs, but slowly
    assert not cpu_has_fast_bfloat16(flags, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    assert not cpu_has_fast_bfloat16(flags, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    for environ in ({"ONEDNN_MAX_CPU_ISA": "avx2"}, {"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}):
        assert not cpu_has_fast_bfloat16(flags, environ)
        assert "AVX512_CORE or higher" in bfloat16_unavailable(environ)
    assert bfloat16_unavailable({"DNNL_MAX_CPU_ISA": "avx2_vnni"}).startswith("DNNL_MAX_CPU_ISA=AVX2_VNNI leaves")


def test_bfloat16_is_refused_up_front_where_onednn_cannot_run_it(monkeypatch, tmp_path):
    from fer_bench.files import save_model
    from fer_bench.models.saved import load_saved_model

    with precision_policy("bfloat16"):
        save_model(tmp_path / "bf16.keras", create_model("scratch", 2).full)
    save_model(tmp_path / "fp32.keras", create_model("scratch", 2).full)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(UserError, match="--precision bfloat16: ONEDNN_MAX_CPU_ISA=AVX2 .* --precision float32"):
        resolve(RunConfig(precision="bfloat16"))
    with pytest.raises(UserError, match="cannot compute in bfloat16"), precision_policy("bfloat16"):
        pass
    with pytest.raises(UserError, match="bf16.keras: it computes in bfloat16 and ONEDNN_MAX_CPU_ISA=AVX2"):
        load_saved_model(tmp_path / "bf16.keras")
    assert load_saved_model(tmp_path / "fp32.keras").compute_dtype == "float32"


# The README's own workaround for a oneDNN crash (ONEDNN_MAX_CPU_ISA=AVX2) on an AVX512_BF16 CPU: `auto`
# must not pick bfloat16 there, or TensorFlow aborts at the first convolution (a subprocess, so an
# abort is a failed test). On a CPU without AVX512_BF16 `auto` is float32 anyway.
@pytest.mark.slow  # a strong-recipe training in a subprocess
def test_auto_precision_trains_under_the_readme_avx2_workaround(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    command = [sys.executable, "-m", "fer_bench", "run", "--model", "vggnet", "--width", "0.25", "--recipe", "strong",
               "--epochs", "1", "--tta", "none", "--results", str(tmp_path / "results")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (config,) = (tmp_path / "results").glob("*/config.json")
    assert json.loads(config.read_text())["precision_used"] == "float32"
    refused = subprocess.run(command[:-2] + ["--precision", "bfloat16", "--results", str(tmp_path / "other")],
                             capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in refused.stderr and not (tmp_path / "other").exists()


def test_precision_auto_resolves_from_the_probes(monkeypatch):
    from fer_bench import precision

    monkeypatch.setattr(precision, "gpu_has_fast_bfloat16", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda *a: True)
    assert resolve_precision("auto") == "bfloat16" and resolve_precision("float16") == "float16"
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda *a: False)
    assert resolve_precision("auto") == "float32"
    cfg = resolve(RunConfig(recipe="strong"))
    assert cfg.precision == "auto" and cfg.precision_used == "float32"


def test_bfloat16_policy_keeps_probabilities_float32():
    with precision_policy("bfloat16"):
        model = create_model("vggnet", 3, width=0.25).full
    assert keras.config.dtype_policy().name == "float32"  # restored
    assert model.get_layer("stage1_conv1").compute_dtype == "bfloat16"
    probs = model.predict(np.zeros((2, 48, 48, 1), "float32"), verbose=0)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_augmentation_acts_only_in_training(tmp_path):
    model = with_augmentation(create_model("vggnet", 2, width=0.25).full, ",".join(AUGMENTATIONS), seed=0)
    x = np.random.default_rng(0).integers(0, 255, (8, 48, 48, 1)).astype("float32")
    inference = model(x, training=False)
    assert np.allclose(inference, model(x, training=False))
    # inference skips the augmentation layers: the same numbers as the bare model
    assert np.allclose(inference, model.layers[-1](x, training=False), atol=1e-6)
    # in training the augmentation changes the input the network sees
    augmented = x
    for layer in model.layers[1:-1]:
        augmented = layer(augmented, training=True)
    assert not np.allclose(augmented, x)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert np.allclose(reloaded.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    assert np.allclose(reloaded.predict(x, verbose=0), inference, atol=1e-5)


def test_tta_views():
    x = np.arange(2 * 48 * 48, dtype="float32").reshape(2, 48, 48, 1)
    assert len(tta_views(x, "none")) == 1
    flip = tta_views(x, "flip")
    assert len(flip) == 2 and np.array_equal(flip[1][:, :, 0], x[:, :, -1])
    crops = tta_views(x, "crops")
    assert len(crops) == 10 and all(v.shape == x.shape for v in crops)
    assert np.array_equal(crops[0], x) and not np.array_equal(crops[1], x)


def test_tta_averages_over_views():
    import keras

    pixels = keras.Input((48, 48, 1))  # a model whose answer is the brightness of the image's left half
    left = keras.layers.Rescaling(1 / 255)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Cropping2D(((0, 0), (0, 24)))(pixels)))
    mean = keras.Model(pixels, keras.layers.Concatenate()([left, keras.layers.Rescaling(-1.0, offset=1.0)(left)]))
    x = np.zeros((1, 48, 48, 1), "float32")
    x[:, :, :24] = 255
    assert predict_with_tta(mean, x, "none")[0, 0] == pytest.approx(1.0)
    assert predict_with_tta(mean, x, "flip")[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("name, params", [("vggnet", (1_500_000, 2_000_000)), ("minixception", (40_000, 70_000))])
def test_strong_models_build_with_expected_size(name, params):
    model = create_model(name, 7).full
    assert params[0] <= model.count_params() <= params[1]
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)


def test_strong_recipe_run_learns_and_records_tta(tmp_path):
    run_dir = execute(RunConfig(model="vggnet", width=0.25, recipe="strong", epochs=8, warmup_epochs=1, batch_size=16,
                                tta="crops"), output=tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"] == "strong" and config["optimizer"] == "adamw" and config["width"] == 0.25
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85
    assert metrics["tta"]["mode"] == "crops" and metrics["tta"]["accuracy"] >= 0.85
    assert metrics["augmentation"] == RECIPES["strong"]["augment"]
    model = keras.models.load_model(run_dir / "best.keras")
    x = np.random.default_rng(1).integers(0, 255, (4, 48, 48, 1)).astype("float32")
    assert np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_photometric_augmentations_train_and_change_only_pixel_values():
    from fer_bench.models.augment import RandomPhotometric

    layer = RandomPhotometric(brightness=0.3, contrast=0.4, gamma=1.5, blur=1.0, jpeg=True, seed=0)
    x = np.random.default_rng(0).integers(0, 255, (16, 48, 48, 1)).astype("float32")
    changed = np.asarray(layer(x, training=True))
    assert changed.shape == x.shape and 0 <= changed.min() and changed.max() <= 255
    assert np.abs(changed - x).mean() > 1 and np.array_equal(np.asarray(layer(x, training=False)), x)
    # inside a compiled training step (graph mode) too
    model = with_augmentation(create_model("scratch", 2, 16).full, "brightness,contrast,gamma,blur,jpeg", seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(x, np.arange(16) % 2, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

"""MobileNet, the one real ImageNet base here: its features equal keras.applications.MobileNet's with
the shared weights file, its head learns, its width follows the weights file, its ImageNet file is
found in Keras' cache by Keras' own name, and that file's content is part of the run id and the
feature cache key."""

import json
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from conftest import script_report
from fer_bench.config import RunConfig, resolve
from fer_bench.errors import UserError
from fer_bench.models import model_info, transfer

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
needs_weights = pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="../shared/weights/ MobileNet file is absent")

# In a subprocess (TensorFlow kernels): our extractor against Keras' own MobileNet with the same file,
# on the same gray faces replicated to RGB, resized and scaled to -1..1 by Keras' preprocess_input.
SAME_FEATURES = """
import json, sys
import keras, numpy as np
from fer_bench.data.dataset import as_model_input
from fer_bench.data.synthetic import synthetic_split
from fer_bench.models import create_model
weights, size = sys.argv[1], int(sys.argv[2])
faces = synthetic_split(16, seed=3, classes=("happy", "sad")).images
ours = create_model("mobilenet", 2, size, weights=weights).extractor.predict(as_model_input(faces), verbose=0)
reference = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=weights, input_shape=(size, size, 3))
rgb = np.repeat(faces[..., None].astype("float32"), 3, axis=-1)
x = keras.applications.mobilenet.preprocess_input(keras.ops.image.resize(rgb, (size, size), interpolation="bilinear"))
theirs = keras.ops.convert_to_numpy(keras.ops.mean(reference(x, training=False), axis=(1, 2)))
print(json.dumps({"max_difference": float(np.abs(ours - theirs).max()), "scale": float(np.abs(theirs).max())}))
"""


@needs_weights
@pytest.mark.parametrize("size", [96, 224])
def test_features_equal_keras_mobilenet_with_the_shared_weights(size):
    report = script_report(SAME_FEATURES, SHARED_WEIGHTS, size)
    assert report["scale"] > 0.1  # real activations, not zeros
    assert report["max_difference"] < 1e-3 * max(1.0, report["scale"])


@needs_weights
def test_head_on_imagenet_features_learns_and_width_follows_the_file(tmp_path):
    from fer_bench.runs.run import execute

    cfg = RunConfig(model="mobilenet", weights=str(SHARED_WEIGHTS), image_size=64, epochs=8)
    assert resolve(cfg).width == 0.25  # read off the file's first convolution
    run_dir = execute(cfg, output=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["trainable_params"] < 1000
    with pytest.raises(UserError, match="--width 0.5 does not match the weights file, whose width is 0.25"):
        resolve(RunConfig(model="mobilenet", weights=str(SHARED_WEIGHTS), width=0.5))


def test_imagenet_file_names_follow_keras():
    info = model_info("mobilenet")
    assert transfer.imagenet_file_names(info, 0.25, 96) == ["mobilenet_2_5_224_tf_no_top.h5"]
    assert transfer.imagenet_file_names(info, 1.0, 128) == ["mobilenet_1_0_128_tf_no_top.h5",
                                                            "mobilenet_1_0_224_tf_no_top.h5"]
    assert transfer.imagenet_file_names(info, 0.75, 224) == ["mobilenet_7_5_224_tf_no_top.h5"]
    with pytest.raises(UserError, match="--width 0.3 has no ImageNet mobilenet weights"):
        transfer.imagenet_file_names(info, 0.3, 224)


def test_missing_imagenet_mobilenet_names_keras_file(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    code, _, err = cli("run", "--model", "mobilenet", "--width", "0.5", "--image-size", "160")
    assert code == 2 and "Traceback" not in err
    assert "mobilenet_5_0_160_tf_no_top.h5" in err and "--weights PATH" in err
    assert not (Path("results").exists() and any(Path("results").glob("mobilenet-*")))


def _write_random_mobilenet(path: Path, seed: int) -> None:
    from keras.src.legacy.saving import legacy_h5_format  # the format of Keras' ImageNet files

    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)


def test_the_file_in_keras_cache_is_part_of_run_id_and_feature_cache_key(tmp_path, monkeypatch):
    from fer_bench.run_folder import run_id
    from fer_bench.models.transfer import weights_key
    from fer_bench.training.features import feature_cache_path

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / "mobilenet_2_5_224_tf_no_top.h5"
    cfg = resolve(RunConfig(model="mobilenet", image_size=96))
    fingerprint = {"train_sha256": "a", "test_sha256": "b"}
    assert weights_key(cfg) == "imagenet-missing"
    ids, cache_keys = [], []
    for seed in (1, 2):
        _write_random_mobilenet(cached, seed)
        ids.append(run_id(cfg, fingerprint))
        cache_keys.append(feature_cache_path(cfg.model, weights_key(cfg), 96, "b", "float32"))
    assert ids[0] != ids[1] and cache_keys[0] != cache_keys[1]
    shutil.copy(cached, tmp_path / "same.h5")
    assert weights_key(resolve(RunConfig(model="mobilenet", weights=str(tmp_path / "same.h5")))) == weights_key(cfg)


@pytest.mark.slow  # an end-to-end MobileNet training
def test_full_variant_trains_every_layer_from_random_initialisation(tmp_path):
    """On 720 synthetic faces the random network learns in training mode (its BatchNorm moving
    statistics need far more steps than that to serve inference, so validation is not the check)."""
    import pandas as pd

    from fer_bench.models import create_model
    from fer_bench.runs.run import execute

    run_dir = execute(RunConfig(model="mobilenet", variant="full", weights="none", image_size=64, epochs=8,
                                batch_size=16, recipe="strong", tta="none", augment="none"), output=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run_dir.name.startswith("mobilenet-full-happy-sad-64px-") and metrics["variant"] == "full"
    assert metrics["trainable_params"] > 0.95 * metrics["total_params"]  # BatchNorm's moving statistics aside
    assert pd.read_csv(run_dir / "history.csv")["accuracy"].max() > 0.65  # well above chance (0.5)
    keras.utils.set_random_seed(42)  # the run's seed: the same initial weights
    untrained = create_model("mobilenet", 2, 64, weights="none", variant="full").full
    trained = keras.models.load_model(run_dir / "best.keras")
    first, last = (np.abs(trained.get_layer("mobilenet_0.25_64").get_layer(name).get_weights()[0]
                          - untrained.get_layer("mobilenet_0.25_64").get_layer(name).get_weights()[0]).max()
                   for name in ("conv1", "conv_pw_13"))
    assert first > 1e-4 and last > 1e-4  # the first and the last convolution both trained

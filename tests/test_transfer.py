"""Transfer models: build, learn from cached features, agree with the end-to-end path, load
weights from a file or the Keras cache, refuse bad sizes and missing weights."""

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from conftest import script_report
from fer_bench.config import RunConfig, resolve
from fer_bench.data.dataset import as_model_input
from fer_bench.data.synthetic import synthetic_split
from fer_bench.models import create_model, model_info, transfer
from fer_bench.runs.run import execute, load_run_data
from fer_bench.training import features

MIN_SIZES = {"vgg16": 32, "resnet50": 32, "inceptionv3": 75}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("inceptionv3", "resnet50") else n
                                  for n in sorted(MIN_SIZES)])  # (the two largest bases: the slow suite)
def test_frozen_model_learns_saves_reloads_and_predicts_raw_pixels(name, tmp_path):
    cfg = RunConfig(model=name, weights="none", image_size=MIN_SIZES[name], epochs=5)
    run_dir = execute(cfg, output=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.6  # random-weight base: above chance, says nothing about ImageNet
    assert metrics["trainable_params"] < metrics["total_params"] / 100  # only the head trains
    assert run_dir.name.startswith(f"{name}-frozen-happy-sad-{MIN_SIZES[name]}px-")

    # predictions.csv came from the head on cached features; the saved model must match from raw pixels
    test = load_run_data(resolve(cfg)).test
    model = keras.models.load_model(run_dir / "best.keras")
    from_pixels = model.predict(as_model_input(test.images), verbose=0)
    from_features = pd.read_csv(run_dir / "predictions.csv")[["p_happy", "p_sad"]].to_numpy()
    np.testing.assert_allclose(from_pixels, from_features, atol=1e-4)


def test_training_on_cached_features_equals_training_end_to_end(monkeypatch):
    monkeypatch.setattr(transfer, "HEAD_DROPOUT", 0.0)  # dropout masks are the only randomness
    faces = synthetic_split(24, seed=5, classes=("happy", "sad"))
    x, y = as_model_input(faces.images), keras.utils.to_categorical(faces.labels, 2)
    keras.utils.set_random_seed(0)
    built = create_model("vgg16", 2, 32, weights="none")
    feats = built.extractor.predict(x, verbose=0)
    built.head.get_layer("feature_norm").adapt(feats)
    start = built.full.get_weights()

    end_to_end = built.full
    end_to_end.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    end_to_end.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    expected = end_to_end.predict(x, verbose=0)

    end_to_end.set_weights(start)
    head = built.head
    head.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    head.fit(feats, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(head.predict(feats, verbose=0), expected, atol=1e-4)
    assert np.abs(expected - 0.5).max() > 0.01  # training moved the predictions


@pytest.mark.slow  # the cache key is also checked in test_mobilenet
def test_second_run_reuses_feature_cache_and_new_size_does_not(tmp_path, monkeypatch):
    calls = []
    original = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    execute(RunConfig(model="vgg16", weights="none", image_size=32, epochs=1), output=tmp_path)
    assert len(calls) == 2  # train and test
    execute(RunConfig(model="vgg16", weights="none", image_size=32, epochs=2), output=tmp_path)
    assert len(calls) == 2  # same base, size and images: from the cache
    execute(RunConfig(model="vgg16", weights="none", image_size=40, epochs=1), output=tmp_path)
    assert len(calls) == 4


@pytest.mark.slow
def test_finetune_unfreezes_top_block_and_completes(tmp_path):
    frozen = execute(RunConfig(model="vgg16", weights="none", image_size=32, epochs=2), output=tmp_path)
    tuned = execute(RunConfig(model="vgg16", weights="none", image_size=32, epochs=2, variant="finetune",
                              finetune_epochs=1), output=tmp_path)
    frozen_m, tuned_m = (json.loads((d / "metrics.json").read_text()) for d in (frozen, tuned))
    assert tuned.name.startswith("vgg16-finetune-")
    assert tuned_m["trainable_params"] > 1_000_000 > frozen_m["trainable_params"]  # block5 convs
    assert (tuned / "finetune" / "history.csv").exists() and (tuned / "best.keras").exists()


def _base_weights_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_weights_from_explicit_file(tmp_path):
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mine.weights.h5"
    source.save_weights(path)
    built = create_model("vgg16", 2, 32, weights=str(path))
    assert _base_weights_equal(built.base, source)


def test_imagenet_weights_from_keras_cache(tmp_path, monkeypatch):
    from keras.src.legacy.saving import (
        legacy_h5_format,  # the format of Keras' ImageNet files
    )

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    info = model_info("vgg16")
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    cached = tmp_path / "keras" / "models" / info.keras_weights_file
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    built = create_model("vgg16", 2, 32, weights="imagenet")
    assert _base_weights_equal(built.base, source)


def test_missing_imagenet_weights_say_which_file(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    code, _, err = cli("run", "--model", "resnet50", "--image-size", "32")
    assert code == 2 and "Traceback" not in err
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "--weights PATH" in err


def test_missing_weights_file_and_too_small_size(cli, tmp_path):
    code, _, err = cli("run", "--model", "vgg16", "--weights", tmp_path / "nope.h5", "--image-size", "32")
    assert code == 2 and "weights file not found" in err
    code, _, err = cli("run", "--model", "inceptionv3", "--weights", "none", "--image-size", "64")
    assert code == 2 and "too small for inceptionv3: its minimum is 75" in err


def test_wrong_weights_file_is_a_clear_error(cli, tmp_path):
    other = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "vgg.weights.h5")
    code, _, err = cli("run", "--model", "resnet50", "--weights", tmp_path / "vgg.weights.h5", "--image-size", "32")
    assert code == 2 and "cannot load weights" in err and "Traceback" not in err


@pytest.mark.slow  # minutes of benchmarking; the slow suite
def test_benchmark_reports_ratios_against_scratch_epoch(cli, tmp_path):
    code, out, _ = cli("benchmark", "--models", "vgg16,mobilenet", "--image-size", "32,48", "--sample", "16",
                       "--head-epochs", "1", "--precision", "float32", "--out", tmp_path / "bench.csv")
    assert code == 0 and "baseline: one scratch CNN epoch" in out and "peak (float32)" in out
    table = pd.read_csv(tmp_path / "bench.csv")
    assert table["model"].tolist() == ["vgg16", "vgg16", "mobilenet", "mobilenet"]
    assert table["image_size"].tolist() == [32, 48, 32, 48]  # every size asked for, not only the first
    assert (table["extract_images_per_s"] > 0).all() and (table["head_epochs_vs_scratch_epoch"] > 0).all()
    assert ((table["peak_fraction"] > 0) & (table["peak_fraction"] < 2)).all()
    assert (tmp_path / "bench.png").stat().st_size > 0
    code, _, err = cli("benchmark", "--models", "scratch")
    assert code == 2 and "not a transfer model" in err


@pytest.mark.slow
def test_finetune_from_trained_weights_stays_finite_under_the_strong_recipe(tmp_path):
    """Start from a base whose BatchNorm statistics are real (trained here, then saved), as ImageNet
    weights are: fine-tuning with augmentation and the strong schedule must stay finite and learn."""
    keras.utils.set_random_seed(0)
    faces = synthetic_split(60, seed=11, classes=("happy", "sad"))
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    pixels = keras.Input((48, 48, 1))
    x = keras.layers.Resizing(32, 32)(pixels)
    x = keras.layers.Concatenate()([x, x, x])
    x = keras.layers.Normalization(mean=transfer.IMAGENET_MEAN_BGR, variance=(1.0, 1.0, 1.0))(x)  # as ResNet50's
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=True))
    pretrain = keras.Model(pixels, keras.layers.Dense(2, activation="softmax")(x))
    pretrain.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    pretrain.fit(as_model_input(faces.images), keras.utils.to_categorical(faces.labels, 2), epochs=2, verbose=0)
    moving_var = next(w for w in base.weights if "moving_variance" in w.path)
    assert not np.allclose(moving_var.numpy(), 1.0)  # the statistics really moved
    weights = tmp_path / "trained_base.weights.h5"
    base.save_weights(weights)

    run_dir = execute(RunConfig(model="resnet50", weights=str(weights), image_size=32, variant="finetune",
                                recipe="strong", epochs=8, warmup_epochs=1, finetune_epochs=2, batch_size=16),
                      output=tmp_path / "r")
    head, tuned = pd.read_csv(run_dir / "history.csv"), pd.read_csv(run_dir / "finetune" / "history.csv")
    assert len(head) == 8 and len(tuned) == 2
    for history in (head, tuned):
        assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
    assert tuned["loss"].max() < 10 and tuned["val_loss"].max() < 10  # no blow-up (it reached 1e8 before the fixes)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the checkpoint is the better of the two stages by validation loss
    assert metrics["best_val_loss"] == pytest.approx(min(head["val_loss"].min(), tuned["val_loss"].min()))
    assert metrics["accuracy"] > 0.5 and metrics["augmentation"] == "flip,shift,rotation,zoom,erasing"


def test_dry_run_names_every_missing_weights_file_with_the_reason(cli, tmp_path, monkeypatch):
    import keras

    from fer_bench.runs.experiment import find_experiment_file

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    toml = find_experiment_file("original_attempt")
    code, out, _ = cli("experiment", toml, "--results", tmp_path / "results", "--dry-run")
    assert code == 0
    missing = [line for line in out.splitlines() if "missing weights" in line]
    assert len(missing) == 4 and all("Temporary failure in name resolution" in line for line in missing)
    names = ("vgg16", "resnet50", "inceptionv3", "mobilenet")
    assert {name for name in names if any(f"for {name} " in m for m in missing)} == set(names)
    assert any("mobilenet_2_5_224_tf_no_top.h5" in m for m in missing)  # Keras' own name for the file at 244 px
    assert all("--weights vgg16=PATH" not in m or "for vgg16 " in m for m in missing)  # options that exist
    # the run: the four transfer runs reported and skipped, the scratch run trained; a weights file given
    # on the command line for one model makes its run train too
    from keras.src.legacy.saving import legacy_h5_format

    mobilenet = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    with h5py.File(mobilenet, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(
            f, keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(75, 75, 3)))
    small = tmp_path / "small.toml"
    small.write_text(toml.read_text().replace("image_size = 244", "image_size = 75").replace("epochs = 10", "epochs = 1"))
    code, out, err = cli("experiment", small, "--results", tmp_path / "results", "--no-compare",
                         "--weights", f"mobilenet={mobilenet}")
    assert code == 0, err
    skipped = [line for line in out.splitlines() if "skipped, its weights are missing" in line]
    assert len(skipped) == 3 and not any("mobilenet" in line for line in skipped)
    assert "3 runs of small are not complete yet (skipped above, each with its reason)" in out
    trained = sorted(p.name.split("-")[0] for p in (tmp_path / "results").iterdir() if (p / "complete.json").exists())
    assert trained == ["mobilenet", "scratch"]
    # compare by the experiment's name finds the mobilenet run only when told the same weights file
    code, out, err = cli("compare", small, "--results", tmp_path / "results", "--out", tmp_path / "without")
    assert code == 0, err
    assert any(line.startswith("missing (not started): mobilenet-") for line in out.splitlines())
    code, out, err = cli("compare", small, "--results", tmp_path / "results", "--out", tmp_path / "with",
                         "--weights", f"mobilenet={mobilenet}")
    assert code == 0, err
    assert not any(line.startswith("missing (not started): mobilenet-") for line in out.splitlines())
    assert "mobilenet" in set(pd.read_csv(tmp_path / "with" / "comparison.csv")["model"])
    code, _, err = cli("experiment", small, "--weights", "scratch=x.h5", "--dry-run")
    assert code == 2 and "scratch is trained from scratch and takes no weights file" in err


def test_finetune_unfreezes_exactly_each_bases_top_blocks():
    """VGG16 block5, ResNet50 conv5, InceptionV3 mixed9-10 (whose layers carry no block prefix): their
    weights train, BatchNorm excepted, nothing below them, and nothing below is folded BatchNorm's twin."""
    from keras import layers

    from fer_bench.models import create_model
    from fer_bench.models.batchnorm import FoldedBatchNormalization
    from fer_bench.models.transfer import top_blocks_after, unfreeze_top

    expected_weights = {"vgg16": 6, "resnet50": 20, "inceptionv3": 18}  # top convolutions: kernels (+ biases, not InceptionV3)
    for name, size in (("vgg16", 32), ("resnet50", 32), ("inceptionv3", 75)):
        built = create_model(name, 2, size, weights="none")
        names = [layer.name for layer in built.base.layers]
        top = set(names[names.index(top_blocks_after(name)) + 1:])
        assert unfreeze_top(built) > 0
        trained = {layer.name for layer in built.base.layers if layer.trainable_weights}
        assert trained and trained <= top, name
        assert len(built.base.trainable_weights) == expected_weights[name], name
        assert not any(isinstance(layer, (layers.BatchNormalization, FoldedBatchNormalization)) and layer.trainable_weights
                       for layer in built.base.layers)
        assert not top & {layer.name for layer in built.base.layers if isinstance(layer, FoldedBatchNormalization)}


LOAD_ALONE = """
import json, sys
from fer_bench.models.saved import load_saved_model
model = load_saved_model(sys.argv[1])
print(json.dumps({"outputs": int(model.output_shape[-1])}))
"""


@pytest.mark.parametrize("variant", ["frozen", pytest.param("finetune", marks=pytest.mark.slow)])
def test_transfer_checkpoint_loads_in_a_process_that_never_trained(variant, tmp_path):
    """The head is compiled with fer_bench's fused optimizer; best.keras must not carry it (evaluate,
    predict and the app load run folders without the training modules)."""
    cfg = RunConfig(model="mobilenet", weights="none", image_size=32, epochs=2, recipe="strong", variant=variant,
                    finetune_epochs=1, tta="none")
    run_dir = execute(cfg, output=tmp_path)
    assert script_report(LOAD_ALONE, run_dir / "best.keras") == {"outputs": 2}

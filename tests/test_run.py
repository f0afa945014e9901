"""A whole run on synthetic faces: it learns, writes a complete run folder, finds itself, resumes."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from fer_bench.config import RunConfig
from fer_bench.run_folder import RunFolder
from fer_bench.runs.run import execute
from fer_bench.training import callbacks, harness

RUN_FILES = {
    "config.json", "data.json", "environment.json", "history.csv", "best.keras", "metrics.json",
    "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv", "curves.png",
    RunFolder.COMPLETE,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    run_dir = execute(RunConfig(epochs=6, seed=1), output=out)
    return run_dir


def test_scratch_learns_synthetic_happy_sad(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.90
    assert metrics["balanced_accuracy"] >= 0.90
    assert metrics["majority_baseline_accuracy"] == pytest.approx(0.5)
    assert metrics["accuracy_ci95"][0] <= metrics["accuracy"] <= metrics["accuracy_ci95"][1]
    assert 0.9 <= metrics["roc_auc"] <= 1.0


def test_run_folder_holds_everything(finished_run):
    assert RUN_FILES <= {p.name for p in finished_run.iterdir()}
    assert finished_run.name.startswith("scratch-happy-sad-48px-s1-")
    config = json.loads((finished_run / "config.json").read_text())
    assert config["image_size"] == 48 and config["learning_rate"] == 0.01 and config["batch_size"] == 32
    data = json.loads((finished_run / "data.json").read_text())
    assert data["counts"]["test"] == {"happy": 100, "sad": 100}
    predictions = pd.read_csv(finished_run / "predictions.csv")
    assert list(predictions.columns) == ["file", "true", "predicted", "p_happy", "p_sad"]
    assert len(predictions) == 200
    assert (predictions[["p_happy", "p_sad"]].sum(axis=1) - 1).abs().max() < 1e-4
    cm = pd.read_csv(finished_run / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 200
    assert len(pd.read_csv(finished_run / "history.csv")) == 6


def test_saved_model_predicts_from_raw_pixels(finished_run):
    from fer_bench.data.synthetic import synthetic_split

    faces = synthetic_split(20, seed=7, classes=("happy", "sad"))
    model = keras.models.load_model(finished_run / "best.keras")
    probs = model.predict(faces.images[..., None].astype("float32"), verbose=0)
    assert (probs.argmax(1) == faces.labels).mean() >= 0.9


def test_same_command_finds_complete_run(finished_run, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(harness, "train_and_evaluate", no_training)
    assert execute(RunConfig(epochs=6, seed=1), output=finished_run.parent) == finished_run


def test_interrupted_run_resumes_from_last_epoch(tmp_path, monkeypatch):
    original = callbacks.EpochTimer.on_epoch_end
    epochs_started = []

    def crash_after_two_epochs(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochTimer, "on_epoch_end", crash_after_two_epochs)
    cfg = RunConfig(epochs=4, seed=3, classes="happy,sad,surprise")
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, output=tmp_path)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (run_dir / RunFolder.COMPLETE).exists()
    assert len(pd.read_csv(run_dir / "history.csv")) == 2

    monkeypatch.setattr(callbacks.EpochTimer, "on_epoch_end", original)
    monkeypatch.setattr(callbacks.EpochTimer, "on_epoch_begin",
                        lambda self, epoch, logs=None: (epochs_started.append(epoch), setattr(self, "_start", 0.0)))
    assert execute(cfg, output=tmp_path) == run_dir
    assert epochs_started == [2, 3]  # resumed, not restarted
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert json.loads((run_dir / RunFolder.COMPLETE).read_text())["resumed"] is True


def test_diverging_stage_stops_and_keeps_last_good_checkpoint(tmp_path):
    import numpy as np

    from fer_bench.training import TrainSettings, fit_stage

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, 64), 2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    good = fit_stage(model, x, y, x, y, TrainSettings(epochs=1, learning_rate=0.01), tmp_path, tmp_path / "best.keras")
    kept = keras.models.load_model(tmp_path / "best.keras").get_weights()
    poisoned = x.copy()
    poisoned[0, 0] = np.nan  # the first batch's loss becomes NaN, like a diverging fine-tune
    history = fit_stage(model, poisoned, y, x, y, TrainSettings(epochs=5), tmp_path / "b",
                        tmp_path / "best.keras", beat_val_loss=float(good["val_loss"].min()))
    assert len(history) < 5 and history["loss"].isna().any()
    for before, after in zip(kept, keras.models.load_model(tmp_path / "best.keras").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_checkpoint_of_an_epoch_killed_before_its_record_is_never_the_best(tmp_path, monkeypatch):
    """A kill after an epoch's checkpoint but before its history row: that epoch is redone, and the
    final best.keras is the model of the best epoch in the history, whatever the redone epochs do."""
    import numpy as np

    from fer_bench.training import TrainSettings, fit_stage

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    settings = TrainSettings(epochs=5, learning_rate=0.1, batch_size=16)

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])

    original = callbacks.HistoryWriter.on_epoch_end

    def killed_in_epoch_three(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt  # BestCheckpoint has saved epoch 3's model, the history has not recorded it
        original(self, epoch, logs)

    monkeypatch.setattr(callbacks.HistoryWriter, "on_epoch_end", killed_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        fit_stage(model(), x, y, x, y, settings, tmp_path, tmp_path / "best.keras")
    assert (tmp_path / "_resume" / "best-epoch-3.keras").exists()  # the improving epoch's checkpoint was written
    monkeypatch.setattr(callbacks.HistoryWriter, "on_epoch_end", original)
    # the redone epochs learn from shuffled labels, so none of them beats the killed epoch's model
    history = fit_stage(model(), x, y[rng.permutation(len(y))], x, y, settings, tmp_path,
                        tmp_path / "best.keras")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4]
    best = keras.models.load_model(tmp_path / "best.keras")
    best.compile(loss="categorical_crossentropy")
    assert best.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(history["val_loss"].min(), rel=1e-4)
    assert not (tmp_path / "_resume").exists()


def test_each_epoch_logs_elapsed_time_and_an_estimate_of_the_time_left(tmp_path, caplog):
    import logging

    import numpy as np

    from fer_bench.training import TrainSettings, fit_stage

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with caplog.at_level(logging.INFO, logger="fer_bench.training.fit"):
        fit_stage(model, x, y, x, y, TrainSettings(epochs=3), tmp_path, tmp_path / "best.keras")
    lines = [r.getMessage() for r in caplog.records if "elapsed" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3 done", "epoch 2/3 done", "epoch 3/3 done"]
    assert lines[-1].endswith("about 0m00s left")
    assert "val_accuracy" in lines[0] and " loss " in lines[0]  # the epoch's metrics on the same one line


def test_tensorboard_option_writes_logs_into_the_run_folder(tmp_path):
    """`--tensorboard` needs the tensorboard package, which is declared, not assumed."""
    run_dir = execute(RunConfig(epochs=1, seed=3, tensorboard=True), output=tmp_path)
    assert (run_dir / RunFolder.COMPLETE).exists()
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def _ema_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    return x, y, model


def test_weight_averaging_validates_and_checkpoints_the_averaged_weights(tmp_path):
    """An average that barely moves (momentum ~1) stays where the first step put the weights: every
    epoch's validation loss is the same although training moves on (the plain run's changes), and the
    checkpoint's own loss is that recorded validation loss."""
    from fer_bench.training import TrainSettings, fit_stage

    x, y, model = _ema_problem()
    averaged = fit_stage(model(), x, y, x, y, TrainSettings(epochs=3, learning_rate=0.5, batch_size=16, ema=0.999999),
                         tmp_path, tmp_path / "best.keras")
    plain = fit_stage(model(), x, y, x, y, TrainSettings(epochs=3, learning_rate=0.5, batch_size=16),
                      tmp_path / "plain", tmp_path / "plain.keras")
    assert np.ptp(averaged["val_loss"]) < 1e-4 and np.ptp(averaged["loss"]) > 0.01
    assert np.ptp(plain["val_loss"]) > 0.01
    best = keras.models.load_model(tmp_path / "best.keras")
    best.compile(loss="categorical_crossentropy")
    assert best.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(averaged["val_loss"].min(), rel=1e-4)


def test_weight_averaging_survives_a_resume(tmp_path, monkeypatch):
    """The resume point is written while the averaged weights are swapped in; a resumed stage must swap
    them back, or it would train on the average and average the trained weights (and its validation
    loss would move)."""
    from fer_bench.training import TrainSettings, fit_stage

    x, y, model = _ema_problem()
    settings = TrainSettings(epochs=3, learning_rate=0.5, batch_size=16, ema=0.999999)
    original = callbacks.EpochTimer.on_epoch_end

    def killed_in_epoch_two(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochTimer, "on_epoch_end", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit_stage(model(), x, y, x, y, settings, tmp_path, tmp_path / "best.keras")
    monkeypatch.setattr(callbacks.EpochTimer, "on_epoch_end", original)
    history = fit_stage(model(), x, y, x, y, settings, tmp_path, tmp_path / "best.keras")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert np.ptp(history["val_loss"]) < 1e-4


def test_weight_averaging_is_part_of_the_run_id_only_when_on():
    from fer_bench.config import resolve
    from fer_bench.run_folder import run_id

    fingerprint = {"train_sha256": "a", "test_sha256": "b"}
    plain = run_id(resolve(RunConfig()), fingerprint)
    assert run_id(resolve(RunConfig(ema=0.0)), fingerprint) == plain  # runs from before the option keep their ids
    assert "ema" not in resolve(RunConfig()).identity()
    assert run_id(resolve(RunConfig(ema=0.999)), fingerprint) != plain

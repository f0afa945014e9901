"""The one training harness: fit with a best-by-val-loss checkpoint, a per-epoch history CSV and
resume from the last finished epoch (Keras BackupAndRestore)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Optimisation settings shared by every model (defaults are the seed's)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    class_weight: dict[int, float] | None = None
    tensorboard_dir: Path | None = None


def make_optimizer(name: str, learning_rate: float):
    """Keras optimizer by name; 'sgd' is Keras' plain SGD (no momentum), as in the seed."""
    optimizers = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}
    return optimizers[name](learning_rate=learning_rate)


def compile_for_training(model, settings: TrainSettings) -> None:
    """Compile with the run's optimizer, categorical cross-entropy and accuracy (the seed's setup)."""
    model.compile(optimizer=make_optimizer(settings.optimizer, settings.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs, so the history CSV records time per epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def read_history(path: Path) -> pd.DataFrame:
    """A history CSV with one row per finished epoch (the last row wins if a crash repeated one)."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
    return pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)


def fit_stage(model, x_fit, y_fit, x_val, y_val, settings: TrainSettings, stage_dir: Path, best_path: Path,
              beat_val_loss: float | None = None) -> pd.DataFrame:
    """Train `model` for settings.epochs, resuming if an earlier attempt was interrupted.

    Writes stage_dir/history.csv and the best model by validation loss to `best_path` (only when
    it beats `beat_val_loss`, if given); returns the history of all epochs of this stage.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    history_path = stage_dir / "history.csv"
    backup_dir = stage_dir / "_backup"
    history = read_history(history_path)
    if len(history) >= settings.epochs and best_path.exists():
        return history
    if not backup_dir.exists():  # nothing to resume from: start this stage cleanly
        history_path.unlink(missing_ok=True)
        history = read_history(history_path)
    candidates = [beat_val_loss] + (history["val_loss"].tolist() if "val_loss" in history else [])
    best_so_far = min((v for v in candidates if v is not None), default=None)

    compile_for_training(model, settings)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),  # a diverged stage stops; the checkpoint keeps its last good model
        EpochTimer(),
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_loss", save_best_only=True, initial_value_threshold=best_so_far
        ),
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.BackupAndRestore(backup_dir),
    ]
    if settings.tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(settings.tensorboard_dir)))
    model.fit(
        x_fit,
        y_fit,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=(x_val, y_val),
        class_weight=settings.class_weight,
        shuffle=True,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,  # bars in a terminal, a line per epoch in logs
    )
    shutil.rmtree(backup_dir, ignore_errors=True)
    history = read_history(history_path)
    if history["loss"].isna().any():
        log.warning("warning: training diverged (NaN loss) in epoch %d and stopped; the best checkpoint before it is kept",
                    int(history.loc[history["loss"].isna(), "epoch"].iloc[0]) + 1)
    return history


def as_model_input(images: np.ndarray) -> np.ndarray:
    """(n, 48, 48) uint8 pixels → (n, 48, 48, 1) float32 raw 0-255, every model's input."""
    return images[..., None].astype(np.float32)

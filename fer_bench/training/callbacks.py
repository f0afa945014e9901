"""Keras callbacks that make a training stage crash-proof. Each writes its file atomically at the
end of an epoch, in this order: the best checkpoint, the history row, then the resume point, so
a process killed at any moment restarts from the last resume point and, after the history is cut
back to it, records every epoch exactly once."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import pandas as pd

from ..files import atomic_path, save_model, write_csv, write_json

RESUME_FILE = "resume.json"


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs, so the history records time per epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the whole model to `path` whenever validation loss beats the best so far."""

    def __init__(self, path: Path, best_so_far: float | None):
        super().__init__()
        self.path, self.best = path, math.inf if best_so_far is None else best_so_far

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.best:
            self.best = float(loss)
            save_model(self.path, self.model)


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.csv` as one row per finished epoch, rewritten whole after each epoch."""

    def __init__(self, path: Path, history: pd.DataFrame):
        super().__init__()
        self.path, self.rows = path, history.to_dict("records")

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        write_csv(self.path, pd.DataFrame(self.rows), index=False)


class ResumePoint(keras.callbacks.Callback):
    """After each epoch: the weights (with optimizer state) to `epoch-N.weights.h5`, then
    `resume.json` naming it; the older weights file is removed only after."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(weights) as tmp:
            self.model.save_weights(tmp)
        write_json(self.folder / RESUME_FILE, {"epochs_done": epoch + 1, "weights": weights.name})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old != weights:
                old.unlink(missing_ok=True)


def read_resume_point(folder: Path) -> tuple[int, Path | None]:
    """(epochs finished, their weights file) of an interrupted stage; (0, None) if there is none."""
    path = folder / RESUME_FILE
    if not path.exists():
        return 0, None
    point = json.loads(path.read_text())
    return int(point["epochs_done"]), folder / point["weights"]


class EarlyStop(keras.callbacks.Callback):
    """Stops once validation loss has not improved for `patience` epochs (0: never), counting the
    epochs of the history before a resume too (Keras' EarlyStopping forgets them)."""

    def __init__(self, patience: int, val_losses: list[float]):
        super().__init__()
        self.patience, self.val_losses = patience, list(val_losses)
        self.stopped_early = False

    def on_epoch_end(self, epoch, logs=None):
        self.val_losses.append(float((logs or {}).get("val_loss", math.inf)))
        if not self.patience:
            return
        best = min(range(len(self.val_losses)), key=self.val_losses.__getitem__)
        if len(self.val_losses) - 1 - best >= self.patience:
            self.model.stop_training = self.stopped_early = True

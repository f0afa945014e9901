"""Keras callbacks that make a training stage crash-proof. Each writes its file atomically at the
end of an epoch, in this order: a new best checkpoint (under its epoch's name), the history row,
then the resume point, which names both the weights to resume from and the best checkpoint so far.
A process killed at any moment restarts from the last resume point and, after the history is cut
back to it, records every epoch exactly once; a checkpoint of an epoch that is redone is never
taken for the best, so the best epoch in the history is always the one in the checkpoint."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from ..durations import duration
from ..files import atomic_path, save_model, write_csv, write_json

RESUME_FILE = "resume.json"


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """With an optimizer that keeps an exponential moving average of the weights (`use_ema`): the
    averaged weights are in the model for validation and, from the end of each epoch until the next
    begins, for the callbacks after this one (the checkpoint saves them). The resume point is written
    in that swapped state too, so a resumed stage (`resumed=True`) starts swapped and swaps back."""

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs, so the history records time per epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class TimeLeft(keras.callbacks.Callback):
    """After each epoch, one log line: epochs done, the epoch's metrics, time elapsed in this stage and
    an estimate of the time left (the mean epoch time of this invocation times the epochs still to run)."""

    def __init__(self, epochs: int, log):
        super().__init__()
        self.epochs, self.log = epochs, log
        self.started, self.first_epoch = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:
            self.started, self.first_epoch = time.perf_counter(), epoch

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self.started
        done = epoch + 1 - self.first_epoch
        left = elapsed / done * (self.epochs - epoch - 1)
        metrics = ", ".join(f"{key} {value:.4f}" for key, value in (logs or {}).items()
                            if key != "epoch_seconds" and isinstance(value, (int, float)))
        self.log.info("epoch %d/%d done: %s%s elapsed, about %s left", epoch + 1, self.epochs,
                      f"{metrics}; " if metrics else "", duration(elapsed), duration(left))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the whole model to `folder/best-epoch-N.keras` whenever validation loss beats the best so far;
    `file` and `val_loss` describe the best checkpoint of this stage (None: nothing has beaten `best_so_far`)."""

    def __init__(self, folder: Path, best_so_far: float | None, file: Path | None = None):
        super().__init__()
        self.folder, self.file = folder, file
        self.val_loss = math.inf if best_so_far is None else best_so_far

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.val_loss:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.val_loss, self.file = float(loss), self.folder / f"best-epoch-{epoch + 1}.keras"
            save_model(self.file, self.model)


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.csv` as one row per finished epoch, rewritten whole after each epoch."""

    def __init__(self, path: Path, history: pd.DataFrame):
        super().__init__()
        self.path, self.rows = path, history.to_dict("records")

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        write_csv(self.path, pd.DataFrame(self.rows), index=False)


class ResumePoint(keras.callbacks.Callback):
    """After each epoch: the weights (with optimizer state) to `epoch-N.weights.h5`, then `resume.json`
    naming them and the best checkpoint so far; files it no longer names are removed only after."""

    def __init__(self, folder: Path, best: BestCheckpoint):
        super().__init__()
        self.folder, self.best = folder, best

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(weights) as tmp:
            self.model.save_weights(tmp)
        best = None if self.best.file is None else {"file": self.best.file.name, "val_loss": self.best.val_loss}
        write_json(self.folder / RESUME_FILE, {"epochs_done": epoch + 1, "weights": weights.name, "best": best})
        for old in [*self.folder.glob("epoch-*.weights.h5"), *self.folder.glob("best-epoch-*.keras")]:
            if old not in (weights, self.best.file):
                old.unlink(missing_ok=True)


@dataclass
class ResumeState:
    """Where an interrupted stage stands: epochs finished, their weights, its best checkpoint so far."""

    epochs_done: int = 0
    weights: Path | None = None
    best_file: Path | None = None
    best_val_loss: float | None = None


def read_resume_point(folder: Path) -> ResumeState:
    """The resume point of an interrupted stage; an empty state if there is none."""
    path = folder / RESUME_FILE
    if not path.exists():
        return ResumeState()
    point = json.loads(path.read_text())
    best = point.get("best")
    return ResumeState(int(point["epochs_done"]), folder / point["weights"],
                       None if best is None else folder / best["file"], None if best is None else best["val_loss"])


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

"""The one training loop: fit with the run's optimiser and schedule, a best-by-validation-loss
checkpoint, a per-epoch history CSV, early stopping, and resume from the last finished epoch."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from ..data.batches import batches
from ..errors import UserError
from ..files import write_csv, write_json
from .callbacks import (
    AveragedWeights,
    BestCheckpoint,
    EarlyStop,
    EpochTimer,
    HistoryWriter,
    ResumePoint,
    TimeLeft,
    read_resume_point,
)
from .crowd_targets import AcceptableClassesLoss, draw_labels
from .optimizers import FusedAdam, FusedAdamW, FusedSGD

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Optimisation settings shared by every model (defaults are the seed's recipe)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    schedule: str = "constant"
    patience: int = 0  # early stopping on validation loss; 0 = off
    ema: float = 0.0  # momentum of the weights' exponential moving average; 0 = off
    targets: str = "labels"  # how the fit targets are read (training/crowd_targets.py)
    clipnorm: float | None = None  # clip each gradient to this norm (fine-tuning)
    class_weight: dict[int, float] | None = None
    tensorboard_dir: Path | None = None
    extra_callbacks: tuple = ()  # e.g. a search's pruning callback; after the run's own (checkpoint, history)


def learning_rate_schedule(settings: TrainSettings, steps_per_epoch: int):
    """A constant rate, or linear warm-up then cosine decay to zero over the stage's epochs."""
    warmup = settings.warmup_epochs * steps_per_epoch
    total = settings.epochs * steps_per_epoch
    if settings.schedule == "constant" and not warmup:
        return settings.learning_rate
    if settings.schedule == "constant":
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=1, alpha=1.0, warmup_target=settings.learning_rate,
                                                      warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(total - warmup, 1), warmup_target=settings.learning_rate,
                                                  warmup_steps=warmup)


def make_optimizer(settings: TrainSettings, steps_per_epoch: int):
    """Keras optimizer by name ('sgd' with momentum 0 is plain SGD, as in the seed); SGD and Adam(W)
    update each weight with TensorFlow's fused kernel (training/optimizers.py)."""
    lr = learning_rate_schedule(settings, steps_per_epoch)
    options = {"weight_decay": settings.weight_decay} if settings.weight_decay else {}
    if settings.clipnorm:
        options["clipnorm"] = settings.clipnorm
    if settings.ema:
        options.update(use_ema=True, ema_momentum=settings.ema)
    if settings.optimizer in ("sgd", "nesterov"):
        return FusedSGD(lr, momentum=settings.momentum, nesterov=settings.optimizer == "nesterov", **options)
    optimizers = {"adam": FusedAdam, "adamw": FusedAdamW, "rmsprop": keras.optimizers.RMSprop}
    if settings.optimizer == "adamw":
        options["weight_decay"] = settings.weight_decay  # AdamW's own default decay is not zero
    return optimizers[settings.optimizer](lr, **options)


def compile_for_training(model, settings: TrainSettings, steps_per_epoch: int) -> None:
    """Compile with the run's optimizer and schedule (weight decay on kernels only), (label-smoothed)
    categorical cross-entropy (or the multilabel loss), accuracy."""
    loss = AcceptableClassesLoss() if settings.targets == "multilabel" else \
        keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    optimizer = make_optimizer(settings, steps_per_epoch)
    # decay only kernels: biases and BatchNorm's scales and shifts (1-D weights) keep their size, as in timm
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def read_history(path: Path) -> pd.DataFrame:
    """A history CSV with one row per finished epoch."""
    if not path.exists():
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
    return pd.read_csv(path)


def fit_stage(model, x_fit, y_fit, x_val, y_val, settings: TrainSettings, stage_dir: Path, best_path: Path,
              beat_val_loss: float | None = None) -> pd.DataFrame:
    """Train `model` for settings.epochs (or until early stopping), resuming an interrupted attempt.

    Writes stage_dir/history.csv and, when the stage ends, the best model by validation loss to
    `best_path` (only when it beats `beat_val_loss`, if given; until then it lives in the resume
    folder); returns the history of all epochs of this stage. A finished
    stage leaves `stage_dir/stage.json`, so calling this again returns its history at once.
    """
    history_path, resume_dir, done_path = stage_dir / "history.csv", stage_dir / "_resume", stage_dir / "stage.json"
    if done_path.exists() and best_path.exists():
        return read_history(history_path)
    state = read_resume_point(resume_dir)
    epochs_done = state.epochs_done
    history = read_history(history_path)
    history = history[history["epoch"] < epochs_done]  # epochs after the resume point are redone
    write_csv(history_path, history, index=False)
    best = BestCheckpoint(resume_dir, state.best_val_loss if state.best_file else beat_val_loss, state.best_file)

    compile_for_training(model, settings, steps_per_epoch=-(-len(x_fit) // settings.batch_size))
    if state.weights is not None:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(state.weights)
        log.info("resuming after epoch %d of %d", epochs_done, settings.epochs)
    early_stop = EarlyStop(settings.patience, history.get("val_loss", pd.Series()).tolist())
    callbacks = [
        keras.callbacks.TerminateOnNaN(),  # a diverged stage stops; the checkpoint keeps its last good model
        EpochTimer(),
        *([AveragedWeights(resumed=state.weights is not None)] if settings.ema else []),  # before the checkpoint
        best,
        HistoryWriter(history_path, history),
        ResumePoint(resume_dir, best),
        early_stop,
        TimeLeft(settings.epochs, log),
        *settings.extra_callbacks,
    ]
    if settings.tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(settings.tensorboard_dir)))
    if epochs_done < settings.epochs:
        model.fit(
            batches(x_fit, y_fit, settings.batch_size, shuffle=True,
                    per_batch=draw_labels if settings.targets == "probability" else None),
            shuffle=False,  # the pipeline shuffles; Keras' own flag would only warn that it is ignored
            epochs=settings.epochs,
            initial_epoch=epochs_done,
            validation_data=batches(x_val, y_val, settings.batch_size),
            class_weight=settings.class_weight,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 0,  # a bar in a terminal; the epoch's line is TimeLeft's
        )
    history = read_history(history_path)
    if history["loss"].isna().any():
        log.warning("warning: training diverged (NaN loss) in epoch %d and stopped; the best checkpoint before it is kept",
                    int(history.loc[history["loss"].isna(), "epoch"].iloc[0]) + 1)
    elif early_stop.stopped_early:
        log.info("early stop after epoch %d: validation loss has not improved for %d epochs", len(history),
                 settings.patience)
    if best.file is not None and best.file.exists():  # (gone already if a kill came right after this move)
        os.replace(best.file, best_path)
    if not best_path.exists():  # not one epoch ended with a finite validation loss
        raise UserError("training diverged (NaN loss) before its first checkpoint; lower --lr "
                        f"(it was {settings.learning_rate:g}) or check the data")
    write_json(done_path, {"epochs_run": len(history), "stopped_early": early_stop.stopped_early})
    shutil.rmtree(resume_dir, ignore_errors=True)
    return history


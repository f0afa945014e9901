"""Train a registered model on a run's data and evaluate its best checkpoint on the test set,
writing history, metrics, predictions, confusion matrix and curves into the run folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .dataset import Dataset
from .evaluation import evaluate_predictions, predictions_table
from .models import create_model
from .plots import plot_confusion, plot_curves
from .run import RunConfig, class_weights, validation_split, write_json
from .training import TrainSettings, as_model_input, fit_stage

log = logging.getLogger(__name__)


def count_params(model) -> dict[str, int]:
    """Trainable and total parameter counts of a Keras model."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return {"trainable_params": trainable, "total_params": total}


def train_and_evaluate(cfg: RunConfig, dataset: Dataset, run_dir: Path) -> dict:
    """Fit, pick the best checkpoint by validation loss, evaluate it on the test split."""
    keras.utils.set_random_seed(cfg.seed)
    fit, val = validation_split(cfg, dataset)
    k = len(dataset.class_names)
    built = create_model(cfg.model, k, cfg.image_size)
    settings = TrainSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        optimizer=cfg.optimizer,
        class_weight=class_weights(cfg, fit.labels),
        tensorboard_dir=run_dir / "tensorboard" if cfg.tensorboard else None,
    )
    best_path = run_dir / "best.keras"
    params = count_params(built.full)
    log.info("%s: %d trainable / %d total parameters; fit %d, validation %d, test %d images",
             cfg.model, params["trainable_params"], params["total_params"], len(fit), len(val), len(dataset.test))

    started = time.perf_counter()
    history = fit_stage(
        built.full,
        as_model_input(fit.images),
        keras.utils.to_categorical(fit.labels, k),
        as_model_input(val.images),
        keras.utils.to_categorical(val.labels, k),
        settings,
        run_dir,
        best_path,
    )
    train_seconds = time.perf_counter() - started

    best = keras.models.load_model(best_path)
    started = time.perf_counter()
    probs = best.predict(as_model_input(dataset.test.images), batch_size=256, verbose=0)
    predict_seconds = time.perf_counter() - started
    metrics, per_class, cm = evaluate_predictions(dataset.test.labels, probs, dataset.class_names, fit.labels)
    best_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"]) + 1
    metrics.update(
        model=cfg.model,
        classes=list(dataset.class_names),
        image_size=cfg.image_size,
        validation=("test split (the seed's protocol: checkpoint chosen on the reported split)"
                    if cfg.val_split == "test" else f"{cfg.val_fraction:.0%} stratified of train (seed {cfg.seed})"),
        best_epoch=best_epoch,
        best_val_loss=float(history["val_loss"].min()),
        best_val_accuracy=float(history.loc[best_epoch - 1, "val_accuracy"]),
        train_seconds=float(history["epoch_seconds"].sum()) if "epoch_seconds" in history else train_seconds,
        predict_seconds=predict_seconds,
        **params,
    )
    write_json(run_dir / "metrics.json", metrics)
    per_class.to_csv(run_dir / "per_class.csv", index=False)
    pd.DataFrame(cm, index=dataset.class_names, columns=dataset.class_names).rename_axis("true \\ predicted").to_csv(
        run_dir / "confusion_matrix.csv"
    )
    predictions_table(dataset.test.files, dataset.test.labels, probs, dataset.class_names).to_csv(
        run_dir / "predictions.csv", index=False
    )
    title = f"{run_dir.name}"
    plot_curves(history, run_dir / "curves.png", title)
    plot_confusion(cm, dataset.class_names, run_dir / "confusion_matrix.png", title)
    return {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "majority_baseline_accuracy", "train_seconds")}

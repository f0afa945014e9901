"""Train a registered model on a run's data and evaluate its best checkpoint on the test set,
writing history, metrics, predictions, confusion matrix and curves into the run folder.

Scratch models train end to end on raw pixels. Transfer models train their head on cached
frozen-base features (the same numbers as end to end through the frozen base, at a fraction of
the cost); the finetune variant then unfreezes the base's top block(s) and continues end to end.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from ..config import RunConfig, class_weights
from ..data.batches import predict
from ..data.dataset import Dataset, as_model_input
from ..data.integrity import carve_validation, test_twins_of_train
from ..files import save_model, write_json
from ..models import BuiltModel, create_model
from ..models.augment import with_augmentation
from ..models.saved import inference_model, load_saved_model
from ..models.transfer import adapt_feature_norm, unfreeze_top, weights_key
from ..precision import precision_policy
from ..reporting.calibration import calibration_summary, plot_reliability
from ..reporting.evaluation import (
    evaluate_predictions,
    predict_with_tta,
    predictions_table,
    write_scores,
)
from ..reporting.plots import plot_curves
from ..run_folder import RunFolder
from .devices import device_scope
from .crowd_targets import fit_targets
from .distillation import distilled_targets, teacher_probabilities
from .features import cached_features, feature_cache_path
from .fit import TrainSettings, fit_stage

log = logging.getLogger(__name__)
FINETUNE_CLIPNORM = 1.0  # gradients through a pretrained base are clipped: one bad batch must not wreck it


def count_params(model) -> dict[str, int]:
    """Trainable and total parameter counts of a Keras model."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return {"trainable_params": trainable, "total_params": total}


class StageData:
    """Model inputs (raw pixels or features) of train and test, cut into fit / validation per the config.

    `to_input(split_name)` gives the inputs of one of the dataset's splits; `teacher` (probabilities
    of every training image) makes the fit targets distilled ones (`cfg.distill`).
    """

    def __init__(self, cfg: RunConfig, dataset: Dataset, to_input: Callable[[str], np.ndarray],
                 teacher: np.ndarray | None = None):
        k = len(dataset.class_names)
        x_train = to_input("train")
        self.x_test = to_input("test")
        if cfg.val_split == "train":
            fit_idx, val_idx = carve_validation(dataset, cfg.val_fraction, cfg.validation_seed())
            x_val, val_labels = x_train[val_idx], dataset.train.labels[val_idx]
        else:  # 'test' (the seed's protocol) or 'given' (the data's own validation split)
            fit_idx = np.arange(len(dataset.train))
            x_val = self.x_test if cfg.val_split == "test" else to_input("validation")
            val_labels = (dataset.test if cfg.val_split == "test" else dataset.validation).labels
        if dataset.train.weights is not None:  # several sources: each fit image drawn by its source's weight
            fit_idx = weighted_draw(fit_idx, dataset.train.weights[fit_idx], cfg.seed)
        votes = None if dataset.train.votes is None else dataset.train.votes[fit_idx]
        self.x_fit, self.y_fit = x_train[fit_idx], fit_targets(cfg.targets, votes, dataset.train.labels[fit_idx], k)
        if teacher is not None:  # distillation: the fit targets also carry the teacher's probabilities
            self.y_fit = distilled_targets(self.y_fit, teacher[fit_idx], cfg.distill)
        self.x_val, self.y_val = x_val, keras.utils.to_categorical(val_labels, k)
        self.fit_labels = dataset.train.labels[fit_idx]

    def fit(self, model, settings: TrainSettings, stage_dir: Path, best_path: Path, beat_val_loss=None):
        return fit_stage(model, self.x_fit, self.y_fit, self.x_val, self.y_val, settings, stage_dir, best_path,
                         beat_val_loss)


def weighted_draw(index: np.ndarray, weights: np.ndarray, seed: int) -> np.ndarray:
    """Each index repeated by its weight: the whole part always, the fraction by a seeded draw."""
    rng = np.random.default_rng(seed)
    copies = np.floor(weights).astype(int) + (rng.random(len(weights)) < weights - np.floor(weights))
    return np.repeat(index, copies)


def pixels_of(dataset: Dataset) -> Callable[[str], np.ndarray]:
    """`to_input` for StageData: a split's raw pixels as every model takes them."""
    return lambda split: as_model_input(dataset.splits()[split].images)


def teacher_of(cfg: RunConfig, dataset: Dataset) -> np.ndarray | None:
    """The teacher's probabilities of the training images when the run distils, else None."""
    return teacher_probabilities(Path(cfg.teacher), dataset) if cfg.distill > 0 else None


def _train_scratch(built: BuiltModel, cfg, dataset, settings, run_dir):
    data = StageData(cfg, dataset, pixels_of(dataset), teacher_of(cfg, dataset))
    history = data.fit(with_augmentation(built.full, cfg.augment, cfg.seed), settings, run_dir, run_dir / RunFolder.MODEL)
    best = load_saved_model(run_dir / RunFolder.MODEL)
    probs = [predict(best, x) for x in (data.x_test, data.x_val)]
    return *probs, history, data, count_params(built.full), best


def _train_transfer(built: BuiltModel, cfg, dataset, settings, run_dir):
    fingerprint = dataset.fingerprint()
    weights_id = weights_key(cfg)
    params = {"feature_extraction_seconds": 0.0}

    def features_of(split: str) -> np.ndarray:
        path = feature_cache_path(cfg.model, weights_id, cfg.image_size, fingerprint[f"{split}_sha256"], cfg.precision_used,
                                  cfg.framing)
        features, seconds = cached_features(built.extractor, dataset.splits()[split].images, path)
        params["feature_extraction_seconds"] += seconds
        return features

    teacher = teacher_of(cfg, dataset)
    data = StageData(cfg, dataset, features_of, teacher)
    adapt_feature_norm(built, data.x_fit)
    history = data.fit(built.head, settings, run_dir, run_dir / RunFolder.HEAD)
    built.head.set_weights(load_saved_model(run_dir / RunFolder.HEAD).get_weights())
    built.head.compiled = False  # saved inside best.keras, its optimizer would need fer_bench to load
    params.update(count_params(built.full))
    if cfg.variant == "frozen":
        save_model(run_dir / RunFolder.MODEL, built.full)
        probs = [predict(built.head, x, 1024) for x in (data.x_test, data.x_val)]
        return *probs, history, data, params, built.full

    finetune_dir = run_dir / "finetune"
    if not finetune_dir.exists():  # fine-tuning has not started: stage 1's model is the one to beat
        save_model(run_dir / RunFolder.MODEL, built.full)
    log.info("finetune: unfroze %d layers of %s's top block(s)", unfreeze_top(built), cfg.model)
    params.update(count_params(built.full))
    pixels = StageData(cfg, dataset, pixels_of(dataset), teacher)
    tuned = pixels.fit(with_augmentation(built.full, cfg.augment, cfg.seed),
                       replace(settings, epochs=cfg.finetune_epochs, learning_rate=cfg.finetune_learning_rate, warmup_epochs=0,
                               clipnorm=FINETUNE_CLIPNORM),
                       finetune_dir, run_dir / RunFolder.MODEL, beat_val_loss=float(history["val_loss"].min()))
    tuned = tuned.assign(epoch=tuned["epoch"] + len(history), stage="finetune")
    history = pd.concat([history.assign(stage="head"), tuned], ignore_index=True)
    best = load_saved_model(run_dir / RunFolder.MODEL)
    probs = [predict(best, x, 64) for x in (pixels.x_test, pixels.x_val)]
    return *probs, history, pixels, params, best


def train_settings(cfg: RunConfig, **extra) -> TrainSettings:
    """The optimisation settings a resolved config asks for (plus `extra`, e.g. class weights)."""
    keys = ("epochs", "batch_size", "learning_rate", "optimizer", "momentum", "weight_decay", "label_smoothing",
            "warmup_epochs", "schedule", "patience", "ema", "targets")
    return TrainSettings(**{key: getattr(cfg, key) for key in keys}, **extra)


def tta_metrics(model, dataset: Dataset, mode: str) -> dict:
    """Test accuracy (with its interval), balanced accuracy and macro-F1 under test-time augmentation `mode`."""
    probs = predict_with_tta(model, as_model_input(dataset.test.images), mode)
    scored, _, _ = evaluate_predictions(dataset.test.labels, probs, dataset.class_names, dataset.train.labels)
    return {"mode": mode, **{k: scored[k] for k in ("accuracy", "accuracy_ci95", "balanced_accuracy", "macro_f1")}}


def calibrate(cfg: RunConfig, dataset: Dataset, run_dir: Path) -> dict:
    """Fit a complete run's temperature on its validation split from its best checkpoint; writes
    calibration.json, reliability.png and metrics.json's `calibration` entry."""
    data = StageData(cfg, dataset, pixels_of(dataset))
    with precision_policy(cfg.precision_used or "float32"):
        best = load_saved_model(run_dir / RunFolder.MODEL)
        val_probs, test_probs = (predict(best, x) for x in (data.x_val, data.x_test))
    summary = _write_calibration(run_dir, val_probs, data.y_val.argmax(axis=1), test_probs, dataset.test.labels)
    run = RunFolder(run_dir)
    write_json(run.file(RunFolder.METRICS), {**run.metrics, "calibration": summary})
    return summary


def _write_calibration(run_dir: Path, val_probs, val_labels, test_probs, test_labels, name: str | None = None) -> dict:
    summary = calibration_summary(val_probs, val_labels, test_probs, test_labels)
    write_json(run_dir / RunFolder.CALIBRATION, summary)
    plot_reliability(test_probs, test_labels, summary["temperature"], run_dir / RunFolder.RELIABILITY,
                     f"{name or run_dir.name}: test split, temperature fitted on validation")
    return summary


def validation_description(cfg: RunConfig) -> str:
    """Where a run's checkpoint (and temperature) was chosen, in words."""
    if cfg.val_split == "train":
        return (f"{cfg.val_fraction:.0%} stratified of train (seed {cfg.validation_seed()}; identical images kept on "
                "one side)")
    return {"test": "test split (the seed's protocol: checkpoint chosen on the reported split)",
            "given": "the data's own validation split"}[cfg.val_split]


def score_without_train_twins(dataset: Dataset, probs: np.ndarray) -> dict:
    """Accuracy and balanced accuracy on the test images that have no pixel-identical twin in the
    training split (what --dedupe would report), beside how many were left out."""
    from sklearn.metrics import recall_score

    keep = ~test_twins_of_train(dataset)
    scores = {"left_out": int((~keep).sum()), "test_images": int(keep.sum()), "accuracy": None,
              "balanced_accuracy": None}
    if keep.any():  # (every test image may have a twin in train)
        labels, predicted = dataset.test.labels[keep], probs[keep].argmax(axis=1)
        # balanced accuracy: the mean recall of the classes present (passing them keeps sklearn from
        # warning when only one is left)
        scores.update(accuracy=float(np.mean(labels == predicted)), balanced_accuracy=float(
            recall_score(labels, predicted, labels=np.unique(labels), average="macro", zero_division=0)))
    return scores


def score_test_set(run_dir: Path, cfg: RunConfig, dataset: Dataset, model, probs: np.ndarray, val_probs: np.ndarray,
                   val_labels: np.ndarray, fit_labels: np.ndarray, name: str | None = None) -> dict:
    """A finished model's test metrics: accuracy with its interval, per-class scores, confusion matrix,
    per-image predictions (written into `run_dir`), the temperature fitted on validation and, if the
    config asks for it, test-time augmentation. Returns the metrics for metrics.json. `name` titles
    the plots (default: the folder's name)."""
    name = name or run_dir.name
    metrics, per_class, cm = evaluate_predictions(dataset.test.labels, probs, dataset.class_names, fit_labels)
    metrics["without_train_twins"] = score_without_train_twins(dataset, probs)
    # calibrated percentages: one temperature fitted on the validation split (never on test)
    metrics["calibration"] = _write_calibration(run_dir, val_probs, val_labels, probs, dataset.test.labels, name)
    if cfg.tta != "none":
        metrics["tta"] = tta_metrics(model, dataset, cfg.tta)
    write_scores(run_dir, dataset.class_names, per_class, cm,
                 predictions_table(dataset.test.files, dataset.test.labels, probs, dataset.class_names), name)
    return metrics


def train_and_evaluate(cfg: RunConfig, dataset: Dataset, run_dir: Path, callbacks: tuple = ()) -> dict:
    """Fit, pick the best checkpoint by validation loss, evaluate it on the test split. `callbacks`
    (Keras callbacks) also watch every training epoch."""
    keras.utils.set_random_seed(cfg.seed)
    settings = train_settings(cfg, class_weight=class_weights(cfg, dataset.train.labels),
                              tensorboard_dir=run_dir / "tensorboard" if cfg.tensorboard else None,
                              extra_callbacks=tuple(callbacks))
    weights = "trained from scratch" if cfg.weights == "none" else f"weights {Path(cfg.weights).name}"
    log.info("%s (%s, %s recipe, %s): %d train, %d test images", cfg.model, weights, cfg.recipe,
             cfg.precision_used, len(dataset.train), len(dataset.test))
    with precision_policy(cfg.precision_used), device_scope(int(cfg.devices), cfg.batch_size):
        built = create_model(cfg.model, len(dataset.class_names), cfg.image_size, weights=cfg.weights, width=cfg.width,
                             variant=cfg.variant, framing=cfg.framing)
        train = _train_scratch if built.extractor is None else _train_transfer
        probs, val_probs, history, data, params, best = train(built, cfg, dataset, settings, run_dir)
        best = inference_model(best)  # stock Keras layers only: loadable without fer_bench
        save_model(run_dir / RunFolder.MODEL, best)

    metrics = score_test_set(run_dir, cfg, dataset, best, probs, val_probs, data.y_val.argmax(axis=1), data.fit_labels)
    frozen = built.info.transfer and cfg.variant == "frozen"
    best_row = history.loc[history["val_loss"].idxmin()]
    metrics.update(
        model=cfg.model,
        variant=cfg.variant if built.info.transfer else None,
        weights=cfg.weights,
        classes=list(dataset.class_names),
        image_size=cfg.image_size,
        recipe=cfg.recipe,
        precision=cfg.precision_used,
        devices=int(cfg.devices),
        per_device_batch_size=cfg.batch_size // int(cfg.devices),
        augmentation="none (frozen base: features computed once, without augmentation)" if frozen else cfg.augment,
        validation=validation_description(cfg),
        fit_images=len(data.y_fit),
        validation_images=len(data.y_val),
        best_epoch=int(best_row["epoch"]) + 1,
        best_val_loss=float(best_row["val_loss"]),
        best_val_accuracy=float(best_row["val_accuracy"]),
        train_seconds=float(history["epoch_seconds"].sum()),
        **params,
    )
    metrics.setdefault("feature_extraction_seconds", 0.0)
    metrics["total_train_seconds"] = metrics["train_seconds"] + metrics["feature_extraction_seconds"]
    if cfg.teacher is not None:  # what the student's knowledge cost before it started
        teacher = RunFolder(cfg.teacher).metrics
        metrics["teacher"] = {"run": Path(cfg.teacher).name, "weight": cfg.distill,
                              "total_train_seconds": teacher["total_train_seconds"]}
    write_json(run_dir / RunFolder.METRICS, metrics)
    plot_curves(history, run_dir / RunFolder.CURVES, run_dir.name)
    return {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "majority_baseline_accuracy",
                                          "total_train_seconds")}

"""Metrics of a model's test predictions: accuracy with a Wilson interval, balanced accuracy,
macro-F1, per-class precision/recall/F1, the majority-class baseline, ROC-AUC for two classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ..data.batches import predict
from ..files import write_csv
from ..run_folder import RunFolder
from .plots import plot_confusion


def write_scores(folder, class_names, per_class: pd.DataFrame, cm: np.ndarray, predictions: pd.DataFrame,
                 title: str) -> None:
    """The score files of one scoring, a run's test set or an evaluation: per-class scores, the confusion
    matrix (CSV and PNG) and the per-image predictions (metrics.json is written by the caller)."""
    write_csv(folder / RunFolder.PER_CLASS, per_class, index=False)
    write_csv(folder / RunFolder.CONFUSION, pd.DataFrame(cm, index=class_names, columns=class_names)
              .rename_axis("true \\ predicted"))
    write_csv(folder / RunFolder.PREDICTIONS, predictions, index=False)
    plot_confusion(cm, class_names, folder / RunFolder.CONFUSION_PLOT, title)


def accuracy_ci(correct: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the accuracy of a 0/1 'prediction was right' vector: closed form,
    deterministic and constant memory (a bootstrap would hold n_boot x n draws)."""
    from scipy.stats import binomtest

    correct = np.asarray(correct, dtype=bool)
    interval = binomtest(int(correct.sum()), len(correct)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...], train_labels: np.ndarray):
    """Return (metrics dict, per-class DataFrame, confusion matrix counts)."""
    y_pred = probs.argmax(axis=1)
    k = len(class_names)
    labels = np.arange(k)
    majority = int(np.bincount(train_labels, minlength=k).argmax())
    ci = accuracy_ci(y_pred == y_true)
    result = {
        "test_images": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "accuracy_ci95": list(ci),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "majority_class": class_names[majority],
        "majority_baseline_accuracy": float(np.mean(y_true == majority)),
        "majority_baseline_balanced_accuracy": 1.0 / k,
    }
    if k == 2:
        result["roc_auc"] = float(skm.roc_auc_score(y_true, probs[:, 1])) if len(np.unique(y_true)) == 2 else None
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        {"class": class_names, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    return result, per_class, cm


def predictions_table(files: list[str], y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """One row per test image: file, true class, predicted class, and every class probability."""
    table = pd.DataFrame(
        {
            "file": files,
            "true": [class_names[i] for i in y_true],
            "predicted": [class_names[i] for i in probs.argmax(axis=1)],
        }
    )
    for i, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, i]
    return table


CROP_SHIFT = 3  # pixels: the 'crops' views are the image shifted this far toward each corner


def tta_views(pixels: np.ndarray, mode: str) -> list[np.ndarray]:
    """Test-time views of (n, h, w, 1) pixels: 'none' the image; 'flip' plus its mirror image;
    'crops' ten views, the image and its mirror each shifted by CROP_SHIFT px to the four corners
    and centred (edge pixels repeat), as ten-crop evaluation does for a fixed input size."""
    views = [pixels]
    if mode == "crops":
        s = CROP_SHIFT
        padded = np.pad(pixels, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
        h, w = pixels.shape[1:3]
        views = [padded[:, dy:dy + h, dx:dx + w] for dy, dx in ((s, s), (0, 0), (0, 2 * s), (2 * s, 0), (2 * s, 2 * s))]
    if mode in ("flip", "crops"):
        views += [v[:, :, ::-1] for v in views]
    return views


def predict_with_tta(model, pixels: np.ndarray, mode: str, batch_size: int = 256) -> np.ndarray:
    """Class probabilities averaged over the test-time views of `mode`."""
    views = tta_views(pixels, mode)
    return sum(predict(model, np.ascontiguousarray(v), batch_size) for v in views) / len(views)

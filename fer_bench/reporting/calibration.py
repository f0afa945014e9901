"""Calibrated probabilities: temperature scaling (Guo et al. 2017) fitted on a run's validation
split, expected calibration error, and the reliability diagram.

A network trained with cross-entropy is often over- or under-confident: its "89 %" is right more or
less often than 89 % of the time. One temperature T divides the log-probabilities before the
softmax; it changes no prediction (the argmax stays), only how sure each one claims to be. T is
chosen to minimise the negative log-likelihood of the validation labels, never the test labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ECE_BINS = 15


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softmax(log(p) / T), row by row."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (0.05-20) that minimises the negative log-likelihood of `labels`."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-np.log(np.clip(apply_temperature(probs, np.exp(log_t))[rows, labels], 1e-12, 1.0)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded").x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by how many predictions fall in each."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(correct[which == b].mean() - confidence[which == b].mean()) * np.sum(which == b)
            for b in range(bins) if np.any(which == b)]
    return float(sum(gaps) / len(labels))


def calibration_summary(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                        test_labels: np.ndarray) -> dict:
    """Fit T on validation; ECE before and after on validation and test."""
    temperature = fit_temperature(val_probs, val_labels)
    return {
        "temperature": temperature,
        "fitted_on": f"validation split ({len(val_labels)} images)",
        "validation_ece_before": expected_calibration_error(val_probs, val_labels),
        "validation_ece_after": expected_calibration_error(apply_temperature(val_probs, temperature), val_labels),
        "test_ece_before": expected_calibration_error(test_probs, test_labels),
        "test_ece_after": expected_calibration_error(apply_temperature(test_probs, temperature), test_labels),
    }


def plot_reliability(probs: np.ndarray, labels: np.ndarray, temperature: float, path: Path, title: str) -> None:
    """Reliability diagram (accuracy against confidence, top label) before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    from ..files import save_figure

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfectly calibrated")
    for name, p in (("raw", probs), (f"temperature {temperature:.2f}", apply_temperature(probs, temperature))):
        correct = (p.argmax(axis=1) == labels).astype(int)
        accuracy, confidence = calibration_curve(correct, p.max(axis=1), n_bins=ECE_BINS, strategy="uniform")
        ax.plot(confidence, accuracy, "o-", label=f"{name} (ECE {expected_calibration_error(p, labels):.3f})")
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)

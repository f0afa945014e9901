"""PNG figures: one run's training curves and confusion matrix, and the benchmarks' tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from ..files import save_figure  # noqa: E402


def plot_curves(history: pd.DataFrame, path: Path, title: str) -> None:
    """Loss and accuracy per epoch for training and validation (the seed's Figure 3)."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], "o-", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1].set_xlabel("epoch")
    axes[0].set_title(title)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)


def draw_confusion(ax, cm: np.ndarray, class_names, normalise: bool, title: str) -> None:
    """Draw one confusion matrix (counts, or rows normalised to sum 1) onto `ax`."""
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    ConfusionMatrixDisplay(shown, display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalise else "d"
    )
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)


def plot_confusion(cm: np.ndarray, class_names, path: Path, title: str) -> None:
    """Counts and row-normalised confusion matrices side by side."""
    size = 3 + 0.6 * len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    draw_confusion(axes[0], cm, class_names, normalise=False, title="counts")
    draw_confusion(axes[1], cm, class_names, normalise=True, title="row-normalised (recall)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)


def plot_benchmark(table: pd.DataFrame, path: Path) -> None:
    """Feature-extraction throughput per base and size, annotated with its share of the machine's peak."""
    labels = [f"{m}\n{s} px" for m, s in zip(table["model"], table["image_size"])]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table)), 3.5))
    bars = ax.bar(labels, table["extract_images_per_s"], color="tab:blue")
    for bar, share, head in zip(bars, table["peak_fraction"], table["head_epochs_vs_one_base_pass"]):
        ax.annotate(f"{share:.0%} of peak\nhead epochs {head:.1%}\nof one pass", (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("feature extraction (images/s)")
    ax.set_title(f"frozen bases ({table['precision'].iloc[0]})")
    ax.margins(y=0.35)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)


def plot_answer_speed(table: pd.DataFrame, path: Path) -> None:
    """`benchmark --photos` (ms per photo, with accuracy where scored) or `--video` (frames/s per frame size
    and scheme): one bar per detector and model."""
    video = "frames_per_second" in table
    if video:
        labels = [f"{s}\n{d}\n{'every frame' if e == 1 else f'every {e}th'}"
                  for s, d, e in zip(table["frame_size"], table["detector"], table["every"])]
        values, notes, unit = table["frames_per_second"], [f"{v:.0f} MiB" for v in table["peak_resident_mb"]], "frames/s"
    else:
        labels = [f"{d}\n{m}" for d, m in zip(table["detector"], table["model"])]
        values, unit = table["ms_per_photo"], "ms per photo (whole command, cold start included)"
        notes = [f"accuracy {a:.3f}" if pd.notna(a) else "" for a in table.get("accuracy", [np.nan] * len(table))]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(table)), 3.8))
    bars = ax.bar(labels, values, color="tab:blue")
    for bar, note, ratio in zip(bars, notes, table["speed_vs_first"]):
        ax.annotate(f"speed {ratio:.2g}x\n{note}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=7)
    ax.set_ylabel(unit)
    ax.set_title("predict VIDEO" if video else "predict FOLDER", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    ax.margins(y=0.3)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)


def plot_train_benchmark(table: pd.DataFrame, path: Path) -> None:
    """Achieved training GFLOP/s per model, size and precision, beside the measured peak."""
    labels = [f"{m}\n{s} px {p}" for m, s, p in zip(table["model"], table["image_size"], table["precision"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(table)), 4))
    ax.bar(x - 0.2, table["peak_gflops"], 0.4, color="lightgray", label="measured peak (matmul / conv)")
    ax.bar(x + 0.2, table["achieved_gflops"], 0.4, color="tab:blue", label="achieved in training")
    for i, fraction in enumerate(table["peak_fraction"]):
        ax.annotate(f"{fraction:.0%}", (x[i] + 0.2, table["achieved_gflops"].iloc[i]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("GFLOP/s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)

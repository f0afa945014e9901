"""The cross-data-set view of a comparison: one row per configuration (seeds pooled), one column group
per data set a run was scored on (its own test set first, then each `fer-bench evaluate` of it), and
a heat map of configurations x data sets. The last column is the mean balanced accuracy over the
other data sets (missing unless the configuration was scored on every one of them).

A data set is identified by its evaluation folder's name, which hashes its pixels, labels, scored
classes, test-time augmentation and face mode: runs scored on different images never share a column,
and a data set a configuration was not scored on shows as missing, never as zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import save_figure
from ..run_folder import RunFolder

OWN_TEST = "own test set"
METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced"), ("macro_f1", "macro-F1"))
MEAN_BALANCED = "mean balanced accuracy over the other data sets"  # the development protocol's choice rule


def read_evaluations(run: RunFolder) -> dict[str, dict]:
    """{evaluation folder name: its metrics} of one run on other data sets (complete evaluations only)."""
    return {folder.name: metrics for folder, metrics in run.evaluations() if not metrics.get("own_test")}


def data_label(name: str, metrics: dict) -> str:
    """A column heading: the data set's folder name, the evaluation's hash, and TTA/faces if not plain."""
    label = f"{Path(metrics['data']).name} ({name.rsplit('-', 1)[-1][:6]})"
    extras = [f"TTA {metrics['tta']}" if metrics.get("tta", "none") != "none" else "",
              "faces detected" if metrics.get("faces", "off") != "off" else ""]
    return " ".join([label] + [e for e in extras if e])


def _cell(values: list[float], low_high: list[tuple[float, float]] | None) -> str:
    if not values:
        return "missing"
    mean = float(np.mean(values))
    if len(values) > 1:
        return f"{mean:.4f} ± {np.std(values, ddof=1):.4f}"
    return f"{mean:.4f} [{low_high[0][0]:.4f}, {low_high[0][1]:.4f}]" if low_high else f"{mean:.4f}"


def cross_data_frames(rows: list[tuple[str, str, dict, dict[str, dict]]]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """From (configuration key, its label, own test metrics, {evaluation name: metrics}) per run: the
    shown table, the mean accuracy per configuration x data set (NaN: not scored), and the data set
    labels in order. Runs pool by key; labels shared by different keys are numbered."""
    datasets: dict[str, str] = {}
    for *_, evaluations in rows:
        for name, metrics in evaluations.items():
            datasets.setdefault(name, data_label(name, metrics))
    order = [OWN_TEST] + sorted(datasets, key=lambda n: datasets[n])
    labels = {OWN_TEST: OWN_TEST, **datasets}
    configs: dict[str, list[dict[str, dict]]] = {}
    names: dict[str, str] = {}
    for key, label, own, evaluations in rows:
        if key not in names:
            taken = sum(1 for n in names.values() if n == label or n.startswith(label + " ("))
            names[key] = label if not taken else f"{label} ({taken + 1})"
        configs.setdefault(key, []).append({OWN_TEST: own, **evaluations})
    shown, means = [], []
    for key, runs in configs.items():
        row, mean_row, balanced = {"configuration": names[key], "seeds": len(runs)}, {}, []
        for name in order:
            scored = [r[name] for r in runs if name in r]
            if scored and len(scored) < len(runs):  # some seeds not scored: do not pool a part
                scored = []
            for key, heading in METRICS:
                intervals = [tuple(s["accuracy_ci95"]) for s in scored] if key == "accuracy" else None
                row[f"{labels[name]}: {heading}"] = _cell([s[key] for s in scored], intervals)
            mean_row[labels[name]] = float(np.mean([s["accuracy"] for s in scored])) if scored else math.nan
            if name != OWN_TEST:
                balanced.append(float(np.mean([s["balanced_accuracy"] for s in scored])) if scored else math.nan)
        row[MEAN_BALANCED] = "missing" if not balanced or any(map(math.isnan, balanced)) else f"{np.mean(balanced):.4f}"
        shown.append(row)
        means.append(mean_row)
    heat = pd.DataFrame(means, index=[names[key] for key in configs])
    return pd.DataFrame(shown), heat, [labels[n] for n in order]


def plot_heat_map(heat: pd.DataFrame, path: Path, title: str) -> None:
    """Configurations x data sets, mean accuracy; a grey '—' where a configuration was not scored."""
    import matplotlib.pyplot as plt

    values = heat.to_numpy(dtype=float)
    label_inches = 0.07 * max(len(str(label)) for label in heat.index)
    fig, ax = plt.subplots(figsize=(2.5 + label_inches + 1.6 * values.shape[1], 1.6 + 0.45 * values.shape[0]),
                           layout="constrained")
    masked = np.ma.masked_invalid(values)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(masked, cmap=cmap, vmin=np.nanmin(values) if np.isfinite(values).any() else 0,
                      vmax=np.nanmax(values) if np.isfinite(values).any() else 1, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, "—" if math.isnan(value) else f"{value:.3f}", ha="center", va="center", fontsize=8,
                color="black" if math.isnan(value) or value > np.nanmean(values) else "white")
    ax.set_xticks(range(values.shape[1]), heat.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]), heat.index, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (mean over seeds)")
    save_figure(path, fig, dpi=110)
    plt.close(fig)

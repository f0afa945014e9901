"""Collect complete run folders into one comparison: a table (Markdown, CSV, LaTeX) with bootstrap
intervals, McNemar's exact test against the scratch baseline on the same test images, mean ± std
across seeds, a grid of normalised confusion matrices and an accuracy bar chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..errors import UserError
from ..files import save_figure, write_csv
from ..run import find_run_dirs

BASELINE_MODEL = "scratch"
CONFIG_COLUMNS = ["model", "variant", "weights", "recipe", "classes", "image_size", "epochs"]


def mcnemar_exact(baseline_correct: np.ndarray, model_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value from paired 0/1 correctness vectors (binomial on discordant pairs)."""
    b = int(np.sum(baseline_correct & ~model_correct))
    c = int(np.sum(~baseline_correct & model_correct))
    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def _load_run(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    predictions = pd.read_csv(run_dir / "predictions.csv")
    return {
        "run": run_dir.name,
        "model": config["model"],
        "variant": metrics.get("variant") or "-",
        "weights": config["weights"],
        "classes": config["classes"],
        "image_size": config["image_size"],
        "recipe": config.get("recipe", "seed"),
        "epochs": config["epochs"],
        "seed": config["seed"],
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "train_seconds": metrics["total_train_seconds"],
        "accuracy": metrics["accuracy"],
        "ci95_low": metrics["accuracy_ci95"][0],
        "ci95_high": metrics["accuracy_ci95"][1],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "majority_baseline": metrics["majority_baseline_accuracy"],
        "tta": metrics.get("tta", {}).get("mode", "none"),
        "tta_accuracy": metrics.get("tta", {}).get("accuracy", math.nan),
        "_test_set": data["test_sha256"],
        "_files": predictions["file"].tolist(),
        "_correct": (predictions["true"] == predictions["predicted"]).to_numpy(),
        "_confusion": pd.read_csv(run_dir / "confusion_matrix.csv", index_col=0),
    }


def _add_mcnemar(runs: list[dict]) -> None:
    """p-value of each run against the scratch run with the same seed (else the first scratch run)."""
    test_sets = {r["_test_set"] for r in runs}
    if len(test_sets) > 1:
        groups = {}
        for r in runs:
            groups.setdefault(r["_test_set"], []).append(r["run"])
        first, second = list(groups.values())[:2]
        raise UserError(f"runs were evaluated on different test sets ({first[0]} vs {second[0]}); "
                        "compare runs on the same data, classes and dedupe setting")
    baselines = [r for r in runs if r["model"] == BASELINE_MODEL]
    for r in runs:
        partner = next((b for b in baselines if b["seed"] == r["seed"]), baselines[0] if baselines else None)
        if partner is None or partner is r or partner["_files"] != r["_files"]:
            r[f"p_mcnemar_vs_{BASELINE_MODEL}"] = math.nan
        else:
            r[f"p_mcnemar_vs_{BASELINE_MODEL}"] = mcnemar_exact(partner["_correct"], r["_correct"])


def summarise_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std across seeds for each configuration."""
    metrics = ["accuracy", "balanced_accuracy", "macro_f1", "train_seconds"]
    grouped = table.groupby(CONFIG_COLUMNS, sort=False)
    summary = grouped[metrics].agg(["mean", "std"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary.insert(0, "seeds", grouped.size())
    return summary.reset_index()


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[CONFIG_COLUMNS + ["seed", "trainable_params", "total_params"]].copy()
    shown["train time (s)"] = table["train_seconds"].round(0).astype(int)
    shown["test accuracy [95% CI]"] = [f"{a:.4f} [{lo:.4f}, {hi:.4f}]" for a, lo, hi in
                                       zip(table["accuracy"], table["ci95_low"], table["ci95_high"])]
    for column in ("balanced_accuracy", "macro_f1", "majority_baseline"):
        shown[column] = table[column].map("{:.4f}".format)
    p = f"p_mcnemar_vs_{BASELINE_MODEL}"
    shown[p] = table[p].map(lambda v: "-" if math.isnan(v) else f"{v:.3g}")
    # plain accuracy (above) is what the intervals and McNemar use; TTA is shown beside it, named
    shown["accuracy with TTA"] = [f"{a:.4f} ({mode})" if mode != "none" else "-"
                                  for a, mode in zip(table["tta_accuracy"], table["tta"])]
    return shown


def _formatted_summary(summary: pd.DataFrame) -> pd.DataFrame:
    shown = summary[CONFIG_COLUMNS + ["seeds"]].copy()
    for m in ("accuracy", "balanced_accuracy", "macro_f1"):
        shown[m] = [f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"
                    for mean, std in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    shown["train time (s)"] = summary["train_seconds_mean"].round(0).astype(int)
    return shown


def _plot(runs: list[dict], table: pd.DataFrame, out: Path) -> None:
    import matplotlib.pyplot as plt

    from .plots import draw_confusion

    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    k = len(runs[0]["_confusion"])
    size = 2.5 + 0.5 * k
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax, r in zip(axes.flat, runs):
        draw_confusion(ax, r["_confusion"].to_numpy(), r["_confusion"].columns, normalise=True,
                       title=f"{r['model']} {r['image_size']}px s{r['seed']}\nacc {r['accuracy']:.3f}")
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(out / "confusion_matrices.png", fig, dpi=100)
    plt.close(fig)

    labels = [f"{m}{'' if v == '-' else '-' + v}\n{s}px s{seed}" for m, v, s, seed in
              zip(table["model"], table["variant"], table["image_size"], table["seed"])]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(table)), 4))
    err = np.vstack([table["accuracy"] - table["ci95_low"], table["ci95_high"] - table["accuracy"]])
    ax.bar(range(len(table)), table["accuracy"], yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.axhline(table["majority_baseline"].iloc[0], color="gray", linestyle="--", label="majority class")
    ax.set_xticks(range(len(table)), labels, fontsize=8)
    ax.set_ylabel("test accuracy (95% bootstrap CI)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(out / "accuracy.png", fig, dpi=110)
    plt.close(fig)


def compare(run_dirs: list[Path], out: Path) -> tuple[str, list[Path]]:
    """Write comparison.{md,csv,tex}, summary files and figures to `out`; returns (markdown, skipped)."""
    complete, skipped = find_run_dirs(run_dirs)
    if not complete:
        raise UserError("no complete run folders to compare" + (f" ({len(skipped)} incomplete)" if skipped else ""))
    runs = [_load_run(d) for d in complete]
    _add_mcnemar(runs)
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in runs])
    table = table.sort_values(CONFIG_COLUMNS + ["seed"], kind="stable").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "comparison.csv", table, index=False)
    shown = _formatted(table)
    markdown = shown.to_markdown(index=False)
    latex = [shown.to_latex(index=False, escape=True)]
    if table.duplicated(CONFIG_COLUMNS).any():
        summary = summarise_seeds(table)
        write_csv(out / "summary.csv", summary, index=False)
        summary_shown = _formatted_summary(summary)
        markdown += "\n\nAcross seeds (mean ± std):\n\n" + summary_shown.to_markdown(index=False)
        latex.append(summary_shown.to_latex(index=False, escape=True))
    (out / "comparison.md").write_text(markdown + "\n")
    (out / "comparison.tex").write_text("\n".join(latex))
    _plot(runs, table, out)
    return markdown, skipped

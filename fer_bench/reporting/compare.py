"""Collect complete run folders into comparison tables (Markdown, CSV, LaTeX) and figures.

Runs are grouped by the test set they were scored on (data fingerprint and classes): one table per
test set, since accuracies on different images are not comparable. A table's columns are the
config keys whose values differ among its runs, read from each run's own `config.json`; runs
that differ only in their seed are pooled (mean ± std). Every run is tested against one named
baseline run with McNemar's exact test on the same test images, with a Benjamini-Hochberg
adjustment across the table. A run whose checkpoint was chosen on the test split is marked and
kept out of the tests. Runs written in another results format are reported as stale, not used.
Where runs were also scored on other data sets (`fer-bench evaluate`), one cross-data-set view of
all of them follows the tables (`cross_data`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, false_discovery_control

from ..config import compared_options, neutral_values
from ..errors import UserError
from ..files import make_work_dir, save_figure, write_csv
from ..run_folder import RunFolder, find_run_dirs
from .cross_data import cross_data_frames, plot_heat_map, read_evaluations

DEFAULT_BASELINE = "scratch"  # the seed's CNN; under the seed recipe when there is one
# the seed has its own column, TTA its own ("accuracy with TTA"), the format is the same for all
NEVER_COLUMNS = {"seed", "tta", "results_format", "finetune_from"}  # the variant column says it
TRANSFER_ONLY = ("weights", "variant", "finetune_epochs", "finetune_learning_rate")
CROSS_DATA_LABEL = ("variant", "weights", "framing", "image_size", "recipe", "epochs", "data", "also_train", "targets",
                    "classes", "class_weight", "augment", "teacher", "width")  # what names a configuration in the cross-data-set view
ON_TEST_MARK = "†"
ON_TEST_NOTE = (f"{ON_TEST_MARK} checkpoint chosen on the test split (the seed's protocol): optimistic, kept out of "
                "the tests. ")
LEGEND = ("Accuracy is plain (no test-time augmentation) with a 95 % Wilson interval. p McNemar: exact "
          "two-sided McNemar test of one checkpoint against the baseline's on the same test images (paired by seed "
          "when the baseline has that seed): it says nothing of seed-to-seed variance; p adjusted: Benjamini-Hochberg "
          "across the table's checkpoints. Pooled table: the accuracy difference against the baseline paired by seed, "
          "with a t interval over seeds, and a paired t-test (BH-adjusted across configurations) when there are two "
          "seeds or more; cost in baseline epochs: mean training time (feature extraction included) over the "
          "baseline's mean time per epoch, comparable only among runs timed on the same machine under the same load. "
          "'-' in a column: the option does not apply to that model.")


def mcnemar_exact(baseline_correct: np.ndarray, model_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value from paired 0/1 correctness vectors (binomial on discordant pairs)."""
    b = int(np.sum(baseline_correct & ~model_correct))
    c = int(np.sum(~baseline_correct & model_correct))
    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


@dataclass
class Run:
    """One complete run folder as compare reads it."""

    name: str
    config: dict
    metrics: dict
    data: dict
    files: list[str]
    correct: np.ndarray
    confusion: pd.DataFrame
    evaluations: dict  # `fer-bench evaluate` results on other data sets, by evaluation folder name
    epochs_trained: int  # rows of history.csv (0 when it is missing)

    @property
    def transfer(self) -> bool:
        return self.metrics.get("variant") is not None

    @property
    def on_test(self) -> bool:
        return self.config.get("val_split") == "test"

    @property
    def test_set(self) -> str:
        return f"{self.data['test_sha256']}|{','.join(self.data['classes'])}"

    def value(self, key: str):
        """A config value as shown: '-' for options a model does not have."""
        if key in TRANSFER_ONLY and not self.transfer:
            return "-"
        value = self.config.get(key)
        if value is None:
            return "synthetic" if key == "data" else "-"
        if key == "teacher":
            return Path(value).name  # its run id (config.json keeps where its folder was)
        return " + ".join(map(str, value)) if isinstance(value, list) else value  # an ensemble's members' values


def _load_run(run: RunFolder) -> Run:
    predictions = pd.read_csv(run.file(RunFolder.PREDICTIONS))
    config = {**neutral_values(), **run.config}  # older runs lack newer options
    history = run.file(RunFolder.HISTORY)
    return Run(run.name, config, run.metrics, run.data, predictions["file"].tolist(),
               (predictions["true"] == predictions["predicted"]).to_numpy(),
               pd.read_csv(run.file(RunFolder.CONFUSION), index_col=0), read_evaluations(run),
               len(pd.read_csv(history)) if history.exists() else 0)


def _read_runs(complete: list[RunFolder]) -> tuple[list[Run], list[Path], list[tuple[Path, str]]]:
    """(runs, stale folders, (unreadable folder, why)) of complete run folders: one whose records cannot be
    read is skipped with its reason, as incomplete ones are."""
    runs, stale, unreadable = [], [], []
    for folder in complete:
        try:
            if folder.is_stale():
                stale.append(folder.path)
            else:
                runs.append(_load_run(folder))
        except UserError as error:
            unreadable.append((folder.path, str(error)))
        except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as error:
            unreadable.append((folder.path, f"{type(error).__name__}: {error}"))
    return runs, stale, unreadable


def parse_where(conditions: list[str]) -> dict[str, set[str]]:
    """`KEY=VALUE[,VALUE...]` selections → {key: accepted values}."""
    selected = {}
    for condition in conditions:
        key, sep, values = condition.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--where takes KEY=VALUE (e.g. model=vggnet), got {condition!r}")
        selected[key.strip()] = {v.strip() for v in values.split(",")}
    return selected


def _matches(run: Run, selected: dict[str, set[str]]) -> bool:
    for key, accepted in selected.items():
        if key not in run.config and key != "run":
            raise UserError(f"--where: runs have no option {key!r}; options: {', '.join(sorted(run.config))}")
        value = run.name if key == "run" else run.value(key)
        shown = {str(value), Path(str(value)).name}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown |= {str(float(value))}
            accepted = accepted | {str(float(a)) for a in accepted if _is_number(a)}
        if not shown & accepted:
            return False
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def varying_columns(runs: list[Run]) -> list[str]:
    """The options RunConfig declares as what a run is (and an ensemble's members) whose shown value
    differs among the runs (model always first)."""
    declared = set(compared_options()) | {"members"}
    keys = sorted({k for r in runs for k in r.config} & declared - NEVER_COLUMNS - {"model"})
    return ["model"] + [k for k in keys if len({json.dumps(r.value(k), default=str) for r in runs}) > 1]


def choose_baseline(runs: list[Run], wanted: str | None) -> list[Run]:
    """The baseline configuration's runs (one per seed): `wanted` names a run id or a model; by default
    the seed CNN, preferring the seed recipe, then the smallest input size. Never a run chosen on test."""
    if wanted is not None and any(r.name == wanted for r in runs):
        chosen = next(r for r in runs if r.name == wanted)
        if chosen.on_test:
            raise UserError(f"--baseline {wanted}: its checkpoint was chosen on the test split; pick another run")
        return [chosen]
    model = wanted or DEFAULT_BASELINE
    candidates = [r for r in runs if r.config["model"] == model and not r.on_test]
    if not candidates:
        return []
    first = min(candidates, key=lambda r: (r.config.get("recipe") != "seed", r.config.get("image_size") or 0,
                                           r.config.get("epochs") or 0, r.name))
    columns = varying_columns(runs)
    same = _config_key(first, columns)
    return sorted((r for r in candidates if _config_key(r, columns) == same), key=lambda r: r.config["seed"])


def _config_key(run: Run, columns: list[str]) -> str:
    return json.dumps([run.value(c) for c in columns], default=str)


def _test_against(runs: list[Run], baselines: list[Run]) -> dict[str, float]:
    """Raw McNemar p-value of each run against the baseline run with its seed (else the first)."""
    p = {}
    for r in runs:
        partner = next((b for b in baselines if b.config["seed"] == r.config["seed"]), baselines[0] if baselines else None)
        if partner is None or r.on_test or r.name in {b.name for b in baselines} or partner.files != r.files:
            continue
        p[r.name] = mcnemar_exact(partner.correct, r.correct)
    return p


@dataclass
class Table:
    """One test set's comparison."""

    caption: str
    runs: list[Run]
    frame: pd.DataFrame  # one row per run, raw values
    shown: pd.DataFrame  # formatted
    summary: pd.DataFrame | None  # pooled seeds, formatted; None when no configuration has several seeds
    pooled: pd.DataFrame  # one row per configuration, numbers only (mean, std, seeds, the seed-paired difference)


def build_table(runs: list[Run], wanted_baseline: str | None) -> Table:
    """The comparison of runs scored on one test set."""
    columns = varying_columns(runs)
    runs = sorted(runs, key=lambda r: (_config_key(r, columns), r.config["seed"]))
    baselines = choose_baseline(runs, wanted_baseline)
    raw = _test_against(runs, baselines)
    adjusted = dict(zip(raw, false_discovery_control(list(raw.values()), method="bh"))) if raw else {}
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({
            "run": r.name, **{c: r.value(c) for c in columns}, "seed": r.config["seed"],
            "checkpoint_on_test": r.on_test, "baseline": r.name in {b.name for b in baselines},
            "trainable_params": m["trainable_params"], "train_seconds": m["total_train_seconds"],
            "accuracy": m["accuracy"], "ci95_low": m["accuracy_ci95"][0], "ci95_high": m["accuracy_ci95"][1],
            "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"],
            "p_mcnemar": raw.get(r.name, math.nan), "p_adjusted": adjusted.get(r.name, math.nan),
            "tta": m.get("tta", {}).get("mode", "none"), "tta_accuracy": m.get("tta", {}).get("accuracy", math.nan),
        })
    frame = pd.DataFrame(rows)
    shown = frame[columns + ["seed"]].copy()
    shown["trainable params"] = frame["trainable_params"].map("{:,}".format)
    shown["train time (s)"] = frame["train_seconds"].round(0).astype(int)
    shown["test accuracy [95% CI]"] = [f"{a:.4f} [{lo:.4f}, {hi:.4f}]{ON_TEST_MARK if t else ''}" for a, lo, hi, t in
                                       zip(frame["accuracy"], frame["ci95_low"], frame["ci95_high"],
                                           frame["checkpoint_on_test"])]
    shown["balanced accuracy"] = frame["balanced_accuracy"].map("{:.4f}".format)
    shown["macro-F1"] = frame["macro_f1"].map("{:.4f}".format)
    shown["p McNemar"] = [_p_text(p, b, t) for p, b, t in zip(frame["p_mcnemar"], frame["baseline"],
                                                               frame["checkpoint_on_test"])]
    shown["p adjusted"] = [_p_text(p, b, t) for p, b, t in zip(frame["p_adjusted"], frame["baseline"],
                                                                frame["checkpoint_on_test"])]
    shown["accuracy with TTA"] = [f"{a:.4f} ({mode})" if mode != "none" else "-"
                                  for a, mode in zip(frame["tta_accuracy"], frame["tta"])]
    config_columns = [c for c in columns if c != "run"]
    grouped = frame.groupby(config_columns, sort=False, dropna=False)
    pooled = grouped.size().rename("seeds").reset_index()
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "train_seconds"):
        stats = grouped[metric].agg(["mean", "std"]).reset_index(drop=True)
        pooled[f"{metric}_mean"], pooled[f"{metric}_std"] = stats["mean"].to_numpy(), stats["std"].to_numpy()
    differences = [seed_paired_difference(group, baselines) for _, group in grouped]
    tested = [k for k, d in enumerate(differences) if not math.isnan(d["p"])]
    adjusted = dict(zip(tested, false_discovery_control([differences[k]["p"] for k in tested], method="bh"))) \
        if tested else {}
    for key in ("mean", "low", "high", "seeds", "p"):
        pooled[f"delta_vs_baseline_{key}"] = [d[key] for d in differences]
    pooled["delta_vs_baseline_p_adjusted"] = [adjusted.get(k, math.nan) for k in range(len(differences))]
    pooled["cost_baseline_epochs"] = pooled["train_seconds_mean"] / baseline_epoch_seconds(baselines)
    summary = None
    if frame.duplicated(config_columns).any():  # the table people read: only where seeds were pooled
        summary = pooled[config_columns + ["seeds"]].copy()
        for metric, label in (("accuracy", "test accuracy"), ("balanced_accuracy", "balanced accuracy"),
                              ("macro_f1", "macro-F1")):
            summary[label] = [f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"
                              for mean, std in zip(pooled[f"{metric}_mean"], pooled[f"{metric}_std"])]
        summary["train time (s)"] = pooled["train_seconds_mean"].round(0).astype(int).to_numpy()
        summary["cost in baseline epochs"] = pooled["cost_baseline_epochs"].map(
            lambda c: "-" if math.isnan(c) else f"{c:.1f}").to_numpy()
        summary["Δ accuracy vs baseline, seed-paired [95% CI]"] = [d["text"] for d in differences]
        summary["p seeds (paired t, BH)"] = [f"{differences[k]['p']:.3g} ({adjusted[k]:.3g})" if k in adjusted
                                             else differences[k]["note"] for k in range(len(differences))]
    return Table(_caption(runs, baselines), runs, frame, shown, summary, pooled)


def baseline_epoch_seconds(baselines: list[Run]) -> float:
    """The baseline's mean training seconds per epoch (its runs' times over the epochs in their histories):
    the unit of the cost column, so costs measured on one machine on one day compare; NaN without one."""
    rates = [b.metrics["total_train_seconds"] / b.epochs_trained for b in baselines if b.epochs_trained]
    return float(np.mean(rates)) if rates else math.nan


def seed_paired_difference(group: pd.DataFrame, baselines: list[Run]) -> dict:
    """A configuration's accuracy minus the baseline's, paired by seed: the mean difference (`mean`) over
    `seeds` pairs, with scipy's t interval (`low`, `high`) and paired t-test `p` from two seeds on; `text`
    says it in words, `note` why a number is missing."""
    from scipy import stats

    numbers = {"mean": math.nan, "low": math.nan, "high": math.nan, "seeds": 0, "p": math.nan}
    base = {b.config["seed"]: b.metrics["accuracy"] for b in baselines}
    if group["baseline"].any():
        return {**numbers, "text": "baseline", "note": "baseline"}
    pairs = [(a, base[s]) for a, s, on_test in zip(group["accuracy"], group["seed"], group["checkpoint_on_test"])
             if s in base and not on_test]
    if not pairs:
        return {**numbers, "text": "-", "note": "no baseline run with its seeds"}
    d = np.array([a - b for a, b in pairs])
    numbers.update(mean=float(d.mean()), seeds=len(d))
    if len(d) == 1:
        return {**numbers, "text": f"{d[0]:+.4f} (1 seed: no seed variance)", "note": "1 seed: no seed variance"}
    if d.std(ddof=1) > 0:
        test = stats.ttest_1samp(d, 0.0)
        interval = test.confidence_interval(0.95)
        numbers.update(low=float(interval.low), high=float(interval.high), p=float(test.pvalue))
    else:  # every seed the same difference
        numbers.update(low=float(d.mean()), high=float(d.mean()), p=0.0 if d.mean() else 1.0)
    return {**numbers, "text": f"{d.mean():+.4f} [{numbers['low']:+.4f}, {numbers['high']:+.4f}] ({len(d)} seeds)",
            "note": ""}


def cross_data_view(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """All compared runs x every data set they were scored on (None when no run was evaluated elsewhere):
    one row per configuration (runs differing in their seed only), named by the headline options that
    differ among the runs (the full configurations are in the tables above)."""
    if not any(r.evaluations for r in runs):
        return None
    varying = varying_columns(runs)
    columns = [c for c in CROSS_DATA_LABEL if c in varying]
    shown, heat, _ = cross_data_frames([
        (_config_key(r, varying), " ".join([str(r.value("model"))] + [p for c in columns if (p := _label_part(r, c))]),
         r.metrics,
         r.evaluations) for r in sorted(runs, key=lambda r: (_config_key(r, varying), r.config["seed"]))])
    return shown, heat


def _label_part(run: Run, column: str) -> str:
    """One option in a cross-data row label ('' where it does not apply); paths by their last part."""
    value = run.value(column)
    if value in ("-", None):
        return ""
    if column in ("data", "also_train", "teacher", "weights") and value not in ("synthetic", "imagenet", "none", "ms1m"):
        value = ",".join(Path(part.rsplit(":", 1)[0] if column == "also_train" else part).name
                         for part in str(value).split(","))
    return f"{column}={value}"


def _p_text(p: float, is_baseline: bool, on_test: bool) -> str:
    if is_baseline:
        return "baseline"
    if on_test:
        return f"excluded {ON_TEST_MARK}"
    return "-" if math.isnan(p) else f"{p:.3g}"


def _caption(runs: list[Run], baselines: list[Run]) -> str:
    first = runs[0]
    source = first.config.get("data") or "embedded synthetic faces"
    majority = first.metrics.get("majority_baseline_accuracy")
    if baselines:
        base = (f"{baselines[0].config['model']} ({', '.join(b.name for b in baselines)})")
    else:
        base = "none (no baseline run on this test set: no tests)"
    twins = first.data.get("duplicates", {}).get("test_images_with_a_twin_in_train")
    twins_text = "" if twins is None else (f" {twins} of its images have a pixel-identical twin in train (each run's "
                                           "metrics.json also scores the test set without them: without_train_twins).")
    return (f"Test set: {Path(str(source)).name} ({first.data.get('layout', '?')}), {first.metrics['test_images']} "
            f"images, classes {', '.join(first.data['classes'])} (test fingerprint {first.data['test_sha256']}); "
            f"majority-class accuracy {majority:.4f}.{twins_text} Baseline: {base}.")


def _plot(table: Table, out: Path, suffix: str) -> None:
    import matplotlib.pyplot as plt

    from .plots import draw_confusion

    runs, frame = table.runs, table.frame
    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    k = len(runs[0].confusion)
    size = 2.5 + 0.5 * k
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax, r in zip(axes.flat, runs):
        draw_confusion(ax, r.confusion.to_numpy(), r.confusion.columns, normalise=True,
                       title=f"{r.config['model']} {r.value('image_size')}px s{r.config['seed']}\n"
                             f"acc {r.metrics['accuracy']:.3f}")
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(out / f"confusion_matrices{suffix}.png", fig, dpi=100)
    plt.close(fig)

    labels = [f"{r.config['model']}\n{r.value('image_size')}px s{r.config['seed']}" for r in runs]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(frame)), 4))
    err = np.vstack([frame["accuracy"] - frame["ci95_low"], frame["ci95_high"] - frame["accuracy"]])
    colours = ["tab:gray" if t else "tab:blue" for t in frame["checkpoint_on_test"]]
    ax.bar(range(len(frame)), frame["accuracy"], yerr=err, capsize=4, color=colours, alpha=0.8)
    ax.axhline(runs[0].metrics["majority_baseline_accuracy"], color="gray", linestyle="--", label="majority class")
    ax.set_xticks(range(len(frame)), labels, fontsize=8)
    ax.set_ylabel("test accuracy (95% Wilson CI)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    first = runs[0]
    ax.set_title(f"test set: {Path(str(first.config.get('data') or 'synthetic faces')).name} "
                 f"({first.metrics['test_images']} images)", fontsize=9)
    fig.tight_layout()
    save_figure(out / f"accuracy{suffix}.png", fig, dpi=110)
    plt.close(fig)


@dataclass
class Comparison:
    """What `compare` wrote and what it left out."""

    markdown: str
    folder: Path
    incomplete: list[Path]
    stale: list[Path]
    unreadable: list[tuple[Path, str]]  # complete run folders whose records could not be read, and why
    previous: Path | None  # where an earlier comparison in the same folder was moved


def compare(run_dirs: list[Path], out: Path, baseline: str | None = None, where: list[str] = ()) -> Comparison:
    """Write comparison.{md,csv,tex}, summary.csv and figures for the selected complete runs to `out`."""
    complete, incomplete = find_run_dirs(run_dirs)
    incomplete = [folder.path for folder in incomplete]
    runs, stale, unreadable = _read_runs(complete)
    selected = parse_where(list(where))
    runs = [r for r in runs if _matches(r, selected)]
    if not runs:
        raise UserError("no complete run folders to compare" + (f" ({len(incomplete)} incomplete)" if incomplete else "")
                        + (f" ({len(stale)} stale, written in another results format)" if stale else "")
                        + (f" ({len(unreadable)} unreadable)" if unreadable else "")
                        + (" match --where" if selected else ""))
    if baseline is not None and not any(baseline in (r.name, r.config["model"]) for r in runs):
        raise UserError(f"--baseline {baseline}: no compared run has that run id or model")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.test_set, []).append(r)
    tables = [build_table(group, baseline) for group in sorted(groups.values(), key=lambda g: (-len(g), g[0].name))]

    parts, latex, frames = [], [], []
    if len(tables) > 1:
        parts.append(f"{len(tables)} test sets among these runs: one table each (runs are compared only on the "
                     "same test images).")
    for number, table in enumerate(tables, start=1):
        heading = f"Table {number}. {table.caption}"
        parts += [heading, table.shown.to_markdown(index=False)]
        latex.append(table.shown.to_latex(index=False, escape=True, caption=heading))
        if table.summary is not None:
            parts += ["Runs that differ only in their seed, pooled (mean ± std):", table.summary.to_markdown(index=False)]
            latex.append(table.summary.to_latex(index=False, escape=True))
        frames.append(table.frame.assign(table=number))
    cross = cross_data_view(runs)
    if cross is not None:
        parts += ["Across data sets (each run's own test set first, then each `fer-bench evaluate` of it; mean ± std "
                  "over seeds, or accuracy [95 % CI] for one seed; 'missing': not scored on it):",
                  cross[0].to_markdown(index=False)]
    parts.append((ON_TEST_NOTE if any(r.on_test for r in runs) else "") + LEGEND)
    markdown = "\n\n".join(parts)

    work = make_work_dir(out.parent, f".{out.name}-")
    try:
        write_csv(work / "comparison.csv", pd.concat(frames, ignore_index=True), index=False)
        write_csv(work / "summary.csv", pd.concat([t.pooled.assign(table=n) for n, t in enumerate(tables, start=1)],
                                                  ignore_index=True), index=False)
        (work / "comparison.md").write_text(markdown + "\n")
        (work / "comparison.tex").write_text("\n".join(latex))
        for number, table in enumerate(tables, start=1):
            suffix = "" if len(tables) == 1 else f"-{number}"
            _plot(table, work, suffix)
        if cross is not None:
            write_csv(work / "cross_data.csv", cross[0], index=False)
            plot_heat_map(cross[1], work / "cross_data.png", "accuracy across data sets")
        previous = _keep_previous(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Comparison(markdown, out, incomplete, stale, unreadable, previous)


def _keep_previous(out: Path) -> Path | None:
    """Move an earlier comparison in `out` aside (named by its time), so a new one never silently replaces it."""
    if not out.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((out / "comparison.md").stat().st_mtime
                                                          if (out / "comparison.md").exists() else out.stat().st_mtime))
    kept = out.with_name(f"{out.name}.{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = out.with_name(f"{out.name}.{stamp}-{n}")
    out.rename(kept)
    return kept

"""compare's statistics on run folders written directly (no training): per-checkpoint McNemar with its
Benjamini-Hochberg adjustment, and the seed-paired difference against the baseline with its t interval
and paired t-test, checked against values computed by hand."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fer_bench.reporting.compare import compare
from fer_bench.run_folder import RESULTS_FORMAT

N = 100  # test images


def _write_run(root: Path, model: str, seed: int, correct: np.ndarray, seconds: float = 1.0, epochs: int = 10) -> None:
    run = root / f"{model}-s{seed}"
    run.mkdir(parents=True)
    config = {"model": model, "seed": seed, "recipe": "seed", "image_size": 48, "val_split": "train",
              "results_format": RESULTS_FORMAT, "classes": "happy,sad"}
    accuracy = float(correct.mean())
    metrics = {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.05, accuracy + 0.05], "balanced_accuracy": accuracy,
               "macro_f1": accuracy, "trainable_params": 10, "total_train_seconds": seconds, "test_images": N,
               "majority_baseline_accuracy": 0.5}
    data = {"test_sha256": "same", "classes": ["happy", "sad"], "layout": "train+test"}
    truth = np.arange(N) % 2
    predictions = pd.DataFrame({"file": [f"f{i}.png" for i in range(N)], "true": truth,
                                "predicted": np.where(correct, truth, 1 - truth)})
    for name, content in (("config.json", config), ("metrics.json", metrics), ("data.json", data),
                          ("environment.json", {}), ("complete.json", {})):
        (run / name).write_text(json.dumps(content))
    predictions.to_csv(run / "predictions.csv", index=False)
    pd.DataFrame({"epoch": range(1, epochs + 1)}).to_csv(run / "history.csv", index=False)
    pd.DataFrame([[1, 0], [0, 1]], index=["happy", "sad"], columns=["happy", "sad"]).to_csv(run / "confusion_matrix.csv")


def _correct(n_right: int, offset: int = 0) -> np.ndarray:
    right = np.zeros(N, bool)
    right[(np.arange(n_right) + offset) % N] = True
    return right


def test_seed_paired_difference_and_mcnemar_match_hand_computation(tmp_path):
    runs = tmp_path / "runs"
    base = {1: _correct(70), 2: _correct(74)}
    other = {1: _correct(78), 2: _correct(80)}  # +0.08 and +0.06 over the baseline's seeds
    for seed in (1, 2):  # the baseline: 10 epochs in 10 s and in 30 s, so 2 s an epoch
        _write_run(runs, "scratch", seed, base[seed], seconds=(10.0, 30.0)[seed - 1], epochs=10)
        _write_run(runs, "vggnet", seed, other[seed], seconds=(52.0, 70.0)[seed - 1], epochs=12)
    _write_run(runs, "minixception", 1, _correct(72))  # one seed only
    result = compare([runs], tmp_path / "out")
    table = pd.read_csv(result.folder / "comparison.csv")
    # McNemar on one checkpoint pair: discordant b (baseline right only) and c (model right only)
    b = int(np.sum(base[1] & ~other[1]))
    c = int(np.sum(~base[1] & other[1]))
    expected = stats.binomtest(min(b, c), b + c, 0.5).pvalue
    vgg1 = table[(table["model"] == "vggnet") & (table["seed"] == 1)]
    assert vgg1["p_mcnemar"].iloc[0] == pytest.approx(expected)
    raw = table["p_mcnemar"].dropna().to_numpy()
    assert np.allclose(np.sort(table["p_adjusted"].dropna()), np.sort(stats.false_discovery_control(raw, method="bh")))

    summary = pd.read_csv(result.folder / "summary.csv").set_index("model")  # numbers, one column each
    d = np.array([0.08, 0.06])
    half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
    vgg = summary.loc["vggnet"]
    assert vgg["delta_vs_baseline_mean"] == pytest.approx(d.mean()) and vgg["delta_vs_baseline_seeds"] == 2
    assert (vgg["delta_vs_baseline_low"], vgg["delta_vs_baseline_high"]) == pytest.approx((d.mean() - half,
                                                                                            d.mean() + half))
    p = stats.ttest_1samp(d, 0.0).pvalue
    assert vgg["delta_vs_baseline_p"] == pytest.approx(p) and vgg["delta_vs_baseline_p_adjusted"] == pytest.approx(p)
    baseline_epoch = 2.0
    assert vgg["cost_baseline_epochs"] == pytest.approx(61.0 / baseline_epoch)  # its mean time in the baseline's epochs
    assert vgg["accuracy_mean"] == pytest.approx(0.79) and vgg["accuracy_std"] == pytest.approx(np.std([.78, .8], ddof=1))
    assert np.isnan(summary.loc["scratch", "delta_vs_baseline_p"])  # the baseline
    one_seed = summary.loc["minixception"]
    assert one_seed["seeds"] == 1 and np.isnan(one_seed["accuracy_std"]) and np.isnan(one_seed["delta_vs_baseline_p"])
    markdown = (result.folder / "comparison.md").read_text()  # and the words people read
    assert f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] (2 seeds)" in markdown
    assert f"{p:.3g} ({p:.3g})" in markdown and "1 seed: no seed variance" in markdown
    assert re.search(r"\|\s*30\.5\s*\|", markdown)  # vggnet's cost column

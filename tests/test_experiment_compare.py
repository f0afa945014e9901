"""Experiment grids run end to end and resume; compare writes tables, figures and McNemar p-values."""


import numpy as np
import pandas as pd
import pytest

from fer_bench import training
from fer_bench.reporting.compare import mcnemar_exact

GRID = """
description = "tiny test grid"

[defaults]
classes = "happy,sad"
image_size = 32
epochs = 2
weights = "none"

[grid]
model = ["scratch", "vgg16"]
seed = [1, 2]
"""


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    """Run the tiny grid once through the CLI; returns (experiment file, results folder, stdout)."""
    import sys

    from fer_bench.cli import main

    root = tmp_path_factory.mktemp("grid")
    toml = root / "tiny.toml"
    toml.write_text(GRID)
    results = root / "results"
    argv = sys.argv
    sys.argv = ["fer-bench", "experiment", str(toml), "--output", str(results)]
    try:
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code in (0, None)
    finally:
        sys.argv = argv
    return toml, results


def test_grid_runs_all_and_writes_comparison(finished_grid):
    _, results = finished_grid
    runs = sorted(p.name for p in results.iterdir() if p.name != "comparisons")
    assert len(runs) == 4 and all((results / r / "complete.json").exists() for r in runs)
    out = results / "comparisons" / "tiny"
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "summary.csv", "confusion_matrices.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(table["model"]) == ["scratch", "scratch", "vgg16", "vgg16"]
    assert table.loc[table["model"] == "scratch", "p_mcnemar_vs_scratch"].isna().all()
    p = table.loc[table["model"] == "vgg16", "p_mcnemar_vs_scratch"]
    assert ((p > 0) & (p <= 1)).all()
    assert (table["ci95_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci95_high"]).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["seeds"].tolist() == [2, 2]
    assert "±" in (out / "comparison.md").read_text()
    assert "\\begin{tabular}" in (out / "comparison.tex").read_text()


def test_rerun_skips_finished_runs(finished_grid, cli, monkeypatch):
    toml, results = finished_grid
    monkeypatch.setattr(training, "fit_stage", lambda *a, **k: pytest.fail("trained a finished run"))
    code, out, _ = cli("experiment", toml, "--output", results)
    assert code == 0 and out.count("complete, skipped") == 4
    code, out, _ = cli("experiment", toml, "--output", results, "--dry-run")
    assert code == 0 and out.count("complete ") == 4


def test_compare_lists_incomplete_runs_as_skipped(finished_grid, cli, tmp_path):
    _, results = finished_grid
    half = results / "scratch-happy-sad-32px-s9-deadbeef"
    half.mkdir()
    (half / "config.json").write_text("{}")
    code, out, _ = cli("compare", results, "--out", tmp_path / "cmp")
    assert code == 0 and f"skipped (incomplete): {half}" in out
    assert (tmp_path / "cmp" / "comparison.csv").exists()


def test_compare_refuses_different_test_sets(finished_grid, cli, tmp_path):
    _, results = finished_grid
    from fer_bench.run import RunConfig, execute

    other = execute(RunConfig(classes="happy,sad,surprise", image_size=32, epochs=1), output=tmp_path)
    one = next(p for p in results.iterdir() if p.name.startswith("scratch"))
    code, _, err = cli("compare", one, other, "--out", tmp_path / "cmp")
    assert code == 2 and "different test sets" in err


def test_mcnemar_exact_matches_hand_computed_value():
    # 1 image only the baseline got right, 9 only the model got right, 5 both, 3 neither:
    # exact two-sided p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024
    baseline = np.array([1] + [0] * 9 + [1] * 5 + [0] * 3, dtype=bool)
    model = np.array([0] + [1] * 9 + [1] * 5 + [0] * 3, dtype=bool)
    assert mcnemar_exact(baseline, model) == pytest.approx(22 / 1024)
    assert mcnemar_exact(model, baseline) == pytest.approx(22 / 1024)
    assert mcnemar_exact(baseline, baseline) == 1.0


def test_unknown_experiment_key_is_a_clear_error(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\nlearning_rat = 0.1\n[grid]\nseed = [1]\n')
    code, _, err = cli("experiment", bad, "--dry-run")
    assert code == 2 and "unknown run option 'learning_rat'" in err


def test_shipped_experiments_expand(cli, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    from fer_bench.experiment import find_experiment_file, load_experiment

    original = load_experiment(find_experiment_file("original_attempt"))
    assert [c.model for c in original.configs] == ["scratch", "vgg16", "resnet50", "inceptionv3"]
    assert {(c.image_size, c.epochs, c.optimizer, c.batch_size, c.classes) for c in original.configs} == {
        (244, 10, "sgd", 32, "happy,sad")}
    assert {c.classes for c in load_experiment(find_experiment_file("seven_classes")).configs} == {"all"}
    assert [c.image_size for c in load_experiment(find_experiment_file("input_size")).configs] == [48, 96, 244]

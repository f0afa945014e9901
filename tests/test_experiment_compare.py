"""Experiment grids run end to end and resume; compare writes tables, figures and McNemar p-values."""


import numpy as np
import pandas as pd
import pytest

from fer_bench.training import harness
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
    sys.argv = ["fer-bench", "experiment", str(toml), "--results", str(results)]
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
    assert table.loc[table["model"] == "scratch", "p_mcnemar"].isna().all()
    assert table.loc[table["model"] == "scratch", "baseline"].all()
    p = table.loc[table["model"] == "vgg16", "p_mcnemar"]
    assert ((p > 0) & (p <= 1)).all()
    adjusted = table.loc[table["model"] == "vgg16", "p_adjusted"]
    assert (adjusted >= p - 1e-12).all() and (adjusted <= 1).all()
    assert (table["ci95_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci95_high"]).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["seeds"].tolist() == [2, 2]
    markdown = (out / "comparison.md").read_text()
    assert "Baseline: scratch (scratch-happy-sad-32px-s1-" in markdown and "200 images" in markdown
    assert "of its images have a pixel-identical twin in train" in markdown  # from data.json's duplicates
    assert not {"devices", "tensorboard", "precision_used", "strict"} & set(table.columns)  # machine/record roles
    assert "weights" in table.columns and set(table.loc[table["model"] == "scratch", "weights"]) == {"-"}
    assert "±" in (out / "comparison.md").read_text()
    assert "\\begin{tabular}" in (out / "comparison.tex").read_text()


def test_rerun_skips_finished_runs(finished_grid, cli, monkeypatch):
    toml, results = finished_grid
    # (the name the harness calls: patching training.fit_stage would leave the harness's own binding alone)
    monkeypatch.setattr(harness, "fit_stage", lambda *a, **k: pytest.fail("trained a finished run"))
    code, out, _ = cli("experiment", toml, "--results", results)
    assert code == 0 and out.count("complete, skipped") == 4
    code, out, _ = cli("experiment", toml, "--results", results, "--dry-run")
    assert code == 0 and out.count("complete ") == 4


def test_compare_lists_incomplete_runs_as_skipped(finished_grid, cli, tmp_path):
    _, results = finished_grid
    half = results / "scratch-happy-sad-32px-s9-deadbeef"
    half.mkdir()
    (half / "config.json").write_text("{}")
    code, out, _ = cli("compare", results, "--out", tmp_path / "cmp")
    assert code == 0 and f"skipped (incomplete): {half}" in out
    assert (tmp_path / "cmp" / "comparison.csv").exists()


def test_runs_on_different_test_sets_get_one_table_each(finished_grid, cli, tmp_path):
    _, results = finished_grid
    from fer_bench.runs.run import RunConfig, execute

    other = execute(RunConfig(classes="happy,sad,surprise", image_size=32, epochs=1), output=tmp_path)
    one = next(p for p in results.iterdir() if p.name.startswith("scratch"))
    code, out, _ = cli("compare", one, other, "--out", tmp_path / "cmp")
    assert code == 0 and "2 test sets among these runs: one table each" in out
    assert "Table 1." in out and "Table 2." in out and "classes happy, sad, surprise" in out
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert sorted(table["table"]) == [1, 2] and table["p_mcnemar"].isna().all()  # nothing to pair across test sets
    assert (tmp_path / "cmp" / "accuracy-1.png").exists() and (tmp_path / "cmp" / "accuracy-2.png").exists()


def test_where_and_baseline_choose_runs_and_the_reference(finished_grid, cli, tmp_path):
    _, results = finished_grid
    code, out, _ = cli("compare", results, "--where", "model=vgg16", "--out", tmp_path / "a")
    table = pd.read_csv(tmp_path / "a" / "comparison.csv")
    assert code == 0 and set(table["model"]) == {"vgg16"} and "Baseline: none" in out
    vgg = sorted(table["run"])[0]
    code, out, _ = cli("compare", results, "--baseline", vgg, "--out", tmp_path / "b")
    table = pd.read_csv(tmp_path / "b" / "comparison.csv")
    assert code == 0 and f"Baseline: vgg16 ({vgg})" in out
    assert table.loc[table["run"] == vgg, "baseline"].item() and table.loc[table["run"] != vgg, "p_mcnemar"].notna().all()
    code, _, err = cli("compare", results, "--where", "colour=blue", "--out", tmp_path / "c")
    assert code == 2 and "no option 'colour'" in err
    code, _, err = cli("compare", results, "--baseline", "scrach", "--out", tmp_path / "d")
    assert code == 2 and "--baseline scrach: no compared run has that run id or model" in err


def test_new_comparison_keeps_the_previous_one(finished_grid, cli, tmp_path):
    _, results = finished_grid
    out = tmp_path / "cmp"
    cli("compare", results, "--where", "model=scratch", "--out", out)
    first = (out / "comparison.md").read_text()
    code, text, _ = cli("compare", results, "--out", out)
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("cmp.")]
    assert code == 0 and f"kept as {kept}" in text and (kept / "comparison.md").read_text() == first
    assert (out / "comparison.md").read_text() != first


WIDTH_GRID = """
[defaults]
model = "vggnet"
image_size = 16
epochs = 1

[grid]
width = [0.25, 0.5]
seed = [1, 2]
"""


@pytest.mark.slow  # trains five runs
def test_runs_differing_in_width_and_seed_pool_by_width_and_a_test_split_run_is_marked(cli, tmp_path):
    toml = tmp_path / "widths.toml"
    toml.write_text(WIDTH_GRID)
    results = tmp_path / "results"
    code, _, err = cli("experiment", toml, "--results", results, "--no-compare")
    assert code == 0, err
    code, _, err = cli("run", "--model", "vggnet", "--image-size", "16", "--epochs", "1", "--width", "0.25",
                       "--seed", "1", "--val-split", "test", "--results", results)
    assert code == 0, err
    code, out, err = cli("compare", results, "--out", tmp_path / "cmp")
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    honest = summary[summary["val_split"] == "train"]
    assert sorted(honest["width"]) == [0.25, 0.5] and honest["seeds"].tolist() == [2, 2]
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert {"width", "val_split"} <= set(table.columns) and "learning_rate" not in table.columns
    marked = table[table["checkpoint_on_test"]]
    assert len(marked) == 1 and marked["p_mcnemar"].isna().all() and not marked["baseline"].any()
    assert "†" in out and "excluded †" in out


def test_stale_runs_are_reported_not_compared(finished_grid, cli, tmp_path):
    import json
    import shutil

    _, results = finished_grid
    old = tmp_path / "old-results"
    shutil.copytree(next(p for p in results.iterdir() if p.name.startswith("vgg16")), old / "vgg16-old")
    shutil.copytree(next(p for p in results.iterdir() if p.name.startswith("scratch")), old / "scratch-now")
    config = json.loads((old / "vgg16-old" / "config.json").read_text())
    (old / "vgg16-old" / "config.json").write_text(json.dumps({**config, "results_format": 1}))
    shutil.copytree(old / "vgg16-old", old / "vgg16-finetune-unrecorded")  # InceptionV3's trained no base layer
    (old / "vgg16-finetune-unrecorded" / "config.json").write_text(json.dumps({**config, "variant": "finetune"}))
    for broken, damage in (("garbage-config", "config.json"), ("bad-metrics", "metrics.json"),
                           ("no-predictions", "predictions.csv")):
        shutil.copytree(old / "scratch-now", old / broken)
        if damage == "predictions.csv":
            (old / broken / damage).unlink()
        else:
            (old / broken / damage).write_text("{not json")
    code, out, _ = cli("compare", old, "--out", tmp_path / "cmp")
    assert code == 0 and "skipped (stale: written in another results format" in out and "vgg16-old" in out
    assert "vgg16-finetune-unrecorded" in out
    for broken in ("garbage-config", "bad-metrics", "no-predictions"):  # skipped with their reason, as stale ones
        assert any(line.startswith("skipped (unreadable") and line.endswith(broken) for line in out.splitlines()), broken
    assert list(pd.read_csv(tmp_path / "cmp" / "comparison.csv")["model"]) == ["scratch"]


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
    from fer_bench.runs.experiment import find_experiment_file, load_experiment

    original = load_experiment(find_experiment_file("original_attempt"))
    assert [c.model for c in original.configs] == ["scratch", "vgg16", "resnet50", "inceptionv3", "mobilenet"]
    assert {(c.image_size, c.epochs, c.optimizer, c.batch_size, c.classes, c.precision) for c in original.configs} == {
        (244, 10, "sgd", 32, "happy,sad", "auto")}
    assert {c.classes for c in load_experiment(find_experiment_file("seven_classes")).configs} == {"all"}
    assert [c.image_size for c in load_experiment(find_experiment_file("input_size")).configs] == [48, 96, 244]
    measured = load_experiment(find_experiment_file("transfer_measured")).configs
    assert len(measured) == 102 and {c.seed for c in measured} == {1, 2, 3} and {c.classes for c in measured} == {
        "happy,sad", "all"}
    assert {(c.variant, c.weights) for c in measured if c.model == "mobilenet"} == {
        ("frozen", None), ("finetune", None), ("full", None), ("full", "none")}
    assert {c.framing for c in measured if c.model == "mobilefacenet"} == {"fer", "arcface"}
    for base in ("mobilefacenet", "mobilenetv2"):
        assert {(c.variant, c.weights) for c in measured if c.model == base} == {
            ("frozen", None), ("finetune", None), ("full", None), ("full", "none")}


def test_a_run_written_before_an_option_existed_shows_no_false_difference(finished_grid, cli, tmp_path):
    """config.json of a run from before `ema` existed lacks the key; it means 'off', like ema = 0."""
    import json
    import shutil

    _, results = finished_grid
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("comparisons"))
    older = next(p for p in copy.iterdir() if p.name.startswith("scratch"))
    config = json.loads((older / "config.json").read_text())
    assert config.pop("ema") == 0.0
    (older / "config.json").write_text(json.dumps(config))
    code, _, err = cli("compare", copy, "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "ema" not in pd.read_csv(tmp_path / "cmp" / "comparison.csv").columns


def test_cross_data_view_pools_seeds_and_shows_unscored_sets_as_missing(finished_grid, cli, tmp_path):
    import shutil

    from conftest import write_faces

    _, results = finished_grid
    results = shutil.copytree(results, tmp_path / "results", ignore=shutil.ignore_patterns("comparisons"))
    other = tmp_path / "other_faces"
    for name in ("happy", "sad"):
        write_faces(other, "test", name, name, 10, seed=7 if name == "happy" else 8)
    runs = sorted(p for p in results.iterdir() if (p / "complete.json").exists())
    for run in runs:
        if not (run.name.startswith("vgg16") and "-s2-" in run.name):  # one vgg16 seed left unscored
            code, _, err = cli("evaluate", run, "--data", other)
            assert code == 0, err
    code, _, err = cli("compare", "--results", results, "--out", tmp_path / "cmp")
    assert code == 0, err
    cross = pd.read_csv(tmp_path / "cmp" / "cross_data.csv").set_index("configuration")
    column = next(c for c in cross.columns if c.startswith("other_faces") and c.endswith(": accuracy"))
    assert cross["seeds"].tolist() == [2, 2]
    scratch = next(i for i in cross.index if i.startswith("scratch"))
    vgg16 = next(i for i in cross.index if i.startswith("vgg16"))
    assert cross.loc[vgg16, column] == "missing"  # one of its two seeds was not scored: never half-pooled
    accuracies = [pd.read_json(r / "evaluations" / next((r / "evaluations").iterdir()).name / "metrics.json",
                               typ="series")["accuracy"] for r in runs if r.name.startswith("scratch")]
    assert cross.loc[scratch, column] == f"{np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f}"
    assert cross.loc[scratch, "own test set: accuracy"].count("±") == 1
    assert (tmp_path / "cmp" / "cross_data.png").stat().st_size > 0
    assert "Across data sets" in (tmp_path / "cmp" / "comparison.md").read_text()

"""`fer-bench ensemble`: the members' calibrated probabilities averaged into a run folder that every
command reading runs accepts; members that do not answer the same question on the same images are refused."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_faces

from fer_bench.reporting.calibration import apply_temperature
from fer_bench.runs.run import RunConfig, execute

ASTRONAUT = Path(__file__).parent / "fixtures" / "astronaut.jpg"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two different happy/sad runs on the same data and validation split (same seed), and one with another seed."""
    out = tmp_path_factory.mktemp("results")
    first = execute(RunConfig(epochs=2, seed=3), output=out)
    second = execute(RunConfig(epochs=3, learning_rate=0.02, seed=3), output=out)
    other_seed = execute(RunConfig(epochs=2, seed=4), output=out)
    return out, first, second, other_seed


def test_members_of_other_seeds_validated_on_the_same_images_make_an_ensemble(cli, results):
    out, first, _, _ = results
    seed_4 = execute(RunConfig(epochs=2, seed=4, val_seed=3), output=out)
    code, stdout, err = cli("ensemble", first.name, seed_4.name, "--results", out)
    assert code == 0, err
    run_dir = out / stdout.split("run folder: ")[1].splitlines()[0].split("/")[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 3 and config["member_seeds"] == [3, 4] and config["val_seed"] is None
    assert run_dir.name.startswith("ensemble-happy-sad-48px-s3-")
    first_metrics, ensemble_metrics = (json.loads((d / "metrics.json").read_text()) for d in (first, run_dir))
    assert ensemble_metrics["validation_images"] == first_metrics["validation_images"]
    assert ensemble_metrics["validation"] == first_metrics["validation"] == (
        "10% stratified of train (seed 3; identical images kept on one side)")
    from fer_bench.run_folder import RunFolder
    from fer_bench.runs.finished import load_recorded_run
    from fer_bench.training.harness import StageData, pixels_of

    (cfg_3, data_3), (cfg_4, data_4) = load_recorded_run(RunFolder(first)), load_recorded_run(RunFolder(seed_4))
    np.testing.assert_array_equal(StageData(cfg_3, data_3, pixels_of(data_3)).x_val,
                                  StageData(cfg_4, data_4, pixels_of(data_4)).x_val)


def test_an_ensemble_goes_stale_when_a_member_is_recalibrated(cli, results):
    out, first, second, _ = results

    def ensemble_folder():
        code, stdout, err = cli("ensemble", first.name, second.name, "--results", out)
        assert code == 0, err
        return stdout.split("run folder: ")[1].splitlines()[0].split("/")[-1]

    before = ensemble_folder()
    calibration = second / "calibration.json"
    recorded = calibration.read_text()
    calibration.write_text(json.dumps({**json.loads(recorded), "temperature": 3.0}))  # as `calibrate` on other data
    try:
        assert ensemble_folder() != before  # the old ensemble averaged other probabilities: not reused
    finally:
        calibration.write_text(recorded)


def _probabilities(run_dir, classes=("happy", "sad")):
    table = pd.read_csv(run_dir / "predictions.csv")
    return table[[f"p_{c}" for c in classes]].to_numpy()


def _temperature(run_dir):
    return json.loads((run_dir / "calibration.json").read_text())["temperature"]


def test_ensemble_averages_calibrated_probabilities_into_a_complete_run(cli, results):
    out, first, second, _ = results
    code, stdout, err = cli("ensemble", first.name, str(second), "--results", out)
    assert code == 0, err
    run_dir = out / stdout.split("run folder: ")[1].splitlines()[0].split("/")[-1]
    assert (run_dir / "complete.json").exists() and run_dir.name.startswith("ensemble-happy-sad-48px-s3-")
    # each member calibrated with its own temperature, then averaged (not the raw probabilities averaged)
    temperatures = [_temperature(first), _temperature(second)]
    assert all(abs(t - 1) > 0.05 for t in temperatures)
    expected = np.mean([apply_temperature(_probabilities(d), t) for d, t in zip((first, second), temperatures)], axis=0)
    np.testing.assert_allclose(_probabilities(run_dir), expected, atol=1e-4)
    raw_mean = np.mean([_probabilities(first), _probabilities(second)], axis=0)
    assert np.abs(raw_mean - expected).max() > 1e-3  # the check above can tell the two apart
    # the saved model (safe mode) gives the same answers, and the ensemble has its own temperature
    from fer_bench.data.batches import predict
    from fer_bench.models.saved import load_saved_model
    from fer_bench.run_folder import RunFolder
    from fer_bench.runs.finished import load_recorded_run

    test = load_recorded_run(RunFolder(run_dir))[1].test
    saved = predict(load_saved_model(run_dir / "best.keras"), test.images[..., None])
    np.testing.assert_allclose(saved, _probabilities(run_dir), atol=1e-4)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    members = [json.loads((d / "metrics.json").read_text()) for d in (first, second)]
    assert metrics["total_train_seconds"] == pytest.approx(sum(m["total_train_seconds"] for m in members))
    assert [m["run"] for m in metrics["members"]] == sorted([first.name, second.name])
    assert metrics["calibration"]["fitted_on"].startswith("validation split")
    assert metrics["validation_images"] == members[0]["validation_images"]
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "reliability.png", "data.json"):
        assert (run_dir / name).exists(), name
    # the same command finds the finished folder; no work folder is left behind
    code, again, _ = cli("ensemble", second.name, first.name, "--results", out)
    assert code == 0 and run_dir.name in again
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_commands_take_an_ensemble_like_any_run(cli, results):
    out, first, second, _ = results
    code, stdout, _ = cli("ensemble", first.name, second.name, "--results", out)
    run_dir = out / stdout.split("run folder: ")[1].splitlines()[0].split("/")[-1]
    code, stdout, err = cli("compare", "--results", out, "--out", out.parent / "cmp")
    assert code == 0, err
    table = (out.parent / "cmp" / "comparison.md").read_text()
    ensemble_row = next(line for line in table.splitlines() if line.startswith("| ensemble"))
    assert first.name in ensemble_row and second.name in ensemble_row
    assert "devices" not in table.splitlines()[2]  # no column for options only single runs have, all equal there
    code, stdout, err = cli("evaluate", run_dir, "--tta", "flip")
    assert code == 0 and "TTA flip): accuracy" in stdout, err
    code, stdout, err = cli("predict", ASTRONAUT, "--run", run_dir.name, "--results", out, "--json")
    assert code == 0, err
    answer = json.loads(stdout)[0]
    assert answer["model"] == run_dir.name and abs(sum(answer["probabilities"].values()) - 1) < 1e-4


def test_members_must_answer_the_same_question_on_the_same_images(cli, results, tmp_path):
    out, first, second, other_seed = results
    code, _, err = cli("ensemble", first.name, "--results", out)
    assert code == 2 and "at least two different runs" in err
    code, _, err = cli("ensemble", first.name, first.name, "--results", out)
    assert code == 2 and "at least two different runs" in err
    code, _, err = cli("ensemble", first.name, other_seed.name, "--results", out)
    assert code == 2 and "validated on different images (validation seed 4 vs 3)" in err and "Traceback" not in err
    seven = execute(RunConfig(epochs=1, seed=3, classes="happy,sad,neutral"), output=out)
    code, _, err = cli("ensemble", first.name, seven.name, "--results", out)
    assert code == 2 and "must answer the same question" in err
    data = tmp_path / "faces"
    for k, name in enumerate(("happy", "sad")):
        write_faces(data, "train", name, name, 30, seed=k)
        write_faces(data, "test", name, name, 8, seed=10 + k)
    elsewhere = execute(RunConfig(epochs=1, seed=3, data=str(data)), output=out)
    code, _, err = cli("ensemble", first.name, elsewhere.name, "--results", out)
    assert code == 2 and "different images" in err
    code, _, err = cli("ensemble", first.name, "no-such-run", "--results", out)
    assert code == 2 and "no-such-run" in err
    assert not list(out.glob("ensemble-*")) or all((d / "complete.json").exists() for d in out.glob("ensemble-*"))


def test_val_seed_only_applies_to_a_split_carved_from_train(cli, tmp_path):
    code, _, err = cli("run", "--epochs", "1", "--val-split", "test", "--val-seed", "3", "--results", tmp_path)
    assert code == 2 and "--val-seed applies to a validation split carved from train" in err
    assert not list(tmp_path.iterdir())

"""`fer-bench tune`: every trial is a run scored on validation, the study continues where it stopped
(a trial cut off by a kill is tried again), a pruned run stays resumable, the best options come out
as an experiment file that reproduces the best trial's run."""

import json

import pandas as pd
import pytest

from fer_bench.run_folder import RunFolder
from fer_bench.runs.run import RunConfig, execute

SPACE = """description = "learning rate and momentum of the seed CNN"
[defaults]
epochs = 2
seed = 7
[search]
learning_rate = [0.002, 0.02]
momentum = [0.0, 0.9]
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


def test_trials_are_runs_and_the_best_comes_out_as_an_experiment(cli, space, tmp_path):
    out = tmp_path / "results"
    code, stdout, err = cli("tune", space, "--trials", "3", "--results", out)
    assert code == 0, err
    record = next((out / "tune").glob("space-*/"))
    trials = pd.read_csv(record / "trials.csv")
    assert len(trials) == 3 and (record / "trials.png").exists()
    complete = trials[trials["state"] == "COMPLETE"]
    runs = {row["user_attrs_run"]: row["validation_accuracy"] for _, row in complete.iterrows()}
    for run, value in runs.items():  # the score is the run's own validation accuracy, never a test number
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert value == pytest.approx(metrics["best_val_accuracy"]) and RunFolder(out / run).is_complete()
    best_run = max(runs, key=runs.get)
    assert f"run {best_run}" in stdout
    # the printed experiment file plans exactly the best trial's run, already complete
    from fer_bench.runs.experiment import load_experiment, plan

    (cfg, run_dir, status), = plan(load_experiment(record / "best.toml"), out)
    assert run_dir.name == best_run and status == "complete"
    # the same command with more trials continues the study: one more trial, not four
    code, stdout, err = cli("tune", space, "--trials", "4", "--results", out)
    assert code == 0, err
    assert len(pd.read_csv(record / "trials.csv")) == 4 and "4 trials" in stdout


def test_a_trial_cut_off_by_a_kill_is_tried_again_with_its_options(space, tmp_path):
    import optuna

    from fer_bench.runs.tune import load_space, open_study, suggest, tune

    out = tmp_path / "results"
    loaded = load_space(space)
    study = open_study(loaded, out)
    study.enqueue_trial({"learning_rate": 0.02, "momentum": 0.9})
    suggest(study.ask(), loaded)  # started, never told: what a killed process leaves in the database
    study, _ = tune(loaded, 1, out)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study.trials[1].params == {"learning_rate": 0.02, "momentum": 0.9}


class _PruneAtOnce:
    def report(self, value, step):
        self.reported = (value, step)

    def should_prune(self):
        return True


def test_a_pruned_run_is_never_complete_and_resumes_later(tmp_path):
    import optuna

    from fer_bench.runs.tune import PruneOnValidation

    cfg = RunConfig(epochs=3, seed=7)
    trial = _PruneAtOnce()
    with pytest.raises(optuna.TrialPruned):
        execute(cfg, output=tmp_path, callbacks=(PruneOnValidation(trial),))
    run_dir = next(tmp_path.iterdir())
    assert not RunFolder(run_dir).is_complete() and trial.reported[1] == 0
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == 1  # the epoch that was scored is kept
    execute(cfg, output=tmp_path)
    assert RunFolder(run_dir).is_complete() and len(pd.read_csv(run_dir / "history.csv")) == 3


@pytest.mark.parametrize("text, fragment", [
    (SPACE.replace("seed = 7", "seed = 7\nval_split = \"test\""), "validation only"),
    (SPACE + 'val_split = ["train", "test"]\n', "validation only"),
    (SPACE.replace("seed = 7\n", "") + "seed = [1, 2]\n", "searching 'seed' would validate trials on different"),
    (SPACE + "val_fraction = [0.1, 0.2]\n", "searching 'val_fraction'"),
    (SPACE.replace("momentum = [0.0, 0.9]", "momentun = [0.0, 0.9]"), "did you mean 'momentum'"),
    (SPACE.replace("seed = 7", "seed = 7\nmomentum = 0.9"), "both fixed"),
    (SPACE.replace("momentum = [0.0, 0.9]", "momentum = 0.9"), "list of choices"),
    (SPACE.split("[search]")[0], "names no option"),
])
def test_bad_spaces_are_one_line_errors(cli, tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, _, err = cli("tune", path, "--trials", "2", "--results", tmp_path / "results")
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()

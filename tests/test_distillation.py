"""Distillation (`--teacher RUN --distill WEIGHT`): the student really learns the teacher's
probabilities (a teacher with swapped classes teaches swapped answers), they are computed once and
cached, and teachers that saw the student's validation images or the test split are refused."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fer_bench.runs.run import RunConfig, execute


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A happy/sad teacher (seed 5), the same teacher with its two classes swapped, a seed-4 run."""
    import keras

    from fer_bench.models.saved import load_saved_model

    out = tmp_path_factory.mktemp("results")
    teacher = execute(RunConfig(epochs=4, seed=5), output=out)
    swapped = out / "swapped-teacher"
    shutil.copytree(teacher, swapped)
    model = load_saved_model(teacher / "best.keras")
    flip = keras.layers.Dense(2, use_bias=False, trainable=False, dtype="float32", name="swap_classes")
    wrapped = keras.Sequential([keras.Input(model.inputs[0].shape[1:]), model, flip])
    flip.set_weights([np.array([[0.0, 1.0], [1.0, 0.0]])])
    (swapped / "best.keras").unlink()
    wrapped.save(swapped / "best.keras")
    other_seed = execute(RunConfig(epochs=1, seed=4), output=out)
    return out, teacher, swapped, other_seed


def _accuracy(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["accuracy"]


def test_the_student_learns_the_teachers_probabilities(runs, cli, tmp_path):
    out, teacher, swapped, _ = runs
    assert _accuracy(teacher) > 0.85
    student = execute(RunConfig(epochs=4, seed=5, teacher=str(swapped), distill=1.0), output=out)
    history = pd.read_csv(student / "history.csv")
    last = history.iloc[-1]
    # it learnt the swapped answers (training accuracy is agreement with its targets), not the labels ...
    assert last["accuracy"] > 0.85 and last["val_accuracy"] < 0.15
    # ... while validation kept the plain labels: the checkpoint is the epoch least swapped
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["best_val_accuracy"] >= 0.4
    assert metrics["teacher"]["run"] == "swapped-teacher" and metrics["teacher"]["weight"] == 1.0
    config = json.loads((student / "config.json").read_text())
    assert config["distill"] == 1.0 and config["teacher"].endswith("swapped-teacher")
    from fer_bench.data.dataset import cache_dir

    assert len(list((cache_dir() / "teachers").glob("swapped-teacher-*.npz"))) == 1
    half = execute(RunConfig(epochs=4, seed=5, teacher=str(teacher), distill=0.5), output=out)
    assert _accuracy(half) > 0.85  # a good teacher at half weight keeps the student right
    code, _, err = cli("compare", student, half, teacher, "--out", tmp_path / "cmp")
    assert code == 0, err
    rows = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    header = [c.strip() for c in next(r for r in rows if r.startswith("| model")).split("|")]
    student_row = [c.strip() for c in next(r for r in rows if "swapped-teacher" in r).split("|")]
    assert student_row[header.index("teacher")] == "swapped-teacher"  # by run id, not its folder's path


def test_a_student_counts_its_teacher_by_content_and_goes_stale_when_it_is_recalibrated(runs):
    from fer_bench.runs.run import prepare_run

    out, teacher, _, _ = runs

    def student_id(**teaching):
        return prepare_run(RunConfig(seed=5, **teaching), out).run_id

    taught = student_id(teacher=str(teacher), distill=0.5)
    assert taught == student_id(teacher=teacher.name, distill=0.5)  # by folder or by run id: one run
    assert len({student_id(), taught, student_id(teacher=teacher.name, distill=0.3)}) == 3
    calibration = teacher / "calibration.json"
    recorded = calibration.read_text()
    calibration.write_text(json.dumps({**json.loads(recorded), "temperature": 2.5}))  # as `calibrate` on other data
    try:
        assert student_id(teacher=teacher.name, distill=0.5) != taught  # the old student is not this one
    finally:
        calibration.write_text(recorded)
    assert student_id(teacher=teacher.name, distill=0.5) == taught


def test_teachers_that_saw_other_images_are_refused(cli, runs, tmp_path):
    out, teacher, _, other_seed = runs
    cases = [
        (("--seed", "4", "--teacher", teacher.name, "--distill", "0.5"), "validated on other images (validation seed 5 vs 4)"),
        (("--seed", "5", "--teacher", other_seed.name, "--distill", "0.5"), "validated on other images"),
        (("--seed", "5", "--teacher", teacher.name), "go together"),
        (("--seed", "5", "--teacher", "nope", "--distill", "0.5"), "no such run folder"),
        (("--seed", "5", "--classes", "happy,sad,neutral", "--teacher", teacher.name, "--distill", "0.5"), "knows happy, sad"),
        (("--seed", "5", "--teacher", teacher.name, "--distill", "1.5"), "--distill must be a number in [0, 1]"),
    ]
    before = sorted(p.name for p in out.iterdir())
    for args, fragment in cases:
        code, _, err = cli("run", "--epochs", "1", "--results", out, *args)
        assert code == 2 and fragment in err and "Traceback" not in err, (args, err)
    assert sorted(p.name for p in out.iterdir()) == before  # no folder left behind
    on_test = execute(RunConfig(epochs=1, seed=5, val_split="test"), output=tmp_path)
    code, _, err = cli("run", "--epochs", "1", "--seed", "5", "--val-split", "test", "--results", tmp_path,
                       "--teacher", on_test.name, "--distill", "0.5")
    assert code == 2 and "test split" in err

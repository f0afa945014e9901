"""Training on several sources (each scored on its own held-out part) and FER+'s four target schemes."""

import json

import numpy as np
import pytest

from conftest import write_faces
from fer_bench.config import RunConfig
from fer_bench.errors import UserError
from fer_bench.training.crowd_targets import AcceptableClassesLoss, draw_labels, fit_targets, vote_distribution
from test_layouts import _ferplus, _rafdb

VOTES = np.array([[6, 1, 3], [0, 10, 0], [1, 1, 1]])  # happy, neutral, sad
LABELS = np.array([0, 1, 2])


def test_vote_distributions_drop_single_votes():
    np.testing.assert_allclose(vote_distribution(VOTES, LABELS), [[2 / 3, 0, 1 / 3], [0, 1, 0], [0, 0, 1]], atol=1e-6)


def test_each_scheme_gives_its_targets():
    np.testing.assert_array_equal(fit_targets("labels", None, LABELS, 3), np.eye(3))
    np.testing.assert_allclose(fit_targets("votes", VOTES, LABELS, 3)[0], [2 / 3, 0, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(fit_targets("multilabel", VOTES, LABELS, 3)[0], [0.5, 0, 0.5])  # 1/3 >= 30 %
    with pytest.raises(UserError, match="--targets votes needs a crowd's votes"):
        fit_targets("votes", None, LABELS, 3)


def test_multilabel_loss_is_minus_log_of_the_mass_on_accepted_classes():
    y_true = np.array([[0.5, 0, 0.5]], np.float32)
    y_pred = np.array([[0.2, 0.5, 0.3]], np.float32)
    assert float(AcceptableClassesLoss()(y_true, y_pred)) == pytest.approx(-np.log(0.5), rel=1e-5)


def test_probability_scheme_draws_labels_by_the_distribution():
    import tensorflow as tf

    tf.random.set_seed(0)
    y = tf.constant(np.tile([[0.7, 0.0, 0.3]], (20000, 1)), tf.float32)
    _, drawn = draw_labels(tf.zeros((20000, 1)), y)
    share = drawn.numpy().mean(axis=0)
    assert share[1] == 0 and abs(share[0] - 0.7) < 0.02 and drawn.numpy().sum(axis=1).tolist() == [1] * 20000


@pytest.mark.parametrize("targets", ["votes", "probability", "multilabel"])
def test_a_run_trains_on_ferplus_votes(targets, tmp_path):
    from fer_bench.runs.run import execute

    rows = [(f"fer{i:07d}.png", [0, 8, 0, 2, 0, 0, 0, 0, 0, 0] if i % 2 else [2, 0, 0, 8, 0, 0, 0, 0, 0, 0])
            for i in range(60)]
    root = _ferplus(tmp_path / "ferplus", rows)
    run_dir = execute(RunConfig(data=str(root), classes="happy,sad", targets=targets, epochs=1, image_size=24),
                      output=tmp_path / "results")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["targets"] == targets and (run_dir / "complete.json").exists()


def test_votes_on_data_without_votes_is_one_clear_error(cli, tmp_path):
    code, _, err = cli("run", "--targets", "votes", "--results", tmp_path / "results")
    assert code == 2 and "needs a crowd's votes" in err and "Traceback" not in err
    assert not list((tmp_path / "results").glob("*/config.json"))


def test_several_sources_train_together_and_each_is_scored_on_its_own_part(tmp_path):
    from fer_bench.runs.run import execute, load_run_data

    main = tmp_path / "main"
    for k, name in enumerate(("happy", "sad")):
        write_faces(main, "train", name, name, 30, seed=k)
        write_faces(main, "test", name, name, 10, seed=10 + k)
    raf = _rafdb(tmp_path / "raf", [(f"train_{i:05d}.jpg", 4 if i % 2 else 5) for i in range(1, 41)]
                 + [(f"train_{i:05d}.jpg", 7) for i in range(41, 51)])  # happy, sad and neutral
    cfg = RunConfig(data=str(main), also_train=f"{raf}:2", epochs=2, image_size=24)
    dataset = load_run_data(cfg)
    assert len(dataset.train) == 60 + 32 and len(dataset.test) == 20  # RAF-DB's neutral left out; its dev part held out
    assert sorted(set(dataset.train.weights)) == [1.0, 2.0]
    run_dir = execute(cfg, output=tmp_path / "results")
    data = json.loads((run_dir / "data.json").read_text())
    assert data["also_trained_on"][0]["images"] == 32 and data["also_trained_on"][0]["weight"] == 2.0
    (evaluation,) = (run_dir / "evaluations").iterdir()
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["test_images"] == 8 and "development part" in metrics["layout"]  # 8 happy/sad of its 10
    other = execute(RunConfig(data=str(main), also_train=f"{raf}:1", epochs=2, image_size=24), output=tmp_path / "results")
    assert other.name != run_dir.name  # the weight is part of what the run is
    with pytest.raises(UserError, match="--also-train: data path does not exist"):
        load_run_data(RunConfig(data=str(main), also_train=str(tmp_path / "nope")))

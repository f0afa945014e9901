"""`benchmark --photos`: one fresh `predict` process per detector, timed, and scored per photo where photos
sit in class-named folders."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_bench.benchmarks.photo_speed import score_folder

ASTRONAUT = Path(__file__).parent / "fixtures" / "astronaut.jpg"


def test_each_photo_is_scored_by_its_most_confident_face():
    table = pd.DataFrame({
        "file": ["f/happy/a.jpg", "f/happy/a.jpg", "f/sad/b.jpg", "f/sad/c.jpg", "f/loose.jpg"],
        "x": [1, 5, 1, None, None], "w": [10, 90, 10, None, None], "h": [10, 90, 10, None, None],
        "confidence": [0.9, 0.6, 0.8, None, None],
        "label": ["happy", "sad", "sad", "happy", "sad"], "p_happy": [0.9, 0.1, 0.2, 0.6, 0.3],
        "p_sad": [0.1, 0.9, 0.8, 0.4, 0.7]})
    facts = score_folder(table)
    # a.jpg: the confident small face (happy, right), not the large one; c.jpg: no face, whole photo (wrong)
    assert facts == {"photos": 4, "photos_without_a_face": 2, "labelled": 3, "accuracy": 2 / 3,
                     "balanced_accuracy": 0.75}


def test_photo_benchmark_times_each_detector_and_scores_class_folders(cli, tmp_path):
    folder = tmp_path / "photos"
    for label in ("happy", "sad"):
        (folder / label).mkdir(parents=True)
        shutil.copy(ASTRONAUT, folder / label / "astronaut.jpg")  # the bundled model: happy, 92 %
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "blank.png")  # no face, no label
    code, out, err = cli("benchmark", "--photos", folder, "--detectors", "blazeface,haar", "--out", tmp_path / "p.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["detector"].tolist() == ["blazeface", "haar"] and (table["photos"] == 3).all()
    assert (table["labelled"] == 2).all() and table["accuracy"].iloc[0] == 0.5  # haar: a false face beside hers
    assert table["photos_without_a_face"].iloc[0] == 1 and table["speed_vs_first"].iloc[0] == 1.0
    assert (table["seconds"] > 0).all() and (table["peak_resident_mb"] > 50).all()
    assert (tmp_path / "p.png").stat().st_size > 0 and "blazeface + bundled" in out
    for bad in (["--detectors", "blazeface,dlib"], ["--detectors", ","]):
        code, _, err = cli("benchmark", "--photos", folder, *bad)
        assert code == 2 and err.count("\n") == 1 and "--detectors" in err
    code, _, err = cli("benchmark", "--photos", ASTRONAUT)
    assert code == 2 and "folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("benchmark", "--photos", tmp_path / "empty")
    assert code == 2 and "no photos" in err

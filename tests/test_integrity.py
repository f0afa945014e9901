"""fer2013.csv reading, duplicates across splits, dedupe, export, inspect and class weights."""

import json

import numpy as np
import pytest
from conftest import REAL_DATA, needs_real_data

from fer_bench.data.dataset import read_folder_dataset
from fer_bench.data.fer_csv import read_csv_dataset
from fer_bench.data.integrity import drop_test_duplicates, duplicate_report
from fer_bench.data.synthetic import draw_face
from fer_bench.errors import UserError
from fer_bench.runs.run import RunConfig, execute


def pixels(seed: int, expression: str = "happy") -> str:
    return " ".join(map(str, draw_face(expression, np.random.default_rng(seed)).ravel()))


def write_csv(path, rows, header="emotion,pixels,Usage"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def fer_csv(tmp_path):
    rows = [
        f"3,{pixels(1)},Training",          # line 2: happy
        f"4,{pixels(2, 'sad')},Training",   # line 3: sad
        f"6,{pixels(3, 'neutral')},PublicTest",  # line 4: neutral → validation
        f"0,{pixels(4, 'angry')},PrivateTest",   # line 5: angry → test
        f"3,{pixels(1)},PrivateTest",       # line 6: duplicate of line 2 → test
        "3,1 2 3,Training",                # line 7: wrong pixel count
        f"9,{pixels(5)},Training",          # line 8: unknown emotion id
        f"2,{pixels(6).replace(' 1', ' x', 1)},Training",  # line 9: non-numeric pixel
        f"x,{pixels(7)},Training",          # line 10: non-numeric emotion
    ]
    return write_csv(tmp_path / "fer2013.csv", rows)


def test_csv_labels_and_usages_map_correctly(fer_csv):
    data = read_csv_dataset(fer_csv)
    names = data.class_names
    assert [names[i] for i in data.train.labels] == ["happy", "sad"]
    assert [names[i] for i in data.validation.labels] == ["neutral"]
    assert [names[i] for i in data.test.labels] == ["angry", "happy"]
    assert data.train.files == ["Training_2", "Training_3"]
    np.testing.assert_array_equal(data.train.images[0], draw_face("happy", np.random.default_rng(1)))
    swapped = read_csv_dataset(fer_csv, test_usage="PublicTest")
    assert [names[i] for i in swapped.test.labels] == ["neutral"]


def test_malformed_rows_are_reported_with_line_numbers(fer_csv):
    skipped = read_csv_dataset(fer_csv).skipped
    assert skipped == [
        "row 7: 3 pixels, expected 2304",
        "row 8: unknown emotion id 9 (expected 0-6)",
        "row 9: non-numeric pixel value",
        "row 10: emotion 'x' is not a number",
    ]


def test_malformed_rows_fail_with_strict(cli, fer_csv):
    code, _, err = cli("run", "--data", fer_csv, "--strict")
    assert code == 2 and "4 unreadable images (first: row 7: 3 pixels, expected 2304)" in err


def test_csv_without_usage_holds_out_a_stratified_test_set(tmp_path):
    rows = [f"{3 if i % 2 else 4},{pixels(i, 'happy' if i % 2 else 'sad')}" for i in range(40)]
    data = read_csv_dataset(write_csv(tmp_path / "plain.csv", rows, header="emotion,pixels"))
    assert data.validation is None
    assert len(data.test) == 4 and sorted(np.bincount(data.test.labels)[[3, 5]]) == [2, 2]


def test_not_a_fer_csv(tmp_path):
    with pytest.raises(UserError, match="needs 'emotion' and 'pixels'"):
        read_csv_dataset(write_csv(tmp_path / "other.csv", ["1,2"], header="a,b"))


def test_duplicates_found_within_and_across_splits(fer_csv):
    report = duplicate_report(read_csv_dataset(fer_csv))
    assert report["across"] == {"validation in train": 0, "test in train": 1, "test in validation": 0}
    assert report["label_conflicts"]["test in train"] == 0
    assert report["within"] == {"train": 0, "validation": 0, "test": 0}


def test_dedupe_drops_test_copies_of_train(fer_csv):
    deduped = drop_test_duplicates(read_csv_dataset(fer_csv))
    assert deduped.dropped_duplicates == 1 and deduped.test.files == ["PrivateTest_5"]


def test_inspect_folder_reports_duplicates(cli, small_folder):
    source = next((small_folder / "train" / "happy").iterdir())
    (small_folder / "test" / "happy" / "copy.png").write_bytes(source.read_bytes())
    (small_folder / "train" / "sad" / "bad.jpg").write_bytes(b"junk")
    code, out, _ = cli("data", "inspect", small_folder)
    assert code == 0
    assert "1 test images also appear in train" in out
    assert "unreadable: 1" in out and "train/sad/bad.jpg" in out
    assert "PNG L 48x48: 113" in out


def test_export_csv_to_folders_round_trips(cli, fer_csv, tmp_path):
    code, out, _ = cli("data", "export", fer_csv, tmp_path / "out")
    assert code == 0 and "wrote 5 images" in out
    assert (tmp_path / "out" / "validation" / "neutral" / "PublicTest_4.png").exists()
    back, original = read_folder_dataset(tmp_path / "out"), read_csv_dataset(fer_csv)
    assert back.layout == "train+test+validation"  # the validation split survives the round trip
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(back.splits()[split].images, original.splits()[split].images)


def test_a_lone_validation_folder_is_the_test_set_and_the_layout_says_so(tmp_path):
    from conftest import write_faces

    for split in ("train", "validation"):
        for expression in ("happy", "sad"):
            write_faces(tmp_path / "kaggle", split, expression, expression, 3)
    data = read_folder_dataset(tmp_path / "kaggle")
    assert data.validation is None and len(data.test) == 6
    assert data.layout == "train+validation (validation/ is the test split: there is no test/ folder)"


def test_run_records_dedupe_class_weight_and_given_validation(tmp_path):
    rows = []
    for i in range(60):
        happy = i % 3 != 0  # 2:1 imbalance
        usage = "Training" if i < 40 else ("PublicTest" if i < 52 else "PrivateTest")  # 40 / 12 / 8: sizes tell splits apart
        rows.append(f"{3 if happy else 4},{pixels(i, 'happy' if happy else 'sad')},{usage}")
    rows.append(f"3,{pixels(1, 'happy')},PrivateTest")  # a test copy of training row 1
    csv_path = write_csv(tmp_path / "fer.csv", rows)
    run_dir = execute(RunConfig(data=str(csv_path), epochs=1, dedupe=True, class_weight="balanced"), output=tmp_path / "r")
    data = json.loads((run_dir / "data.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert data["dropped_test_duplicates_of_train"] == 1
    assert data["counts"]["test"] == {"happy": 6, "sad": 2}  # rows 52-59; the copy is gone
    assert config["class_weight"] == "balanced" and config["dedupe"] is True
    assert config["val_split"] == "given"  # PublicTest picks the checkpoint
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation_images"] == 12 and metrics["fit_images"] == 40  # PublicTest, not 10 % of train or test


def test_identical_images_never_straddle_the_validation_split(tmp_path):
    """Train rows with twins (every image twice or three times): every copy lands on one side,
    the split stays stratified, and the run's data.json counts 0 validation twins in the fit set."""
    rows = []
    for i in range(80):
        happy = i % 2 == 0
        rows.append(f"{3 if happy else 4},{pixels(i % 30, 'happy' if happy else 'sad')},Training")  # 50 twins
    rows += [f"4,{pixels(100, 'sad')},PrivateTest", f"3,{pixels(0)},PrivateTest"]  # the second: a twin of train
    data = read_csv_dataset(write_csv(tmp_path / "fer.csv", rows))
    from fer_bench.data.dataset import split_validation
    from fer_bench.data.integrity import carve_validation, image_hashes, twin_counts

    hashes = image_hashes(data.train)
    fit, val = carve_validation(data, 0.25, seed=3)
    assert not {hashes[i] for i in fit} & {hashes[i] for i in val} and len(fit) + len(val) == len(data.train)
    assert 0.15 < len(val) / len(data.train) < 0.35
    plain_fit, plain_val = split_validation(data.train.labels, 0.25, seed=3)  # image by image: twins straddle
    assert twin_counts(data, plain_fit, plain_val)["validation_images_with_a_twin_in_fit"] > 0
    assert twin_counts(data, fit, val) == {"test_images_with_a_twin_in_train": 1,
                                           "validation_images_with_a_twin_in_fit": 0}
    run_dir = execute(RunConfig(data=str(tmp_path / "fer.csv"), epochs=1, val_split="train", val_fraction=0.25),
                      output=tmp_path / "r")
    recorded = json.loads((run_dir / "data.json").read_text())["duplicates"]
    assert recorded == {"test_images_with_a_twin_in_train": 1, "validation_images_with_a_twin_in_fit": 0}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["without_train_twins"]["left_out"] == 1 and metrics["without_train_twins"]["test_images"] == 1


@needs_real_data
def test_fer2013_validation_has_no_twin_in_the_fit_set():
    """FER2013 train holds 1,236 extra copies: split image by image, ~7 % of a 10 % validation split
    has a twin in the fit set; split by content, none."""
    from fer_bench.data.dataset import split_validation
    from fer_bench.data.integrity import carve_validation, twin_counts

    data = read_folder_dataset(REAL_DATA)
    plain = twin_counts(data, *split_validation(data.train.labels, 0.1, seed=42))
    grouped = twin_counts(data, *carve_validation(data, 0.1, seed=42))
    assert 0.04 < plain["validation_images_with_a_twin_in_fit"] / 2871 < 0.10
    assert grouped["validation_images_with_a_twin_in_fit"] == 0

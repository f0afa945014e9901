"""The data layer: layouts, class aliases, conversion to 48x48 gray, cache, selection, splits."""

import numpy as np
import pytest
from conftest import REAL_DATA, needs_real_data, write_faces
from PIL import Image

from fer_bench.data import dataset as ds
from fer_bench.data.classes import parse_classes
from fer_bench.errors import UserError


def test_reads_train_test_layout_all_classes(small_folder):
    data = ds.read_folder_dataset(small_folder)
    assert data.layout == "train+test"
    assert data.class_names == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert data.train.images.shape == (84, 48, 48) and data.train.images.dtype == np.uint8
    assert data.counts()["test"]["sad"] == 4


def test_kaggle_images_validation_layout_aliases_and_any_size_or_mode(tmp_path):
    root = tmp_path / "kaggle"
    write_faces(root / "images", "train", "Happiness", "happy", 3, size=96, mode="RGB", ext="jpg")
    write_faces(root / "images", "train", "SADNESS", "sad", 3, size=30, mode="RGBA")
    write_faces(root / "images", "validation", "happy", "happy", 2)
    write_faces(root / "images", "validation", "Sad", "sad", 2)
    data = ds.read_folder_dataset(root)
    assert data.layout == "images/train+validation (validation/ is the test split: there is no test/ folder)"
    assert data.class_names == ("happy", "sad")
    assert data.train.images.shape == (6, 48, 48)
    assert data.counts()["test"] == {"happy": 2, "sad": 2}


def test_unreadable_files_are_skipped_and_listed(small_folder):
    (small_folder / "train" / "happy" / "broken.jpg").write_bytes(b"not an image")
    (small_folder / "test" / "sad" / "empty.png").write_bytes(b"")
    data = ds.read_folder_dataset(small_folder)
    assert sorted(data.skipped) == ["test/sad/empty.png", "train/happy/broken.jpg"]
    assert data.counts()["train"]["happy"] == 12


def test_second_read_comes_from_cache(small_folder, monkeypatch):
    first = ds.read_folder_dataset(small_folder)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(ds, "decode_files", no_decoding)
    second = ds.read_folder_dataset(small_folder)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert first.fingerprint() == second.fingerprint()


def test_changed_file_list_invalidates_cache(small_folder):
    first = ds.read_folder_dataset(small_folder)
    write_faces(small_folder, "train", "happy", "happy", 1, seed=99)
    second = ds.read_folder_dataset(small_folder)
    assert len(second.train) == len(first.train) + 1


def test_select_classes_keeps_order_and_relabels(small_folder):
    data = ds.select_classes(ds.read_folder_dataset(small_folder), parse_classes("Happiness,sad"))
    assert data.class_names == ("happy", "sad")
    assert sorted(set(data.train.labels)) == [0, 1]
    assert all(f.startswith("train/happy/") for f in np.array(data.train.files)[data.train.labels == 0])


def test_select_unknown_class_and_empty_class_fail(small_folder):
    data = ds.read_folder_dataset(small_folder)
    with pytest.raises(UserError, match="unknown class 'contempt'"):
        ds.select_classes(data, ("happy", "contempt"))
    for f in (small_folder / "test" / "fear").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="'fear' has no images in the test split"):
        ds.select_classes(ds.read_folder_dataset(small_folder), ("happy", "fear"))


def test_validation_split_is_stratified_and_seeded(small_folder):
    labels = ds.read_folder_dataset(small_folder).train.labels
    fit_a, val_a = ds.split_validation(labels, 0.25, seed=1)
    fit_b, val_b = ds.split_validation(labels, 0.25, seed=1)
    assert val_a.tolist() == val_b.tolist()
    assert np.bincount(labels[val_a]).tolist() == [3] * 7
    assert not set(fit_a) & set(val_a) and len(fit_a) + len(val_a) == len(labels)


def test_to_native_converts_colour_and_size():
    image = Image.new("RGB", (100, 60), (255, 0, 0))
    arr = ds.to_native(image)
    assert arr.shape == (48, 48) and arr.dtype == np.uint8 and int(arr[0, 0]) == 76  # ITU-R 601 luma of red


def test_missing_and_layoutless_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ds.find_split_dirs(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="no dataset layout found"):
        ds.find_split_dirs(tmp_path)


@needs_real_data
def test_real_fer2013_folder_counts_and_duplicates():
    from fer_bench.data.integrity import duplicate_report

    data = ds.read_folder_dataset(REAL_DATA)
    assert data.layout == "train+test" and not data.skipped
    assert len(data.train) == 28709 and len(data.test) == 3589
    assert data.counts()["test"]["happy"] == 895 and data.counts()["train"]["disgust"] == 436
    assert 0.05 < duplicate_report(data)["across"]["test in train"] / len(data.test) < 0.10  # "about 8 %"

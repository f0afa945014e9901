"""RAF-DB basic, SFEW 2.0 and FER+ read in their own layouts: labels mapped the way each set numbers
them, development parts carved when the test part is not there, bad label files and images as one
clear line or a counted skip, and the shared copies loaded with the counts their README gives."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REAL_DATA
from fer_bench.data import layouts
from fer_bench.data.sources import open_dataset
from fer_bench.data.synthetic import draw_face
from fer_bench.errors import UserError

SHARED = REAL_DATA.parent


def _face(path: Path, expression: str, seed: int, size=(100, 100), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_face(expression, np.random.default_rng(seed))).resize(size).convert(mode).save(path)


def _rafdb(root: Path, rows: list[tuple[str, int]]) -> Path:
    """RAF-DB basic with `rows` (name, label 1..7) and an aligned image for each."""
    for i, (name, label) in enumerate(rows):
        _face(root / "basic/Image/aligned" / name.replace(".jpg", "_aligned.jpg"), layouts.RAFDB_LABELS[label - 1], i)
    (root / "basic/EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "basic" / layouts.RAFDB_LIST).write_text("".join(f"{n} {label}\n" for n, label in rows))
    return root


def test_rafdb_labels_are_one_based_in_the_authors_order(tmp_path):
    rows = [(f"train_{i:05d}.jpg", 1 + i % 7) for i in range(1, 36)] + [(f"test_{i:04d}.jpg", 4) for i in range(1, 4)]
    data = open_dataset(_rafdb(tmp_path / "raf", rows))
    assert "RAF-DB basic" in data.layout and len(data.test) == 3 and len(data.train) == 35
    by_file = dict(zip(data.train.files, data.train.labels))
    # label 1 is surprise, 4 happiness, 7 neutral (RAF-DB's order, not FER2013's)
    assert data.class_names[by_file["Image/aligned/train_00007_aligned.jpg"]] == "surprise"  # 1 + 7 % 7 = 1
    assert data.class_names[by_file["Image/aligned/train_00003_aligned.jpg"]] == "happy"
    assert data.class_names[by_file["Image/aligned/train_00006_aligned.jpg"]] == "neutral"
    assert set(data.class_names[label] for label in data.test.labels) == {"happy"}


def test_without_a_test_part_a_seeded_development_part_is_the_test_split(tmp_path):
    rows = [(f"train_{i:05d}.jpg", 1 + i % 7) for i in range(1, 71)]
    root = _rafdb(tmp_path / "raf", rows)
    first, again = open_dataset(root), open_dataset(root, "PrivateTest")
    assert len(first.test) == 14 and len(first.train) == 56 and "development part" in first.layout
    assert first.test.files == again.test.files  # the same development part every time
    assert not set(first.test.files) & set(first.train.files)
    assert sorted(np.bincount(first.test.labels)) == [2] * 7  # stratified


@pytest.mark.parametrize("line, message", [
    ("train_00001.jpg", "expected 'train_00001.jpg 5'"),
    ("train_00001.jpg happy", "expected 'train_00001.jpg 5'"),
    ("train_00001.jpg 8", "label 8 is not one of RAF-DB's 1..7"),
    ("train_00001.jpg 0", "label 0 is not one of RAF-DB's 1..7"),
])
def test_bad_rafdb_label_lines_are_one_clear_error(tmp_path, line, message, cli):
    root = _rafdb(tmp_path / "raf", [(f"train_{i:05d}.jpg", 1 + i % 7) for i in range(1, 15)])
    label_file = root / "basic" / layouts.RAFDB_LIST
    label_file.write_text(label_file.read_text() + line + "\n")
    with pytest.raises(UserError, match=f"list_patition_label.txt:15: {message}"):
        open_dataset(root)
    code, _, err = cli("data", "inspect", root)
    assert code == 2 and "Traceback" not in err and message in err
    assert not list((Path.cwd() / "nothing").glob("*"))


def test_missing_and_truncated_images_are_counted_with_their_reason(tmp_path):
    root = _rafdb(tmp_path / "raf", [(f"train_{i:05d}.jpg", 1 + i % 7) for i in range(1, 36)])
    (root / "basic/Image/aligned/train_00002_aligned.jpg").unlink()
    broken = root / "basic/Image/aligned/train_00003_aligned.jpg"
    broken.write_bytes(broken.read_bytes()[:300])
    data = open_dataset(root)
    assert len(data.train) + len(data.test) == 33
    assert "Image/aligned/train_00002_aligned.jpg: named in EmoLabel/list_patition_label.txt but missing" in data.skipped
    assert "Image/aligned/train_00003_aligned.jpg" in data.skipped  # unreadable


def test_sfew_class_folders_any_case_and_alias(tmp_path):
    for k, folder in enumerate(["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]):
        for i in range(5):
            _face(tmp_path / "sfew/Train" / folder / f"movie_{i}.png", folder.lower(), 10 * k + i, (143, 181))
            _face(tmp_path / "sfew/Val" / folder / f"movie_{i}.png", folder.lower(), 100 + 10 * k + i, (143, 181))
    data = open_dataset(tmp_path / "sfew")
    assert data.layout.startswith("SFEW 2.0 (Train/<class> + Val/<class>)")
    assert data.class_names == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert len(data.train) == 35 and len(data.test) == 35 and data.formats == {"PNG RGB 143x181": 70}


def _ferplus(root: Path, rows: list[tuple[str, list[int]]]) -> Path:
    folder = root / "FER2013Train"
    folder.mkdir(parents=True)
    for i, (name, votes) in enumerate(rows):
        if name:
            _face(folder / name, "happy", i, (48, 48), "L")
    (folder / "label.csv").write_text("".join(f'{n},"(0, 0, 48, 48)",{",".join(map(str, v))}\n' for n, v in rows))
    return root


def test_ferplus_vote_columns_majority_rule_and_rows_without_image(tmp_path):
    #        neutral happy surprise sad anger disgust fear contempt unknown NF
    rows = [("fer0000000.png", [0, 0, 0, 0, 6, 1, 1, 0, 2, 0]),  # anger: 6 of 8 counted votes
            ("fer0000001.png", [4, 0, 0, 3, 3, 0, 0, 0, 0, 0]),  # no class over half: left out
            ("fer0000002.png", [1, 0, 0, 5, 0, 0, 0, 0, 4, 0]),  # single vote dropped: sad 5 of 9
            ("", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # a FER2013 row FER+ gave no image
            ("fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),  # not a face: left out
            ("fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 10, 0, 0])]  # contempt (FER+'s eighth class)
    rows += [(f"fer{5 + i:07d}.png", [0, 10 - i % 3, 0, 0, 0, 0, 0, 0, i % 3, 0]) for i in range(20)]
    data = open_dataset(_ferplus(tmp_path / "ferplus", rows))
    every = {f: data.class_names[label] for split in (data.train, data.test) for f, label in zip(split.files, split.labels)}
    assert every["FER2013Train/fer0000000.png"] == "angry" and every["FER2013Train/fer0000002.png"] == "sad"
    assert every["FER2013Train/fer0000004.png"] == "contempt"
    assert "FER2013Train/fer0000001.png" not in every and "FER2013Train/fer0000003.png" not in every
    votes = {f: v for split in (data.train, data.test) for f, v in zip(split.files, split.votes)}
    column = {c: data.class_names.index(c) for c in ("angry", "sad", "happy")}
    assert votes["FER2013Train/fer0000000.png"][column["angry"]] == 6
    assert votes["FER2013Train/fer0000002.png"][[column["sad"], column["angry"]]].tolist() == [5, 0]
    assert votes["FER2013Train/fer0000005.png"][column["happy"]] == 10


def test_malformed_ferplus_line_is_one_clear_error(tmp_path):
    root = _ferplus(tmp_path / "ferplus", [("fer0000000.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0])])
    with open(root / "FER2013Train/label.csv", "a") as f:
        f.write('fer0000001.png,"(0, 0, 48, 48)",1,2,x,0,0,0,0,0,0,0\n')
    with pytest.raises(UserError, match=r"label.csv:2: not a FER\+ label line"):
        open_dataset(root)


needs_shared = pytest.mark.skipif(not (SHARED / "rafdb").is_dir(), reason="../shared/data is absent")


@needs_shared
@pytest.mark.realdata
def test_shared_sets_load_with_their_readme_counts():
    raf = open_dataset(SHARED / "rafdb")
    total = {c: raf.counts()["train"][c] + raf.counts()["test"][c] for c in raf.class_names}
    assert total == {"surprise": 1290, "fear": 281, "disgust": 717, "happy": 4772, "sad": 1982, "angry": 705,
                     "neutral": 2524} and not raf.skipped
    sfew = open_dataset(SHARED / "sfew")
    assert len(sfew.train) + len(sfew.test) == 859 and len(sfew.test) == 172
    ferplus = open_dataset(SHARED / "ferplus")
    assert "FER2013Train + FER2013Valid" in ferplus.layout and ferplus.train.votes.shape[1] == 8
    assert len(ferplus.train) + len(ferplus.test) + 3901 == 28558 + 3579  # left out: no majority


def test_ferplus_csv_joins_fer2013_csv_row_by_row(tmp_path):
    pixels = " ".join(["100"] * 2304)
    rows = [  # fer2013.csv emotion (0 angry .. 6 neutral), pixels, Usage  |  fer2013new.csv votes
        (3, "Training", "fer0000000.png", [0, 9, 0, 1, 0, 0, 0, 0, 0, 0]),  # happy
        (0, "Training", "", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # FER+ gave this row no image
        (4, "Training", "fer0000001.png", [3, 0, 0, 3, 3, 0, 0, 0, 1, 0]),  # no majority
        (6, "PublicTest", "fer0000002.png", [8, 0, 0, 2, 0, 0, 0, 0, 0, 0]),  # neutral
        (4, "PrivateTest", "fer0000003.png", [0, 0, 0, 7, 0, 0, 0, 3, 0, 0]),  # sad (FER2013 said sad too)
    ]
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(f"{e},{pixels},{u}\n" for e, u, _, _ in rows))
    (tmp_path / "fer2013new.csv").write_text(
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        + "".join(f"{u},{n},{','.join(map(str, v))}\n" for _, u, n, v in rows))
    data = open_dataset(tmp_path / "fer2013new.csv")
    assert "1 rows without an image, 1 without a majority" in data.layout
    assert [data.class_names[k] for k in data.train.labels] == ["happy"]
    assert [data.class_names[k] for k in data.validation.labels] == ["neutral"]
    assert [data.class_names[k] for k in data.test.labels] == ["sad"]
    assert data.test.votes[0][data.class_names.index("contempt")] == 3
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + f"3,{pixels},PublicTest\n" * 5)
    with pytest.raises(UserError, match="not row-aligned"):
        open_dataset(tmp_path / "fer2013new.csv")

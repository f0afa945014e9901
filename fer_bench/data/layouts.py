"""Real-photo and relabelled data sets in the layouts their own users receive them in.

    RAF-DB basic   ROOT/EmoLabel/list_patition_label.txt ("train_00001.jpg 5", labels 1..7 =
                   surprise, fear, disgust, happiness, sadness, anger, neutral) + ROOT/Image/aligned/
                   train_00001_aligned.jpg (ROOT may also be the folder holding basic/)
    SFEW 2.0       ROOT/Train/<Angry|...>/ and, where present, ROOT/Val/<Angry|...>/
    FER+           ROOT/FER2013Train/, FER2013Valid/, FER2013Test/, each with label.csv (no header:
                   image, face box, votes for neutral, happiness, surprise, sadness, anger, disgust,
                   fear, contempt, unknown, not-a-face); or fer2013new.csv (Usage, Image name, the same
                   ten vote columns) beside Kaggle's fer2013.csv, joined row by row as FER+ does

A set whose test part is not there (RAF-DB's and SFEW's held-out parts are not distributed with
their training parts here) gets a **development part** instead: a stratified DEVELOPMENT_FRACTION
of its training images, seeded with DEVELOPMENT_SEED, which runs report as their test split and
never train on. Everyone who points `--data` at the same folder gets the same development part.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import UserError
from .classes import FER_CLASSES, canonical_class
from .dataset import Dataset, Split, cached_dataset, decode_files, file_list_key, list_class_files, make_split

DEVELOPMENT_FRACTION = 0.2
DEVELOPMENT_SEED = 0

RAFDB_LABELS = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")  # label 1..7
RAFDB_LIST = Path("EmoLabel") / "list_patition_label.txt"
FERPLUS_FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
FERPLUS_VOTES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt", "unknown", "not_face")
FERPLUS_EMOTIONS = FERPLUS_VOTES[:8]
FER_CLASSES_WITH_CONTEMPT = FER_CLASSES + ("contempt",)


def detect_layout(root: Path) -> str | None:
    """'rafdb', 'sfew' or 'ferplus' when `root` holds that layout, else None."""
    if rafdb_root(root) is not None:
        return "rafdb"
    if (root / "Train").is_dir() and any(p.is_dir() for p in (root / "Train").iterdir()) and not (root / "train").is_dir():
        return "sfew"
    if (root / FERPLUS_FOLDERS["train"] / "label.csv").is_file():
        return "ferplus"
    return None


def rafdb_root(root: Path) -> Path | None:
    """The folder holding EmoLabel/ and Image/ (ROOT or ROOT/basic), or None."""
    return next((base for base in (root, root / "basic") if (base / RAFDB_LIST).is_file()), None)


def original_image(source: Path, name: str) -> Path:
    """The file on disk of an image a split of `source` names (RAF-DB's names are relative to basic/)."""
    return (rafdb_root(Path(source)) or Path(source)) / name


def development_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training part, development part) indices: DEVELOPMENT_FRACTION, seed DEVELOPMENT_SEED, stratified
    by class when every class has at least two images."""
    from sklearn.model_selection import train_test_split

    if len(labels) < 5:
        raise UserError(f"{len(labels)} images are too few to hold out a development part; add a test part")
    stratify = labels if np.unique(labels, return_counts=True)[1].min() >= 2 else None
    train_idx, dev_idx = train_test_split(np.arange(len(labels)), test_size=DEVELOPMENT_FRACTION, stratify=stratify,
                                          random_state=DEVELOPMENT_SEED)
    return np.sort(train_idx), np.sort(dev_idx)


def _with_development_part(dataset: Dataset) -> Dataset:
    """A dataset without a test part: its development part becomes the test split."""
    if len(dataset.test):
        return dataset
    train_idx, dev_idx = development_split(dataset.train.labels)
    dataset.test = dataset.train.subset(dev_idx)
    dataset.train = dataset.train.subset(train_idx)
    dataset.layout += (f"; no test part: a stratified {DEVELOPMENT_FRACTION:.0%} development part "
                       f"(seed {DEVELOPMENT_SEED}) of the training images is the test split")
    return dataset


def _read_files(root: Path, layout: str, named: dict[str, list[tuple[str, Path]]], missing: list[str],
                use_cache: bool, votes: dict[str, np.ndarray] | None = None) -> Dataset:
    """Decode (or load from the cache) named split → (class, file) lists into a Dataset."""
    every = [item for files in named.values() for item in files]
    if not named.get("train"):
        raise UserError(f"no training images found in {root} ({layout} layout)")
    key = file_list_key(root, every, extra=layout + "|" + "|".join(missing))

    def decode() -> Dataset:
        class_names = tuple(c for c in FER_CLASSES_WITH_CONTEMPT if c in {label for label, _ in every})
        formats: Counter = Counter()
        splits, skipped = {}, list(missing)
        for name, files in named.items():
            split, bad = decode_files(root, files, class_names, formats)
            if votes is not None:
                split.votes = _votes_for(split, votes[name], class_names)
            splits[name] = split
            skipped += bad
        empty = Split(np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int64), [])
        dataset = Dataset(str(root.resolve()), layout, class_names, splits["train"], splits.get("test", empty),
                          splits.get("validation"), skipped=skipped, formats=dict(formats))
        return _with_development_part(dataset)

    return cached_dataset(key, use_cache, decode)


def read_rafdb(root: Path, use_cache: bool = True) -> Dataset:
    """RAF-DB basic: the label list, the authors' aligned crops; train_* and test_* by name."""
    base = rafdb_root(root)
    label_file = base / RAFDB_LIST
    images = base / "Image" / "aligned"
    named: dict[str, list] = {"train": [], "test": []}
    missing = []
    for number, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{label_file}:{number}: expected 'train_00001.jpg 5', got {line.strip()[:60]!r}")
        name, label = parts
        if not 1 <= int(label) <= len(RAFDB_LABELS):
            raise UserError(f"{label_file}:{number}: label {label} is not one of RAF-DB's 1..7")
        stem, _, suffix = name.rpartition(".")
        path = images / f"{stem}_aligned.{suffix}"
        split = "test" if name.startswith("test") else "train"
        if not path.exists():
            missing.append(f"{path.relative_to(base)}: named in {RAFDB_LIST} but missing")
            continue
        named[split].append((RAFDB_LABELS[int(label) - 1], path))
    return _read_files(base, "RAF-DB basic (EmoLabel + Image/aligned)", named, missing, use_cache)


def read_sfew(root: Path, use_cache: bool = True) -> Dataset:
    """SFEW 2.0: Train/<class>/ (+ Val/<class>/ as the test split where present)."""
    named = {"train": list_class_files(root / "Train")}
    if (root / "Val").is_dir():
        named["test"] = list_class_files(root / "Val")
    return _read_files(root, "SFEW 2.0 (Train/<class>" + (" + Val/<class>" if "test" in named else "") + ")",
                       named, [], use_cache)


def majority_label(votes: np.ndarray) -> int | None:
    """FER+'s majority rule over one image's ten vote counts: single votes are dropped as outliers,
    and the top class must hold more than half of the rest; None when it does not, or is unknown /
    not a face."""
    kept = np.where(votes > 1, votes, 0)
    top = int(np.argmax(kept))
    if kept[top] == 0 or kept[top] <= kept.sum() / 2 or top >= len(FERPLUS_EMOTIONS):
        return None
    return top


def read_ferplus_labels(label_file: Path) -> list[tuple[str, np.ndarray]]:
    """(image name, ten vote counts) per line of a FER+ label.csv; a malformed line is one clear error."""
    rows = []
    with open(label_file, newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            try:
                if len(row) != 2 + len(FERPLUS_VOTES):
                    raise ValueError(f"{len(row)} fields, expected {2 + len(FERPLUS_VOTES)}")
                votes = np.array([int(v) for v in row[2:]], dtype=np.int64)
                if (votes < 0).any():
                    raise ValueError("a negative vote count")
            except ValueError as error:
                raise UserError(f"{label_file}:{number}: not a FER+ label line ({error})") from None
            rows.append((row[0].strip(), votes))
    return rows


def read_ferplus(root: Path, use_cache: bool = True) -> Dataset:
    """FER+ folders: majority labels (FER+'s rule) as labels, the eight emotions' votes kept per image.
    Without FER2013Test/ (PrivateTest, held out), FER2013Valid/ (PublicTest) is the test split."""
    present = {split: root / folder for split, folder in FERPLUS_FOLDERS.items() if (root / folder / "label.csv").is_file()}
    if "test" not in present and "validation" in present:
        present["test"] = present.pop("validation")
    named, votes, missing, unlabelled = {}, {}, [], Counter()
    for split, folder in present.items():
        files, split_votes = [], {}
        for name, counts in read_ferplus_labels(folder / "label.csv"):
            if not name:  # FER2013 rows FER+ gave no image
                unlabelled["no image"] += 1
                continue
            label = majority_label(counts)
            if label is None:
                unlabelled["no majority"] += 1
                continue
            path = folder / name
            if not path.exists():
                missing.append(f"{folder.name}/{name}: named in label.csv but missing")
                continue
            files.append((FERPLUS_EMOTIONS[label], path))
            split_votes[str(path.relative_to(root))] = counts[:len(FERPLUS_EMOTIONS)]
        named[split], votes[split] = files, split_votes
    layout = (f"FER+ ({' + '.join(p.name for p in present.values())}, majority labels; "
              f"{unlabelled['no majority']} faces without a majority left out)")
    return _read_files(root, layout, named, missing, use_cache, votes)


def _votes_for(split: Split, votes: dict[str, np.ndarray], class_names: tuple[str, ...]) -> np.ndarray:
    """Each decoded image's vote counts in `class_names` order."""
    columns = [FERPLUS_EMOTIONS.index(canonical_class(c)) for c in class_names]
    return np.stack([votes[f][columns] for f in split.files]) if split.files else np.zeros((0, len(columns)))


READERS = {"rafdb": read_rafdb, "sfew": read_sfew, "ferplus": read_ferplus}


def is_ferplus_csv(path: Path) -> bool:
    """Whether a CSV is FER+'s fer2013new.csv (its header names 'Image name' and the vote columns)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = [h.strip().lower() for h in f.readline().split(",")]
    return "image name" in header and "neutral" in header


def read_ferplus_csv(path: Path, test_usage: str = "PrivateTest", use_cache: bool = True) -> Dataset:
    """fer2013new.csv joined row by row with the fer2013.csv beside it: FER2013's pixels, FER+'s majority
    labels and votes; rows FER+ gave no image, or no majority, are left out (counted)."""
    import hashlib

    pixels_csv = path.with_name("fer2013.csv")
    if not pixels_csv.is_file():
        raise UserError(f"{path} holds FER+'s labels only: put Kaggle's fer2013.csv (the pixels) beside it")
    facts = "|".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in (path, pixels_csv))
    key = hashlib.sha256(f"ferplus-csv|{facts}|{test_usage}".encode()).hexdigest()[:20]
    return cached_dataset(key, use_cache, lambda: _join_ferplus_csv(path, pixels_csv, test_usage))


def _join_ferplus_csv(path: Path, pixels_csv: Path, test_usage: str) -> Dataset:
    from .fer_csv import USAGES, parse_row

    other = next(u for u in USAGES if u != test_usage)
    split_of = {"Training": "train", test_usage: "test", other: "validation"}
    parts = {name: ([], [], [], []) for name in split_of.values()}
    left_out: Counter = Counter()
    with open(path, newline="", encoding="utf-8-sig") as labels_file, \
            open(pixels_csv, newline="", encoding="utf-8-sig", errors="replace") as pixels_file:
        labels_rows, pixel_rows = csv.reader(labels_file), csv.reader(pixels_file)
        header = [h.strip().lower() for h in next(labels_rows)]
        pixel_header = [h.strip().lower() for h in next(pixel_rows)]
        columns = {name: pixel_header.index(name) for name in ("emotion", "pixels", "usage") if name in pixel_header}
        votes_at = header.index("neutral")
        for number, (row, pixel_row) in enumerate(zip(labels_rows, pixel_rows), start=2):
            try:
                votes = np.array([int(v) for v in row[votes_at:votes_at + len(FERPLUS_VOTES)]], dtype=np.int64)
                if len(votes) != len(FERPLUS_VOTES):
                    raise ValueError(f"{len(votes)} vote columns, expected {len(FERPLUS_VOTES)}")
                _, image, usage = parse_row(pixel_row, columns)
            except (ValueError, IndexError) as problem:
                raise UserError(f"{path.name}/{pixels_csv.name} row {number}: cannot be joined ({problem})") from None
            if row[header.index("usage")].strip() != usage:
                raise UserError(f"{path.name} row {number} is {row[header.index('usage')]!r} but {pixels_csv.name} "
                                f"row {number} is {usage!r}: the two files are not row-aligned")
            label = majority_label(votes)
            if not row[header.index("image name")].strip() or label is None:
                left_out["no image" if not row[header.index("image name")].strip() else "no majority"] += 1
                continue
            images, labels, names, split_votes = parts[split_of[usage]]
            images.append(image)
            labels.append(FER_CLASSES_WITH_CONTEMPT.index(FERPLUS_EMOTIONS[label]))
            names.append(f"{usage}_{number}")
            split_votes.append(votes[:len(FERPLUS_EMOTIONS)])
    order = [FERPLUS_EMOTIONS.index(c) for c in FER_CLASSES_WITH_CONTEMPT]
    splits = {}
    for name, (images, labels, names, split_votes) in parts.items():
        split = make_split(images, labels, names)
        split.votes = np.stack(split_votes)[:, order] if split_votes else np.zeros((0, len(order)), np.int64)
        splits[name] = split
    layout = (f"FER+ fer2013new.csv + fer2013.csv (Training=train, {test_usage}=test, {other}=validation; "
              f"majority labels; {left_out['no image']} rows without an image, {left_out['no majority']} without a "
              "majority left out)")
    return Dataset(str(path.resolve()), layout, FER_CLASSES_WITH_CONTEMPT, splits["train"], splits["test"],
                   splits["validation"] if len(splits["validation"]) else None,
                   formats={"csv 48x48 gray": sum(len(v) for v in splits.values())})

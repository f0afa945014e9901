"""Kaggle's original `fer2013.csv` (emotion,pixels,Usage) as a dataset, streamed row by row.

Usage Training → train; PrivateTest → test and PublicTest → validation (or the other way round
with `test_usage="PublicTest"`). Without a Usage column every row is training data and a
stratified 10 % (seed 0) is held out as the test set. Malformed rows are skipped and named by
their line number.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np

from ..errors import UserError
from .classes import FER_CLASSES, FER_CSV_EMOTIONS
from .dataset import NATIVE_SIZE, Dataset, cached_dataset, make_split, split_validation

log = logging.getLogger(__name__)
USAGES = ("PublicTest", "PrivateTest")
HELD_OUT_FRACTION = 0.1  # test share when the CSV has no Usage column
_PIXELS = NATIVE_SIZE * NATIVE_SIZE


def parse_row(row: list[str], columns: dict[str, int]) -> tuple[int, np.ndarray, str | None]:
    """(class index into FER_CLASSES, 48x48 pixels, usage or None); raises ValueError with the reason."""
    if len(row) < len(columns):
        raise ValueError(f"{len(row)} fields, expected {len(columns)}")
    try:
        emotion = int(row[columns["emotion"]])
    except ValueError:
        raise ValueError(f"emotion {row[columns['emotion']]!r} is not a number") from None
    if not 0 <= emotion < len(FER_CSV_EMOTIONS):
        raise ValueError(f"unknown emotion id {emotion} (expected 0-6)")
    try:
        values = np.array(row[columns["pixels"]].split(), dtype=np.int64)
    except ValueError:
        raise ValueError("non-numeric pixel value") from None
    if values.size != _PIXELS:
        raise ValueError(f"{values.size} pixels, expected {_PIXELS}")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("pixel value outside 0-255")
    usage = row[columns["usage"]].strip() if "usage" in columns else None
    label = FER_CLASSES.index(FER_CSV_EMOTIONS[emotion])
    return label, values.astype(np.uint8).reshape(NATIVE_SIZE, NATIVE_SIZE), usage


def _rows(reader, skipped: list[str]):
    """(line number, fields) of each row; rows the csv module cannot parse (NUL bytes, a field over
    its size limit) are added to `skipped` instead."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as problem:
            skipped.append(f"row {reader.line_num}: malformed CSV ({problem})")
            continue
        yield reader.line_num, row


def _decode_csv(path: Path, test_usage: str) -> Dataset:
    log.info("reading %s (cached afterwards)", path)
    other = next(u for u in USAGES if u != test_usage)
    split_of = {"Training": "train", test_usage: "test", other: "validation"}
    parts = {name: ([], [], []) for name in ("train", "validation", "test")}
    skipped = []
    # utf-8-sig drops a byte-order mark; bytes that are not UTF-8 become U+FFFD and fail as values
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
        except csv.Error:
            header = []
        if "emotion" not in header or "pixels" not in header:
            raise UserError(f"{path} is not a FER2013 CSV: its header needs 'emotion' and 'pixels' columns")
        columns = {name: header.index(name) for name in ("emotion", "pixels", "usage") if name in header}
        for line, row in _rows(reader, skipped):
            if not any(field.strip() for field in row):
                continue
            try:
                label, image, usage = parse_row(row, columns)
                split = "train" if usage is None else split_of.get(usage)
                if split is None:
                    raise ValueError(f"unknown Usage {usage!r}")
            except ValueError as problem:
                skipped.append(f"row {line}: {problem}")
                continue
            images, labels, names = parts[split]
            images.append(image)
            labels.append(label)
            names.append(f"{usage or 'row'}_{line}")
    splits = {name: make_split(*lists) for name, lists in parts.items()}
    if "usage" in columns:
        layout = f"fer2013.csv (Training=train, {test_usage}=test, {other}=validation)"
        validation = splits["validation"] if len(splits["validation"]) else None
        return Dataset(str(path.resolve()), layout, FER_CLASSES, splits["train"], splits["test"], validation,
                       skipped=skipped, formats={"csv 48x48 gray": sum(len(s) for s in splits.values())})
    rows = splits["train"]
    keep, held_out = split_validation(rows.labels, HELD_OUT_FRACTION, seed=0)
    layout = f"csv without Usage (stratified {HELD_OUT_FRACTION:.0%} held out as test, seed 0)"
    return Dataset(str(path.resolve()), layout, FER_CLASSES, rows.subset(keep), rows.subset(held_out),
                   skipped=skipped, formats={"csv 48x48 gray": len(rows)})


def read_csv_dataset(path: Path, test_usage: str = "PrivateTest", use_cache: bool = True) -> Dataset:
    """Read (or load from cache) a FER2013 CSV as a dataset."""
    if test_usage not in USAGES:
        raise UserError(f"--test-usage must be one of {', '.join(USAGES)}, got {test_usage!r}")
    st = path.stat()
    key = hashlib.sha256(f"csv|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{test_usage}".encode()).hexdigest()[:20]
    return cached_dataset(key, use_cache, lambda: _decode_csv(path, test_usage))

"""Open whatever the user points `--data` at: nothing (synthetic faces), a folder (train/test class
folders, RAF-DB basic, SFEW 2.0, FER+), or a CSV."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from .dataset import Dataset, Split, read_folder_dataset


def open_dataset(data: str | Path | None, test_usage: str = "PrivateTest") -> Dataset:
    """Every class of the data set at `data` (None: the embedded synthetic faces)."""
    if data is None:
        from .synthetic import synthetic_dataset

        return synthetic_dataset()
    path = Path(data)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path} is a file but not a .csv; --data takes a dataset folder or fer2013.csv")
        from .fer_csv import read_csv_dataset
        from .layouts import is_ferplus_csv, read_ferplus_csv

        return read_ferplus_csv(path, test_usage) if is_ferplus_csv(path) else read_csv_dataset(path, test_usage)
    from .layouts import READERS, detect_layout

    layout = detect_layout(path) if path.is_dir() else None
    return READERS[layout](path) if layout else read_folder_dataset(path)


def is_dataset(path: Path) -> bool:
    """Whether `path` is a whole data set (a CSV, train/ + test/ folders, or a published layout) rather
    than a bare folder of class sub-folders."""
    from .layouts import detect_layout

    path = Path(path)
    return path.is_file() or any((base / "train").is_dir() for base in (path, path / "images")) or (
        path.is_dir() and detect_layout(path) is not None)


MAX_SOURCE_WEIGHT = 100


def parse_also_train(spec: str) -> list[tuple[str, float]]:
    """`PATH[:WEIGHT],...` → [(absolute path, sampling weight)], each path checked to exist."""
    sources = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        path, weight = item.rsplit(":", 1) if _has_weight(item) else (item, "1")
        if not Path(path).exists():
            raise UserError(f"--also-train: data path does not exist: {path}")
        if not 0 < float(weight) <= MAX_SOURCE_WEIGHT:
            raise UserError(f"--also-train: the sampling weight of {path} must be above 0 and at most "
                            f"{MAX_SOURCE_WEIGHT} (its images repeated that many times in the fit set), got {weight}")
        sources.append((str(Path(path).resolve()), float(weight)))
    if not sources:
        raise UserError("--also-train takes a comma list of PATH or PATH:WEIGHT")
    return sources


def _has_weight(item: str) -> bool:
    """Whether an --also-train item ends in ':NUMBER'."""
    try:
        float(item.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return False
    return True


def with_training_sources(dataset: Dataset, extras: list[tuple[str, Dataset, float]]) -> Dataset:
    """`dataset` whose train split also holds each extra data set's training images of the same classes
    (matched by name; its other classes left out), each image with its source's sampling weight; `extras`
    holds (the path given, its data set, its weight). The
    test (and validation) split stays `dataset`'s own: each source's own test part is scored apart."""
    parts, weights, records = [dataset.train], [np.ones(len(dataset.train))], []
    for path, extra, weight in extras:
        shared = [c for c in extra.class_names if c in dataset.class_names]
        keep = np.flatnonzero(np.isin(np.asarray(extra.class_names)[extra.train.labels], shared))
        if not len(keep):
            raise UserError(f"--also-train {extra.source} has no training images of the run's classes "
                            f"({', '.join(dataset.class_names)})")
        part = extra.train.subset(keep)
        part.labels = np.array([dataset.class_names.index(extra.class_names[k]) for k in part.labels], np.int64)
        part.files = [f"{Path(extra.source).name}/{f}" for f in part.files]
        parts.append(part)
        weights.append(np.full(len(part), weight))
        records.append({"source": path, "layout": extra.layout, "classes": shared, "images": len(part),
                        "weight": weight, "train_sha256": extra.fingerprint()["train_sha256"]})
    # a source without votes (e.g. RAF-DB beside FER+) gets none: its targets are its one-hot labels
    votes = None if dataset.train.votes is None else np.concatenate(
        [p.votes if p.votes is not None else np.zeros((len(p), len(dataset.class_names)), np.int64) for p in parts])
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                  [f for p in parts for f in p.files], votes, np.concatenate(weights))
    return replace(dataset, train=train, training_sources=records)

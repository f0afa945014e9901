"""Open whatever the user points `--data` at: nothing (synthetic faces), a folder (train/test class
folders, RAF-DB basic, SFEW 2.0, FER+), or a CSV."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .dataset import Dataset, read_folder_dataset


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

        return read_csv_dataset(path, test_usage)
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

"""Open whatever the user points `--data` at: nothing (synthetic faces), a folder, or a CSV."""

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
    return read_folder_dataset(path)

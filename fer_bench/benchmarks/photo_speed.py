"""Speed, memory and accuracy of `predict FOLDER` as a user runs it, one fresh process per detector and
model (cold start included), as ratios against the first pair in the same run.

A folder whose photos sit in class-named subfolders (`<class>/photo.jpg`, as `fer-bench data scenes`
writes them) is also scored: each photo answered by its most confident face (as `evaluate --faces
detect` does), by the whole photo where no face was found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from ..errors import UserError, last_line
from ..serving.predict import IMAGE_SUFFIXES


def photo_folders(folder: Path) -> list[Path]:
    """`folder` and its subfolders, those that hold photos (`predict` reads one level of a folder)."""
    found = [f for f in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
             if any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in f.iterdir())]
    if not found:
        raise UserError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder} or its subfolders")
    return found


def _timed_predict(folders: list[Path], detector: str, run: str | None, results: Path, csv: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one `predict FOLDER...` process (its errors go to a file beside
    `csv`: a pipe left unread while the process is awaited could fill and stall it)."""
    command = [sys.executable, "-m", "fer_bench", "predict", *map(str, folders), "--detector", detector,
               "--csv", str(csv), "--results", str(results)] + (["--run", run] if run else [])
    log = csv.with_suffix(".stderr")
    started = time.perf_counter()
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise UserError(f"predict with --detector {detector} failed: {last_line(log.read_text())}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def photo_answers(table: pd.DataFrame) -> pd.DataFrame:
    """One answer per photo: its most confident face (then the largest), or the whole photo's answer."""
    table = table.assign(area=table["w"].fillna(0) * table["h"].fillna(0),
                         score=table["confidence"].fillna(-1.0) if "confidence" in table else -1.0)
    return table.sort_values(["score", "area"], ascending=False).drop_duplicates("file").set_index("file")


def score_folder(table: pd.DataFrame) -> dict:
    """Accuracy and balanced accuracy per photo where the photo's folder names one of the model's classes."""
    from sklearn.metrics import balanced_accuracy_score

    answers = photo_answers(table)
    classes = {c[2:] for c in table.columns if c.startswith("p_")}
    truth = pd.Series({f: Path(f).parent.name for f in answers.index})
    labelled = truth[truth.isin(classes)]
    facts = {"photos": len(answers), "photos_without_a_face": int(answers["x"].isna().sum())}
    if len(labelled):
        predicted = answers.loc[labelled.index, "label"]
        with warnings.catch_warnings():  # answers in a class no folder holds are simply wrong
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(labelled, predicted)
        facts |= {"labelled": len(labelled), "accuracy": float((predicted == labelled).mean()),
                  "balanced_accuracy": float(balanced)}
    return facts


def photo_benchmark(folder: Path, detectors: list[str], runs: list[str | None], results: Path = Path("results"),
                    progress=print) -> pd.DataFrame:
    """One row per detector and model: whole-command seconds, ms per photo, peak memory, faces, accuracy
    (labelled folders), and ratios against the first row."""
    rows, folders = [], photo_folders(folder)
    with tempfile.TemporaryDirectory(prefix="fer-bench-photos-") as work:
        for run in runs:
            for detector in detectors:
                csv = Path(work) / f"{detector}-{len(rows)}.csv"
                seconds, peak = _timed_predict(folders, detector, run, results, csv)
                table = pd.read_csv(csv)
                row = {"detector": detector, "model": run or "bundled", "seconds": seconds, **score_folder(table),
                       "faces": int(table["x"].notna().sum()), "peak_resident_mb": peak}
                row["ms_per_photo"] = 1000 * seconds / row["photos"]
                rows.append(row)
                accuracy = f", accuracy {row['accuracy']:.3f}" if "accuracy" in row else ""
                progress(f"{detector} + {row['model']}: {seconds:.1f} s for {row['photos']} photos "
                         f"({row['ms_per_photo']:.0f} ms each), peak {peak:.0f} MiB{accuracy}")
    table = pd.DataFrame(rows)
    table["speed_vs_first"] = table["seconds"].iloc[0] / table["seconds"]
    return table

"""Speed and memory of `predict VIDEO` per detector and model, as ratios measured in the same run.

For each frame size the video is re-encoded at that size, then analysed twice per detector and model,
each in its own process (so each reports its own peak memory): detecting and classifying on every
frame, and detecting every `every`-th frame (default: 6 answers per face per second) with ids tracked
between. Reported: frames/s, answers per face per second, peak resident memory, and the speed-ups
against every frame with the same detector and against the first detector and model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ..errors import UserError, last_line
from ..serving.video import UPDATES_PER_SECOND


def resized_copy(video: Path, size: tuple[int, int], out: Path) -> tuple[Path, float]:
    """`video` re-encoded (mp4v) with every frame resized to `size` (width, height); with its frame rate."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise UserError(f"{video}: not a video OpenCV can read")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer.release()
    capture.release()
    return out, fps


def _analyse(video: Path, every: int | None, detector: str, run: str | None, results: Path, work: Path) -> dict:
    out = work / f"{video.stem}-{detector}-every{every or 'default'}.fer"
    command = [sys.executable, "-m", "fer_bench", "predict", str(video), "--out", str(out), "--detector", detector,
               "--results", str(results)]
    command += (["--every", str(every)] if every else []) + (["--run", run] if run else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"analysing {video.name} failed: {last_line(done.stderr)}")
    return json.loads((out / "video.json").read_text())


def video_benchmark(video: Path, sizes: list[tuple[int, int]], detectors: list[str], every: int | None = None,
                    runs: list[str | None] = (None,), results: Path = Path("results"), progress=print) -> pd.DataFrame:
    """One row per frame size, model, detector and scheme: frames/s, answers per face per second, peak memory;
    speed-up against detecting every frame with the same detector, and against the first detector and model
    detecting every frame at that size."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-bench-video-") as folder:
        work = Path(folder)
        for width, height in sizes:
            copy, fps = resized_copy(video, (width, height), work / f"{width}x{height}.mp4")
            stride = every or max(1, int(fps // UPDATES_PER_SECOND))
            first = None
            for run in runs:
                for detector in detectors:
                    scheme_rows = []
                    for scheme, step in (("detect every frame", 1), ("detect every N-th frame + tracking", stride)):
                        result = _analyse(copy, step, detector, run, results, work)
                        scheme_rows.append({
                            "frame_size": f"{width}x{height}", "detector": detector, "model": run or "bundled",
                            "scheme": scheme, "every": result["settings"]["every"], "frames": result["frames_read"],
                            "frames_per_second": result["frames_per_second"],
                            "answers_per_face_per_second": result["answers_per_face_per_second"],
                            "faces": len(result["faces"]), "peak_resident_mb": result["peak_resident_mb"]})
                        progress(f"{width}x{height}, {detector} + {run or 'bundled'}, {scheme}: "
                                 f"{result['frames_per_second']:.1f} frames/s, "
                                 f"{result['answers_per_face_per_second']:.1f} answers per face per second, "
                                 f"peak {result['peak_resident_mb'] or float('nan'):.0f} MiB")
                    baseline = scheme_rows[0]["frames_per_second"]
                    first = first or baseline
                    for row in scheme_rows:
                        row["speed_vs_every_frame"] = row["frames_per_second"] / baseline
                        row["speed_vs_first"] = row["frames_per_second"] / first
                    rows += scheme_rows
    return pd.DataFrame(rows)


def parse_sizes(spec: str) -> list[tuple[int, int]]:
    """'640x480,1280x720' → [(640, 480), (1280, 720)]."""
    sizes = []
    for item in spec.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UserError(f"--frame-sizes takes WIDTHxHEIGHT,..., got {item!r}") from None
        if width < 32 or height < 32:
            raise UserError(f"--frame-sizes: {item} is too small")
        sizes.append((width, height))
    return sizes

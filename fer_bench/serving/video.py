"""Expressions through a video or a webcam: frames streamed (memory does not grow with the video's
length), faces found on every `every`-th frame with the same detector, alignment and calibrated
model as photos, each face followed under a stable id (`tracking`), and the outputs written beside
the video: a row per face per analysed frame (CSV), a JSON summary per face (dominant expression,
share of time in each, segments), a timeline PNG per face and, if asked, an annotated video.

Smoothing is explicit: an exponential moving average of each face's probabilities with a half-life
of `smooth_seconds` (0 = none), recorded in the JSON; the raw probabilities are always kept.
The outputs appear only when complete (a hidden work folder renamed at the end).
"""

from __future__ import annotations

import json
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..data.faces import DEFAULT_DETECTOR, find_faces
from ..errors import UserError
from ..files import filling_output_folder, save_figure, write_csv, write_json
from ..memory import peak_resident_mb
from .predict import VIDEO_SUFFIXES, LoadedRun
from .tracking import FaceTracker, appearance

MAX_VIDEO_PIXELS = 8192 * 4320  # larger frames are refused (8K)
DETECT_SIDE = 480  # frames are downscaled to this longer side for detection (faces of 27 px and up are found); boxes in the original's pixels
UPDATES_PER_SECOND = 6  # default analysis rate: every face's answer renewed this often
SMOOTH_SECONDS = 0.5
TRUNCATED_SHARE = 0.95  # less read than this share of the duration a file announces: it is truncated


@dataclass
class Source:
    """An opened video file or camera: OpenCV's capture and what is known of it."""

    name: str
    capture: object
    fps: float
    frames: int | None  # None: a camera (no end known)
    width: int
    height: int


def open_video(path: Path, name: str | None = None) -> Source:
    """Open a video file with OpenCV's FFmpeg, or raise one clear UserError; `name` (default: the
    path) is how the user knows the file, in errors and outputs (an upload's, not its temporary path)."""
    import cv2

    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise UserError(f"video not found: {name}")
    if path.stat().st_size == 0:
        raise UserError(f"{name}: the file is empty")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{name}: not a video OpenCV can read ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return _checked(name, capture, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None)


def open_camera(index: int) -> Source:
    """Open camera `index` (OpenCV's numbering), or raise one clear UserError."""
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(f"camera {index} cannot be opened (no such device, or it is in use)")
    return _checked(f"camera{index}", capture, None)


def _checked(name: str, capture, frames: int | None) -> Source:
    import cv2

    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > MAX_VIDEO_PIXELS:
        capture.release()
        raise UserError(f"{name}: {width}x{height} frames are larger than the {MAX_VIDEO_PIXELS:,} pixels allowed")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return Source(name, capture, fps if fps and 1 <= fps <= 1000 else 30.0, frames, width, height)


class FaceRows:
    """Every face row of an analysis, kept as numeric chunks: memory grows by about 150 bytes per face per
    analysed frame, not by a Python dict's kilobyte (10 minutes at 30 frames/s with two faces: ~5 MB)."""

    CHUNK = 512

    def __init__(self):
        self._chunks: list[pd.DataFrame] = []
        self._pending: list[dict] = []

    def extend(self, rows: list[dict]) -> None:
        self._pending += rows
        if len(self._pending) >= self.CHUNK:
            self._chunks.append(self._frame(self._pending))
            self._pending = []

    @staticmethod
    def _frame(rows: list[dict]) -> pd.DataFrame:
        """Built column by column (from the dicts, pandas keeps an object array of the whole chunk)."""
        return pd.DataFrame({column: [row[column] for row in rows] for column in rows[0]})

    def __len__(self) -> int:
        return sum(map(len, self._chunks)) + len(self._pending)

    def table(self) -> pd.DataFrame:
        parts = self._chunks + ([self._frame(self._pending)] if self._pending else [])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


@dataclass
class Analysis:
    """What a video's analysis found: one row per face per analysed frame, and how it was made."""

    rows: FaceRows = field(default_factory=FaceRows)
    frames_read: int = 0
    frames_analysed: int = 0
    video_seconds: float = 0.0  # the time of the last frame read
    analysed_times: array = field(default_factory=lambda: array("d"))  # each analysed frame's time (s)
    truncated: str | None = None  # why fewer frames were read than the file announces
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)


def default_every(fps: float, detector: str = DEFAULT_DETECTOR) -> int:
    """The default analysis stride: every frame with BlazeFace (fast enough for it: 640x480 at 66 frames/s
    on 2 cores), else the stride that renews every face's answer UPDATES_PER_SECOND times a second."""
    return 1 if detector == "blazeface" else max(1, int(fps // UPDATES_PER_SECOND))


def analyse(run: LoadedRun, source: Source, every: int | None = None, detector: str = DEFAULT_DETECTOR,
            max_seconds: float | None = None, on_frame=None, progress=None) -> Analysis:
    """Stream `source`: detect, align and classify faces on every `every`-th frame, tracked by id.
    `on_frame(frame, faces)` sees every frame (for an annotated video) with the latest faces;
    `progress(done, total, fps)` is called about once a second."""
    every = default_every(source.fps, detector) if every is None else every
    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if max_seconds is not None and not max_seconds > 0:
        raise UserError(f"--seconds must be positive, got {max_seconds}")
    tracker, analysis = FaceTracker(), Analysis()
    analysis.settings = {"every": every, "analysed_per_second": source.fps / every, "detector": detector,
                         "fps": source.fps, "width": source.width, "height": source.height,
                         "detect_side": DETECT_SIDE, "reacquire_seconds": tracker.reacquire_seconds,
                         "times": "the container's timestamps" if source.frames is not None else "frame count / fps"}
    try:
        _stream(run, source, every, detector, max_seconds, on_frame, progress, tracker, analysis)
    except KeyboardInterrupt:
        if source.frames is not None:  # a file: an interrupted analysis is no analysis
            raise
        analysis.settings["stopped"] = "by the user (Ctrl-C)"  # a camera: what was seen so far is the answer
    finally:
        source.capture.release()
    if analysis.frames_read == 0:
        raise UserError(f"{source.name}: no frame could be decoded (truncated or not a video)")
    announced = source.frames / source.fps if source.frames else None  # the container's duration
    wanted = announced if max_seconds is None or announced is None else min(announced, max_seconds)
    if wanted and analysis.video_seconds + 2 / source.fps < TRUNCATED_SHARE * wanted:
        analysis.truncated = (f"only the first {analysis.video_seconds:.1f} s ({analysis.frames_read} frames) of the "
                              f"{announced:.1f} s the file announces could be read: the video is truncated or "
                              "damaged, and the answers cover what was read")
    return analysis


def _stream(run, source, every, detector, max_seconds, on_frame, progress, tracker, analysis) -> None:
    import cv2

    latest: list[dict] = []
    started = last_report = time.perf_counter()
    index, previous_t = -1, -1.0
    while True:
        index += 1
        analysed = index % every == 0
        if on_frame is None and not analysed:
            ok, frame = source.capture.grab(), None  # demux and decode, but no colour conversion
        else:
            ok, frame = source.capture.read()
            ok = ok and frame is not None
        if not ok:
            break
        t = frame_time(source, source.capture.get(cv2.CAP_PROP_POS_MSEC), index, previous_t)
        if max_seconds is not None and t > max_seconds:
            break
        previous_t = t
        analysis.frames_read += 1
        if analysed:
            latest = faces_in_frame(run, frame, t, index, tracker, detector)
            analysis.rows.extend(latest)
            analysis.frames_analysed += 1
            analysis.analysed_times.append(t)
        if on_frame is not None:
            on_frame(frame, latest)
        now = time.perf_counter()
        if progress is not None and now - last_report >= 1.0:
            progress(analysis.frames_read, source.frames, analysis.frames_read / (now - started))
            last_report = now
        analysis.seconds = now - started
    analysis.video_seconds = max(previous_t, 0.0)


def frame_time(source: Source, position_ms: float, index: int, previous: float) -> float:
    """A frame's time in seconds: the container's timestamp (right for variable-frame-rate video), or
    index / fps for a camera or where the container gives none that moves forward."""
    if source.frames is not None and position_ms is not None and position_ms / 1000 > previous:
        return round(position_ms / 1000, 4)
    return round(max(index / source.fps, previous + 1e-3), 4)


def faces_in_frame(run: LoadedRun, frame: np.ndarray, t: float, index: int, tracker: FaceTracker,
                   detector: str = DEFAULT_DETECTOR) -> list[dict]:
    """Every face of one BGR frame at time `t`: tracked id, box in the frame's pixels, label, probabilities."""
    import cv2

    height, width = frame.shape[:2]
    scale = max(1.0, max(height, width) / DETECT_SIDE)
    small = frame if scale == 1.0 else cv2.resize(frame, (round(width / scale), round(height / scale)),
                                                   interpolation=cv2.INTER_AREA)
    image = Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    faces = find_faces(image, detector)
    if not faces:
        tracker.update(t, [], [])
        return []
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    looks = [appearance(f.pixels, gray[max(0, f.box[1]):f.box[1] + f.box[3], max(0, f.box[0]):f.box[0] + f.box[2]])
             for f in faces]
    ids = tracker.update(t, [f.box for f in faces], looks)
    probs = run.probabilities(np.stack([f.pixels for f in faces]))
    rows = []
    for face_id, face, p, unsure in zip(ids, faces, probs, run.is_uncertain(probs)):
        x, y, w, h = (int(round(v * scale)) for v in face.box)
        top = int(np.argmax(p))
        rows.append({"time": round(t, 4), "frame": index, "face": face_id, "x": x, "y": y, "w": w, "h": h,
                     "label": run.class_names[top], **{f"p_{c}": float(v) for c, v in zip(run.class_names, p)},
                     "uncertain": None if unsure is None else bool(unsure), "detector_confidence": face.confidence})
    return rows


def smoothed(table: pd.DataFrame, class_names: tuple[str, ...], half_life: float) -> pd.DataFrame:
    """Each face's probabilities as an exponential moving average over time (half-life in seconds)."""
    out = table[[f"p_{c}" for c in class_names]].to_numpy(dtype=float).copy()
    times = table["time"].to_numpy()
    if half_life > 0:
        for rows in table.groupby("face").indices.values():  # positions, in time order
            for previous, row in zip(rows, rows[1:]):
                keep = 0.5 ** ((times[row] - times[previous]) / half_life)
                out[row] = keep * out[previous] + (1 - keep) * out[row]
    return pd.DataFrame(out, index=table.index, columns=[f"s_{c}" for c in class_names])


def face_summaries(table: pd.DataFrame, class_names: tuple[str, ...], analysed_times: np.ndarray) -> list[dict]:
    """Per face: seen from/to, analysed frames, share of time in each (smoothed) expression, the
    dominant one, and its segments (runs of one smoothed label). An answer holds until the next
    analysed frame (`analysed_times`, from the container's timestamps), so shares are shares of time
    also in variable-frame-rate video; a face missed in more than two analysed frames starts a new segment."""
    analysed_times = np.asarray(analysed_times, dtype=float)
    gaps = np.diff(analysed_times)
    last_step = float(np.median(gaps)) if len(gaps) else 0.0
    summaries = []
    for face, rows in table.groupby("face", sort=True):
        labels = rows["smoothed_label"].tolist()
        times = rows["time"].to_numpy(dtype=float)
        position = np.searchsorted(analysed_times, times - 1e-6)  # each row's analysed frame
        ends = np.append(analysed_times, analysed_times[-1] + last_step)[position + 1]
        held = ends - times
        shares = {c: float(held[[label == c for label in labels]].sum() / max(held.sum(), 1e-12)) for c in class_names}
        segments, start = [], 0
        for k in range(1, len(labels) + 1):
            if k == len(labels) or labels[k] != labels[start] or position[k] - position[k - 1] > 3:
                segments.append({"label": labels[start], "start": float(times[start]), "end": round(float(ends[k - 1]), 4)})
                start = k
        summaries.append({"face": int(face), "first_seen": float(times[0]), "last_seen": float(times[-1]),
                          "analysed_frames": len(rows), "dominant": max(shares, key=shares.get),
                          "share_of_time": shares, "segments": segments})
    return summaries


def plot_timeline(rows: pd.DataFrame, class_names: tuple[str, ...], path: Path, title: str) -> None:
    """One face's probabilities over time: raw (thin) and smoothed (thick), one colour per class."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    colours = plt.get_cmap("tab10")
    for k, c in enumerate(class_names):
        ax.plot(rows["time"], rows[f"p_{c}"], color=colours(k), linewidth=0.6, alpha=0.45)
        ax.plot(rows["time"], rows[f"s_{c}"], color=colours(k), linewidth=2, label=c)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability (calibrated)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="thin: raw", title_fontsize=7)
    save_figure(path, fig, dpi=100)
    plt.close(fig)


OUTPUT_FILES = "frames.csv, video.json, timeline_face*.png"
COMPLETE_FILE = "video.json"  # written last: a folder without it is not a finished analysis


def output_folder(out: Path, what: str = "--out"):
    """The context in which a video's outputs are written: a work folder inside `out`, whose files
    replace fer_bench's earlier outputs there when the block succeeds (files.filling_output_folder:
    a folder the user made is never emptied)."""
    return filling_output_folder(out, what, COMPLETE_FILE)


def write_outputs(analysis: Analysis, run: LoadedRun, source: Source, work: Path, smooth_seconds: float,
                  annotated: bool = False) -> dict:
    """frames.csv, timeline PNGs per face and video.json (last) into the work folder `work` (see
    `output_folder`); `annotated`: the Annotator already wrote work/annotated.mp4."""
    if not np.isfinite(smooth_seconds) or smooth_seconds < 0:
        raise UserError(f"--smooth must be a number of seconds, 0 or more, got {smooth_seconds}")
    table = analysis.rows.table()
    summary = {"video": source.name, "model": run.name, "calibration": run.calibration_note,
               "frames_read": analysis.frames_read, "frames_announced": source.frames,
               "frames_analysed": analysis.frames_analysed, "truncated": analysis.truncated,
               "seconds": round(analysis.seconds, 3),
               "frames_per_second": analysis.frames_read / max(analysis.seconds, 1e-9),
               "answers_per_face_per_second": analysis.settings["analysed_per_second"],
               "peak_resident_mb": peak_resident_mb(),
               "settings": {**analysis.settings, "smoothing": {"kind": "exponential moving average",
                                                               "half_life_seconds": smooth_seconds}},
               "faces": []}
    if len(table):
        table = pd.concat([table, smoothed(table, run.class_names, smooth_seconds)], axis=1)
        s_columns = [f"s_{c}" for c in run.class_names]
        table["smoothed_label"] = [run.class_names[k] for k in table[s_columns].to_numpy().argmax(axis=1)]
        summary["faces"] = face_summaries(table, run.class_names, analysis.analysed_times)
        for face, rows in table.groupby("face"):
            plot_timeline(rows, run.class_names, work / f"timeline_face{face}.png",
                          f"{Path(source.name).name}: face {face} ({run.name})")
    else:
        summary["no_face"] = f"no face in {analysis.frames_analysed} analysed frames"
    write_csv(work / "frames.csv", table if len(table) else pd.DataFrame(
        columns=["time", "frame", "face", "x", "y", "w", "h", "label"]), index=False)
    if annotated:
        summary["annotated_video"] = "annotated.mp4"
    write_json(work / COMPLETE_FILE, summary)
    return summary


class Annotator:
    """Writes every frame with the latest analysed faces drawn on it (box, id, label, probability)."""

    def __init__(self, path: Path, source: Source):
        import cv2

        self.path = path
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), source.fps,
                                      (source.width, source.height))
        if not self.writer.isOpened():
            raise UserError(f"cannot write an annotated video to {path}")

    def __call__(self, frame: np.ndarray, faces: list[dict]) -> None:
        import cv2

        for face in faces:
            x, y, w, h = face["x"], face["y"], face["w"], face["h"]
            p = face[f"p_{face['label']}"]
            cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 200, 255), 2)
            cv2.putText(frame, f"#{face['face']} {face['label']} {p:.0%}", (x, max(12, y - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1, cv2.LINE_AA)
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()



"""Classify ordinary photos with a finished run (by default the bundled model): every face in each
photo is found and aligned (`data.faces.find_faces`), all crops go through the model in one batch, and
the probabilities are calibrated with the run's temperature. An answer says when it is unsure (the
run's uncertainty.json thresholds, chosen on development data) and when the face is small or turned."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.batches import predict
from ..data.dataset import to_native
from ..data.faces import DEFAULT_DETECTOR, find_faces
from ..data.photos import Photo, read_image
from ..errors import UserError
from ..reporting.calibration import apply_temperature
from ..reporting.uncertainty import is_confident
from ..run_folder import RunFolder, find_run

BUNDLED_TFLITE = "model.tflite"  # the bundled model exported (parity-checked): answers without TensorFlow
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}  # `serving.video`


@dataclass
class FaceAnswer:
    """One face's answer: where it is, the calibrated probability of each class, and who answered."""

    file: str
    face: int  # 1, 2, ... left to right within the photo
    box: list[int] | None  # [x, y, w, h] in the original photo's pixels; None: no face found, the whole photo used
    label: str
    probabilities: dict[str, float]
    model: str
    pixels: np.ndarray = field(repr=False)  # the 48x48 gray crop the answer came from
    uncertain: bool | None = None  # None: the run has no uncertainty thresholds
    cautions: list[str] = field(default_factory=list)  # e.g. a small or turned face
    eyes: list | None = None  # [[x, y] of the eye on the image's left, [x, y] of the other], original pixels
    confidence: float | None = None  # the detector's score for this face

    @property
    def sentence(self) -> str:
        return sentence(self.probabilities, bool(self.uncertain))

    def record(self) -> dict:
        """The JSON / CSV form: file, box, label, probabilities, model, uncertain, cautions."""
        return {"file": self.file, "face": self.face, "box": self.box, "label": self.label,
                "probabilities": self.probabilities, "model": self.model, "uncertain": self.uncertain,
                "note": self.sentence if self.uncertain else None, "cautions": self.cautions}


@dataclass
class LoadedRun:
    """A complete run's best model and what it needs to answer."""

    run_dir: Path
    model: object
    class_names: tuple[str, ...]
    model_name: str
    test_accuracy: float
    temperature: float | None  # None: the run has no calibration (older runs); probabilities are raw
    uncertainty: dict | None = None  # uncertainty.json: when an answer says it is unsure (None: never)
    exported_from: str | None = None  # an exported file (run_dir is the file): the run it came from

    def is_uncertain(self, probs: np.ndarray) -> np.ndarray | list[None]:
        """Per row of calibrated probabilities: whether the answer is unsure (Nones without thresholds)."""
        if self.uncertainty is None:
            return [None] * len(probs)
        return ~is_confident(probs, self.uncertainty["top"], self.uncertainty["margin"])

    @property
    def is_bundled(self) -> bool:
        return RunFolder(self.run_dir).is_bundled

    @property
    def source(self) -> str:
        """The run folder, or 'the bundled model' for the one shipped with the package."""
        return "the bundled model" if self.is_bundled else str(self.run_dir)

    @property
    def name(self) -> str:
        """The answering model as named in every answer: its run id (`bundled:<run id>` for the shipped one;
        `<run id> (model.onnx)` for an exported file)."""
        if self.exported_from is not None:
            return f"{self.exported_from} ({self.run_dir.name})"
        if self.is_bundled:
            return "bundled:" + (self.run_dir / "SOURCE").read_text().strip()
        return self.run_dir.name

    @property
    def calibration_note(self) -> str:
        if self.temperature is None:
            return (f"probabilities NOT calibrated (no {RunFolder.CALIBRATION}; `fer-bench calibrate {self.run_dir}` "
                    "fits one)")
        return f"probabilities calibrated on its validation split (temperature {self.temperature:.2f})"

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of (n, 48, 48) uint8 faces."""
        from ..data.dataset import as_model_input

        probs = predict(self.model, as_model_input(pixels))
        return probs if self.temperature is None else apply_temperature(probs, self.temperature)


def load_run(run: str | Path | None, results: Path = Path("results")) -> LoadedRun:
    """Load the complete run a user names (`find_run`: a folder, a run id in `results`, `latest`,
    `bundled`; None: the bundled model) with its best model, or an exported .onnx / .tflite file with its
    sidecar, or raise UserError. Never chosen by test accuracy."""
    from .exported import FORMATS, load_exported

    def from_exported(file: Path, run_dir: Path, exported: bool) -> LoadedRun:
        model, facts = load_exported(file)
        return LoadedRun(run_dir, model, tuple(facts["classes"]), facts["model"], facts["test_accuracy"],
                         facts["temperature"], facts["uncertainty"], exported_from=facts["run"] if exported else None)

    if run is not None and Path(run).suffix in FORMATS:
        return from_exported(Path(run), Path(run).resolve(), exported=True)
    found = find_run("bundled" if run is None else run, results, "--run")
    if found.is_bundled and found.file(BUNDLED_TFLITE).exists():  # no TensorFlow needed to answer
        return from_exported(found.file(BUNDLED_TFLITE), found.path, exported=False)
    return load_trained(found)


def load_trained(run: RunFolder) -> LoadedRun:
    """A run folder's best model once training and evaluation wrote it (complete or about to be)."""
    from ..models import saved

    metrics = run.metrics
    model = saved.load_saved_model(run.file(RunFolder.MODEL))
    return LoadedRun(run.path, model, tuple(metrics["classes"]), metrics["model"], metrics["accuracy"],
                     run.temperature, run.uncertainty)


def sentence(probabilities: dict[str, float], uncertain: bool = False) -> str:
    """The seed app's sentence for two classes; the most likely class for more; the two most likely
    when the answer is unsure."""
    top, second = sorted(probabilities, key=probabilities.get, reverse=True)[:2]
    if uncertain:
        return f"Uncertain: {top} {round(100 * probabilities[top])}% or {second} {round(100 * probabilities[second])}%."
    percent = round(100 * probabilities[top])
    if len(probabilities) == 2:
        return f"With an expression percentage of {percent}% ... the image expression is more {top}."
    return f"The image expression is most likely {top} ({percent}%)."


def answer_photos(run: LoadedRun, photos, detector: str = DEFAULT_DETECTOR) -> list[FaceAnswer]:
    """Every face of every photo (the whole photo where none is found, or with detector 'none'),
    classified in one batch. `photos` may be a generator: each photo is let go once its faces are
    cropped, so memory does not grow with the number of photos."""
    found = [face for photo in photos for face in _faces_of(photo, detector)]
    if not found:
        return []
    probs = run.probabilities(np.stack([face["pixels"] for face in found]))
    answers = []
    for face, p, unsure in zip(found, probs, run.is_uncertain(probs)):
        probabilities = {c: float(v) for c, v in zip(run.class_names, p)}
        answers.append(FaceAnswer(face["name"], face["number"], face["box"], max(probabilities, key=probabilities.get),
                                  probabilities, run.name, face["pixels"], None if unsure is None else bool(unsure),
                                  face["cautions"], face["eyes"], face["confidence"]))
    return answers


def _faces_of(photo: Photo, detector: str) -> list[dict]:
    """Each face's photo name, number, box and eyes in the original's pixels, 48x48 crop, cautions and
    detector score (the whole photo, without a box, where none is found)."""
    faces = [] if detector == "none" else find_faces(photo.image, detector)
    if not faces:
        return [{"name": photo.name, "number": 1, "box": None, "pixels": to_native(photo.image), "cautions": [],
                 "eyes": None, "confidence": None}]
    return [{"name": photo.name, "number": number, "box": [int(round(v * photo.scale)) for v in face.box],
             "pixels": face.pixels, "cautions": face.cautions(photo.scale), "confidence": face.confidence,
             "eyes": None if face.eyes is None else [[int(round(c * photo.scale)) for c in eye] for eye in face.eyes]}
            for number, face in enumerate(faces, start=1)]


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def image_files(paths: list[Path]) -> list[Path]:
    """The photos named: files as given, folders by their image files (sorted, not recursive)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"image not found: {path}")
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return files


def predict_files(run: LoadedRun, paths: list[Path], detector: str = DEFAULT_DETECTOR) -> list[FaceAnswer]:
    """Answers for every face in the photos named (files or folders); an unreadable file is a UserError naming it."""
    photos = (read_image(path.read_bytes(), str(path)) for path in image_files(paths))  # one at a time
    return answer_photos(run, photos, detector)


def as_json(answers: list[FaceAnswer]) -> str:
    """One JSON object per face: file, face, box, label, probabilities, model."""
    return json.dumps([a.record() for a in answers], indent=2)


def answers_table(answers: list[FaceAnswer]):
    """One row per face: file, face number, box, the detector's confidence, label, then one probability column
    per class."""
    import pandas as pd

    return pd.DataFrame([{"file": a.file, "face": a.face, **dict(zip("xywh", a.box or [None] * 4)),
                          "confidence": a.confidence, "label": a.label,
                          **{f"p_{c}": v for c, v in a.probabilities.items()}, "uncertain": a.uncertain,
                          "cautions": "; ".join(a.cautions), "model": a.model} for a in answers])

"""Classify ordinary photos with a finished run: find the largest face (OpenCV's bundled Haar
cascade), convert the crop to 48x48 gray exactly as training data was, and predict."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.dataset import check_pixel_count, to_8bit, to_native
from ..errors import UserError
from ..run import find_run_dirs, is_complete

MAX_SIDE = 2048  # larger photos are downscaled before detection


@dataclass
class Prediction:
    """One image's answer: where the face was, the probability of each class, and the sentence."""

    image: str
    face_found: bool
    face_box: tuple[int, int, int, int] | None  # x, y, width, height in the (downscaled) image
    probabilities: dict[str, float]
    top_class: str
    sentence: str


@dataclass
class LoadedRun:
    """A complete run's best model and what it needs to answer."""

    run_dir: Path
    model: object
    class_names: tuple[str, ...]
    model_name: str
    test_accuracy: float

    @property
    def source(self) -> str:
        """The run folder, or 'the bundled model' for the one shipped with the package."""
        from ..models import saved

        return "the bundled model" if self.run_dir == saved.BUNDLED_DIR else str(self.run_dir)


def load_run(run_dir: Path | str) -> LoadedRun:
    """Load a complete run folder's best model (`bundled`: the model shipped with the package), or raise UserError."""
    from ..models import saved

    run_dir = saved.bundled_run_dir() if str(run_dir) == "bundled" else Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if not is_complete(run_dir):
        raise UserError(f"run folder is incomplete (no complete.json): {run_dir}; finish it with the same `fer-bench run` command")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = saved.load_saved_model(run_dir / "best.keras")
    return LoadedRun(run_dir, model, tuple(metrics["classes"]), metrics["model"], metrics["accuracy"])


def choose_run(run: str | None, results: Path) -> Path:
    """The run that answers: the bundled model unless `run` names a run folder, a run id in `results`,
    or 'latest' (the run in `results` completed last). Never chosen by test accuracy."""
    from ..models import saved

    if run in (None, "bundled"):
        return saved.bundled_run_dir()
    if run == "latest":
        complete = find_run_dirs([Path(results)])[0] if Path(results).is_dir() else []
        if not complete:
            raise UserError(f"--run latest: no complete run in {results}")
        return max(complete, key=lambda d: (d / "complete.json").stat().st_mtime)
    for candidate in (Path(run), Path(results) / run):
        if candidate.is_dir():
            return candidate
    raise UserError(f"--run {run}: no such run folder or run id in {results}")


def read_image(data: bytes, name: str) -> Image.Image:
    """Decode JPEG/PNG/BMP bytes (colour or gray, any size) into an upright RGB image ≤ MAX_SIDE."""
    if not data:
        raise UserError(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode huge photos at reduced scale
        check_pixel_count(image)
        image = to_8bit(ImageOps.exif_transpose(image)).convert("RGB")
    except Image.DecompressionBombError as problem:
        raise UserError(f"{name}: the image is too large to decode safely ({problem})") from None
    except Exception:  # PIL signals non-images and truncated files with many types
        raise UserError(f"{name}: not a readable image (JPEG, PNG or BMP expected)") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


@lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def detect_face(image: Image.Image) -> tuple[int, int, int, int] | None:
    """Box (x, y, w, h) of the largest frontal face, or None when there is none."""
    gray = np.asarray(image.convert("L"))
    min_side = max(24, min(gray.shape) // 20)
    # scaleFactor 1.05 / minNeighbors 3 found 84 % of FER2013 *train* faces pasted into colour photos
    # (1.1 / 5, OpenCV's usual example, found 74 %), with no false boxes on noise
    boxes = _face_cascade().detectMultiScale(gray, scaleFactor=1.05, minNeighbors=3, minSize=(min_side, min_side))
    if len(boxes) == 0:
        return None
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
    return int(x), int(y), int(w), int(h)


def sentence(probabilities: dict[str, float]) -> str:
    """The seed app's sentence for two classes; the most likely class for more."""
    top = max(probabilities, key=probabilities.get)
    percent = round(100 * probabilities[top])
    if len(probabilities) == 2:
        return f"With an expression percentage of {percent}% ... the image expression is more {top}."
    return f"The image expression is most likely {top} ({percent}%)."


def predict_image(run: LoadedRun, image: Image.Image, name: str, detect: bool = True) -> Prediction:
    """Classify the largest face in `image` (or the whole image)."""
    from ..training import as_model_input

    box = detect_face(image) if detect else None
    crop = image.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])) if box else image
    pixels = to_native(crop)[None]
    probs = run.model.predict(as_model_input(pixels), verbose=0)[0]
    probabilities = {c: float(p) for c, p in zip(run.class_names, probs)}
    top = max(probabilities, key=probabilities.get)
    return Prediction(name, box is not None, box, probabilities, top, sentence(probabilities))


def predict_files(run: LoadedRun, paths: list[Path], detect: bool = True) -> list[Prediction]:
    """Predict every image file; a missing or unreadable file is a UserError naming it."""
    predictions = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"image not found: {path}")
        image = read_image(Path(path).read_bytes(), str(path))
        predictions.append(predict_image(run, image, str(path), detect))
    return predictions


def as_json(predictions: list[Prediction], run: LoadedRun) -> str:
    """Machine-readable predictions, with the run that answered."""
    return json.dumps({"run": run.source, "model": run.model_name, "classes": list(run.class_names),
                       "predictions": [asdict(p) for p in predictions]}, indent=2)

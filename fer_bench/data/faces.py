"""From a photo to the model's input: find every face, level its eyes, crop it the way FER2013
faces are framed, and convert the crop to 48x48 gray exactly as training images were.

`find_faces` is the one path from a photo to model input, used by `predict`, the app and
`evaluate --faces detect`. Detectors: BlazeFace (`blazeface`: MediaPipe's short-range model, its
full-range one where the first finds nothing, and that on overlapping tiles for faces too small for
both; data/blazeface.py), MTCNN (the `mtcnn` package:
TensorFlow, its weights inside the wheel); both give the eyes, nose and mouth that alignment needs.
OpenCV's Haar cascade stays available as `haar` (a square crop of its box, no alignment).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from ..errors import UserError
from .dataset import to_native

DETECTORS = ("blazeface", "mtcnn", "haar")
DEFAULT_DETECTOR = "blazeface"  # chosen by measurement: docs/photos_and_video.md
MIN_CONFIDENCE = 0.9  # MTCNN face score below which a box is not taken for a face
# FER2013's framing, measured with MTCNN on 322 FER2013 training faces (400 drawn at random, upscaled
# to 192 px; the median of each): the midpoint between the eyes sits at these fractions of the
# crop's width and height, the eyes are this fraction of the width apart, and the mouth's midpoint
# is this fraction of the width below the eyes.
FER_EYES_X, FER_EYES_Y = 0.497, 0.388
FER_EYE_DISTANCE = 0.365
FER_EYES_TO_MOUTH = 0.393
SMALL_FACE = 36  # px: a detector box narrower than 3/4 of FER2013's 48 px is upscaled into the model's input
TURNED = 0.35  # nose off the eyes' midpoint by this fraction of the eye distance: turned far (~40 degrees)


@dataclass
class Face:
    """One face: its detector box (x, y, w, h) in the photo's pixels and its 48x48 gray model input."""

    box: tuple[int, int, int, int]
    pixels: np.ndarray  # (48, 48) uint8
    confidence: float | None = None
    turn: float | None = None  # the nose's offset from the eyes' midpoint along the eye line, / eye distance
    eyes: tuple | None = None  # ((x, y) of the eye on the image's left, (x, y) of the other); None: no landmarks

    def cautions(self, scale: float = 1.0) -> list[str]:
        """Why an answer about this face is less reliable than usual (`scale`: photo pixels per box pixel)."""
        notes = []
        if min(self.box[2], self.box[3]) * scale < SMALL_FACE:
            notes.append(f"small face ({int(min(self.box[2], self.box[3]) * scale)} px; answers are less reliable "
                         f"below {SMALL_FACE} px)")
        if self.turn is not None and abs(self.turn) > TURNED:
            notes.append("face turned far from the camera (answers are less reliable)")
        return notes


@lru_cache(maxsize=1)
def _mtcnn():
    from mtcnn import MTCNN

    return MTCNN()


@lru_cache(maxsize=1)
def _haar():
    import cv2

    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def aligned_crop(image: Image.Image, left_eye, right_eye, mouth) -> np.ndarray:
    """The face rotated so its eyes are level, cropped with FER2013's framing, as 48x48 gray.

    The crop's side is the mean of what the eye distance and the eyes-to-mouth distance each imply
    (one alone misjudges faces turned sideways or tilted up and down)."""
    left, right, mouth = (np.asarray(p, dtype=float) for p in (left_eye, right_eye, mouth))
    centre = (left + right) / 2
    angle = np.arctan2(right[1] - left[1], right[0] - left[0])
    side = (np.linalg.norm(right - left) / FER_EYE_DISTANCE + np.linalg.norm(mouth - centre) / FER_EYES_TO_MOUTH) / 2
    size = max(int(round(side)), 1)
    # output pixel (u, v) of the size x size crop comes from centre + R(angle) (u - u0, v - v0) in the photo
    cos, sin = np.cos(angle), np.sin(angle)
    u0, v0 = FER_EYES_X * size, FER_EYES_Y * size
    affine = (cos, -sin, centre[0] - cos * u0 + sin * v0, sin, cos, centre[1] - sin * u0 - cos * v0)
    crop = image.transform((size, size), Image.Transform.AFFINE, affine, resample=Image.Resampling.BICUBIC,
                           fillcolor=(128, 128, 128) if image.mode == "RGB" else 128)
    return to_native(crop)


def _square_crop(image: Image.Image, box) -> np.ndarray:
    x, y, w, h = box
    return to_native(image.crop((x, y, x + w, y + h)))


def _turn(left_eye, right_eye, nose) -> float:
    """How far a face is turned sideways: the nose's offset from the eyes' midpoint, along the line
    between the eyes, as a fraction of their distance (0 frontal; about 0.5 in profile)."""
    left, right, nose = (np.asarray(p, dtype=float) for p in (left_eye, right_eye, nose))
    across = right - left
    distance = float(np.linalg.norm(across))
    return float(np.dot(nose - (left + right) / 2, across) / distance**2) if distance else 0.0


def find_faces(image: Image.Image, detector: str = DEFAULT_DETECTOR) -> list[Face]:
    """Every face in an RGB photo, left to right, each as its box and 48x48 model input."""
    if detector not in DETECTORS:
        raise UserError(f"--detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if detector == "blazeface":
        from . import blazeface

        rgb = np.asarray(image.convert("RGB"))
        found = blazeface.detect(rgb) or blazeface.detect(rgb, blazeface.FULL_RANGE) or blazeface.detect_tiled(rgb)
        faces = []
        for f in found:
            points = f.keypoints
            eyes = sorted([points["right_eye"], points["left_eye"]], key=lambda p: p[0])
            faces.append(Face(tuple(int(round(v)) for v in f.box),
                              aligned_crop(image.convert("RGB"), eyes[0], eyes[1], points["mouth"]), f.score,
                              _turn(eyes[0], eyes[1], points["nose"]), tuple(eyes)))
    elif detector == "haar":
        gray = np.asarray(image.convert("L"))
        min_side = max(24, min(gray.shape) // 20)
        boxes = _haar().detectMultiScale(gray, scaleFactor=1.05, minNeighbors=3, minSize=(min_side, min_side))
        faces = [Face(tuple(int(v) for v in b), _square_crop(image, b)) for b in boxes]
    else:
        found = _mtcnn().detect_faces(np.asarray(image.convert("RGB")))
        faces = []
        for f in found:
            if f["confidence"] < MIN_CONFIDENCE:
                continue
            points = f["keypoints"]
            mouth = (np.asarray(points["mouth_left"], float) + np.asarray(points["mouth_right"], float)) / 2
            # the image's left eye (the person's right) first, so the angle is that of the line between them
            eyes = sorted([points["left_eye"], points["right_eye"]], key=lambda p: p[0])
            faces.append(Face(tuple(int(v) for v in f["box"]), aligned_crop(image.convert("RGB"), eyes[0], eyes[1], mouth),
                              float(f["confidence"]), _turn(eyes[0], eyes[1], points["nose"]), tuple(eyes)))
    return sorted(faces, key=lambda face: (face.box[0], face.box[1]))

"""BlazeFace (MediaPipe's face detectors, Apache-2.0; the two TFLite files ship in data/detectors/ with
their licence and provenance): boxes and six keypoints (both eyes, nose tip, mouth centre, both ears).

The files hold the network only; what MediaPipe's graphs do around it is written here from their
options (face_detection*.pbtxt): the photo letterboxed into the model's square input (RGB, -1..1),
SSD anchors (offset 0.5, fixed size), boxes and keypoints decoded against them (x before y, scaled by
the input size), sigmoid scores (clipped at +-100) above a minimum, and weighted non-maximum
suppression (overlapping boxes averaged by score, IoU 0.3). The short-range model (128 px) is for faces
within ~2 m of the camera; the full-range one (192 px) also finds small, far faces.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "detectors"
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class BlazeModel:
    """One BlazeFace file and its decoding options (MediaPipe's graphs)."""

    file: str
    size: int  # square input, px
    strides: tuple[int, ...]  # one SSD layer each; consecutive equal strides share one grid
    anchors_per_layer: int  # 2: an anchor at the layer's scale and one interpolated; 1: one only
    min_score: float


SHORT_RANGE = BlazeModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5)
FULL_RANGE = BlazeModel("face_detection_full_range_sparse.tflite", 192, (4,), 1, 0.6)
SUPPRESSION_IOU = 0.3
KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")  # the person's right and left


@dataclass
class Detection:
    """A face in photo pixels: box (x, y, w, h), score, and keypoints {name: (x, y)}."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: dict[str, tuple[float, float]]


def anchors(model: BlazeModel) -> np.ndarray:
    """(n, 2) anchor centres in 0..1, in the order of the model's outputs (fixed size: width = height = 1)."""
    centres, layer = [], 0
    while layer < len(model.strides):
        stride, repeats = model.strides[layer], 1
        while layer + repeats < len(model.strides) and model.strides[layer + repeats] == stride:
            repeats += 1
        cells = int(np.ceil(model.size / stride))
        grid = (np.arange(cells) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        per_cell = np.stack([x.ravel(), y.ravel()], axis=1)
        centres.append(np.repeat(per_cell, repeats * model.anchors_per_layer, axis=0))
        layer += repeats
    return np.concatenate(centres)


@lru_cache(maxsize=2)
def _interpreter(file: str):
    from ..litert import tflite_interpreter

    return tflite_interpreter(FOLDER / file)


@lru_cache(maxsize=2)
def _anchors(model: BlazeModel) -> np.ndarray:
    return anchors(model)


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """The photo scaled into a size x size square keeping its aspect ratio, padded with black, as the
    model's -1..1 input; with (scale, pad_x, pad_y) to map square coordinates back to the photo."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
                         if scale < 1 else cv2.INTER_LINEAR)
    square = np.zeros((size, size, 3), np.float32)
    pad_x, pad_y = (size - resized.shape[1]) // 2, (size - resized.shape[0]) // 2
    square[pad_y:pad_y + resized.shape[0], pad_x:pad_x + resized.shape[1]] = resized
    return square / 127.5 - 1.0, scale, pad_x, pad_y


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with many."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def weighted_suppression(corners: np.ndarray, points: np.ndarray, scores: np.ndarray
                         ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: from the best-scored box down, every remaining box
    overlapping it by more than SUPPRESSION_IOU joins its cluster, whose box and keypoints are the
    score-weighted means (the score stays the best one)."""
    order = np.argsort(-scores)
    corners, points, scores = corners[order], points[order], scores[order]
    kept, left = [], np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not left[i]:
            continue
        cluster = left & (_iou(corners[i], corners) > SUPPRESSION_IOU)
        cluster[i] = True
        weights = scores[cluster] / scores[cluster].sum()
        kept.append((weights @ corners[cluster], np.tensordot(weights, points[cluster], axes=1), float(scores[i])))
        left &= ~cluster
    return kept


def detect(rgb: np.ndarray, model: BlazeModel = SHORT_RANGE) -> list[Detection]:
    """Every face BlazeFace finds in an RGB photo (H, W, 3 uint8), in the photo's pixels."""
    square, scale, pad_x, pad_y = letterbox(rgb, model.size)
    interpreter = _interpreter(model.file)
    with _ONE_AT_A_TIME:  # an interpreter's tensors serve one caller at a time (the app's and serve's threads)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], square[None])
        interpreter.invoke()
        outputs = sorted((d for d in interpreter.get_output_details()), key=lambda d: d["shape"][-1])
        raw_scores = interpreter.get_tensor(outputs[0]["index"])[0, :, 0].copy()
        raw = interpreter.get_tensor(outputs[1]["index"])[0].copy()
    scores = 1 / (1 + np.exp(-np.clip(raw_scores.astype(np.float64), -100, 100)))
    keep = scores >= model.min_score
    if not keep.any():
        return []
    centre = _anchors(model)[keep]
    raw, scores = raw[keep] / model.size, scores[keep]  # offsets in units of the input, anchors of size 1
    middle, half = centre + raw[:, 0:2], raw[:, 2:4] / 2
    corners = np.concatenate([middle - half, middle + half], axis=1)
    points = raw[:, 4:16].reshape(-1, 6, 2) + centre[:, None, :]
    found = []
    for box, keypoints, score in weighted_suppression(corners, points, scores):
        to_photo = lambda xy: ((xy[..., 0] * model.size - pad_x) / scale, (xy[..., 1] * model.size - pad_y) / scale)  # noqa: E731
        x0, y0 = to_photo(box[:2])
        x1, y1 = to_photo(box[2:])
        px, py = to_photo(keypoints)
        found.append(Detection((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), score,
                               {name: (float(px[k]), float(py[k])) for k, name in enumerate(KEYPOINTS)}))
    return found


TILE = 2 / 3  # each tile's side, as a share of the photo's


def detect_tiled(rgb: np.ndarray) -> list[Detection]:
    """Faces too small for either model on the whole photo (a 50 px face in a 640 px frame is 15 px of the
    full-range input): the full-range model on four overlapping tiles of two thirds of the photo each, the
    short-range one where it finds nothing; a face found in several tiles is kept once (its best score)."""
    h, w = rgb.shape[:2]
    found = []
    for y0 in (0, h - int(h * TILE)):
        for x0 in (0, w - int(w * TILE)):
            tile = rgb[y0:y0 + int(h * TILE), x0:x0 + int(w * TILE)]
            for d in detect(tile, FULL_RANGE) or detect(tile):
                x, y, bw, bh = d.box
                found.append(Detection((x + x0, y + y0, bw, bh), d.score,
                                       {k: (px + x0, py + y0) for k, (px, py) in d.keypoints.items()}))
    kept = []
    for d in sorted(found, key=lambda d: -d.score):
        corners = lambda b: np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]]])  # noqa: E731
        if not any(_iou(corners(d.box)[0], corners(k.box))[0] > SUPPRESSION_IOU for k in kept):
            kept.append(d)
    return kept

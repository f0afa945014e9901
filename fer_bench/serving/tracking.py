"""Stable face ids across a video's analysed frames.

Each detection is matched to a track by the Hungarian method (scipy's linear_sum_assignment) on a
cost that mixes box overlap and appearance. A track seen in the previous analysed frame matches a
detection whose box overlaps its own or lies within a box size of it; a track lost for up to
`reacquire_seconds` (a face that left the frame or was hidden) matches only on appearance, so a
face coming back somewhere else gets its old id back. Appearance is a 16x16 thumbnail of the
aligned 48x48 crop and the gray-level histogram of the detector box, each compared by correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

REACQUIRE_SECONDS = 2.0
MIN_SIMILARITY = 0.6  # appearance correlation a lost track needs to be re-acquired
_FORBIDDEN = 1e6


def appearance(crop: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A face's appearance vector: z-scored 16x16 thumbnail of its aligned crop, then its box's
    32-bin gray histogram (z-scored), so correlation compares both."""
    import cv2

    thumbnail = cv2.resize(crop.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA).ravel()
    histogram = np.histogram(region, bins=32, range=(0, 256))[0].astype(np.float32)
    return np.concatenate([_z(thumbnail), _z(histogram)])


def _z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() + 1e-6)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the thumbnail and histogram correlations, -1..1."""
    half = 256
    return float((np.mean(a[:half] * b[:half]) + np.mean(a[half:] * b[half:])) / 2)


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0


def centre_distance(a, b) -> float:
    """Distance between two boxes' centres in units of the first box's size."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return float(np.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2) / max(np.sqrt(aw * ah), 1.0))


@dataclass
class Track:
    """One face followed through the video."""

    id: int
    box: tuple
    look: np.ndarray
    last_seen: float
    last_step: int


class FaceTracker:
    """Gives every detection of an analysed frame the id of the face it continues (or a new one)."""

    def __init__(self, reacquire_seconds: float = REACQUIRE_SECONDS, min_similarity: float = MIN_SIMILARITY):
        self.reacquire_seconds = reacquire_seconds
        self.min_similarity = min_similarity
        self.tracks: list[Track] = []
        self.step = 0

    def update(self, time: float, boxes: list[tuple], looks: list[np.ndarray]) -> list[int]:
        """Ids for the detections of the analysed frame at `time` (seconds), in their order."""
        self.step += 1
        alive = [t for t in self.tracks if time - t.last_seen <= self.reacquire_seconds]
        cost = np.full((len(alive), len(boxes)), _FORBIDDEN)
        for i, track in enumerate(alive):
            recent = track.last_step == self.step - 1
            for j, (box, look) in enumerate(zip(boxes, looks)):
                alike = similarity(track.look, look)
                if recent and (overlap(track.box, box) > 0.1 or centre_distance(track.box, box) < 1.0):
                    cost[i, j] = 1.0 - 0.5 * overlap(track.box, box) - 0.5 * max(alike, 0.0)
                elif alike >= self.min_similarity:  # lost for a while: appearance alone, after any recent match
                    cost[i, j] = 1.5 - alike
        ids = [None] * len(boxes)
        if len(alive) and len(boxes):
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < _FORBIDDEN:
                    ids[j] = alive[i].id
                    alive[i].box, alive[i].look, alive[i].last_seen, alive[i].last_step = boxes[j], looks[j], time, self.step
        for j, (box, look) in enumerate(zip(boxes, looks)):
            if ids[j] is None:
                track = Track(len(self.tracks) + 1, box, look, time, self.step)
                self.tracks.append(track)
                ids[j] = track.id
        return ids

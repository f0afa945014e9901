"""Deterministic cartoon faces for all seven expressions, so everything runs with no download.

Each face is a head, eyes, brows, nose and mouth whose shapes carry the expression (a smile for
happy, a frown and raised inner brows for sad, a V of brows for angry, an open O for surprise, ...),
drawn at 4x and downsampled, then randomly moved, scaled, rotated, lit and noised.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .classes import FER_CLASSES
from .dataset import NATIVE_SIZE, Dataset, Split

_SCALE = 4  # drawing resolution multiplier, for anti-aliased strokes after downsampling

# Per expression: brow (inner_y, outer_y), eye half-height, mouth kind.
_EXPRESSIONS = {
    "angry": {"brow": (-7.0, -11.0), "eye": 2.0, "mouth": "tight"},
    "disgust": {"brow": (-8.0, -8.5), "eye": 1.0, "mouth": "sneer"},
    "fear": {"brow": (-13.0, -11.5), "eye": 3.5, "mouth": "wide"},
    "happy": {"brow": (-10.5, -10.5), "eye": 2.5, "mouth": "smile"},
    "neutral": {"brow": (-10.0, -10.0), "eye": 2.5, "mouth": "flat"},
    "sad": {"brow": (-12.5, -8.5), "eye": 2.0, "mouth": "frown"},
    "surprise": {"brow": (-14.0, -13.0), "eye": 3.5, "mouth": "open"},
}


def draw_face(expression: str, rng: np.random.Generator, size: int = NATIVE_SIZE) -> np.ndarray:
    """One random face of `expression` as a (size, size) uint8 array."""
    spec = _EXPRESSIONS[expression]
    s = _SCALE * size / NATIVE_SIZE  # pixels per face unit at drawing resolution
    canvas = int(size * _SCALE)
    background = int(rng.integers(20, 110))
    skin = int(rng.integers(140, 235))
    feature = int(rng.integers(0, 50))
    img = Image.new("L", (canvas, canvas), background)
    d = ImageDraw.Draw(img)

    cx = canvas / 2 + rng.uniform(-3, 3) * s
    cy = canvas / 2 + rng.uniform(-3, 3) * s
    k = rng.uniform(0.85, 1.1) * s  # face scale

    def pt(x: float, y: float) -> tuple[float, float]:
        return (cx + x * k, cy + y * k)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*pt(x0, y0), *pt(x1, y1)]

    width = max(1, int(round(1.6 * k)))
    d.ellipse(box(-17, -21, 17, 21), fill=skin)
    eye_h = spec["eye"] * rng.uniform(0.85, 1.15)
    for side in (-1, 1):
        ex = 7 * side
        d.ellipse(box(ex - 3, -4 - eye_h, ex + 3, -4 + eye_h), fill=feature)
        inner, outer = (v + rng.uniform(-0.6, 0.6) for v in spec["brow"])
        d.line([pt(3 * side, inner), pt(11 * side, outer)], fill=feature, width=width)
    d.line([pt(0, -1), pt(-1.5, 4), pt(1, 4.5)], fill=feature, width=max(1, width // 2))

    mouth = spec["mouth"]
    mw = rng.uniform(6, 8)
    curve = rng.uniform(3, 4.5)
    if mouth == "smile":
        d.arc(box(-mw, 7 - curve, mw, 7 + curve), 10, 170, fill=feature, width=width)
    elif mouth == "frown":
        d.arc(box(-mw, 11, mw, 11 + 2 * curve), 190, 350, fill=feature, width=width)
    elif mouth == "flat":
        d.line([pt(-mw, 11), pt(mw, 11)], fill=feature, width=width)
    elif mouth == "tight":
        d.line([pt(-mw * 0.6, 11), pt(mw * 0.6, 11)], fill=feature, width=2 * width)
    elif mouth == "sneer":
        d.line([pt(-mw, 12.5), pt(0, 11), pt(mw, 8.5)], fill=feature, width=width)
    elif mouth == "wide":
        d.ellipse(box(-mw, 9.5, mw, 12.5), fill=feature)
    elif mouth == "open":
        d.ellipse(box(-3.5, 7, 3.5, 15), fill=feature)

    img = img.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, fillcolor=background)
    small = np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    small = small * rng.uniform(0.75, 1.2) + rng.normal(0, 6, small.shape)
    return np.clip(small, 0, 255).astype(np.uint8)


def synthetic_split(per_class: int, seed: int, classes: tuple[str, ...] = FER_CLASSES, prefix: str = "") -> Split:
    """`per_class` faces of each class, deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    images, labels, files = [], [], []
    for label, name in enumerate(classes):
        for i in range(per_class):
            images.append(draw_face(name, rng))
            labels.append(label)
            files.append(f"{prefix}{name}/synthetic_{i:05d}.png")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64), files)


@lru_cache(maxsize=2)
def synthetic_dataset(train_per_class: int = 400, test_per_class: int = 100, seed: int = 0) -> Dataset:
    """The embedded data set `fer-bench run` uses when no --data is given (drawn once per process)."""
    return Dataset(
        source="synthetic",
        layout=f"synthetic(train={train_per_class},test={test_per_class},seed={seed})",
        class_names=FER_CLASSES,
        train=synthetic_split(train_per_class, seed, prefix="train/"),
        test=synthetic_split(test_per_class, seed + 1, prefix="test/"),
    )

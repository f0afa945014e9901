"""Uncropped development photos made from a data set's aligned face crops: each face pasted at a random
size, position and tilt into a larger frame, beside other faces' pixels blurred into a background, so a
face detector and the alignment after it can be measured against the face's known label
(`fer-bench data scenes`, then `fer-bench evaluate RUN --data SCENES --faces detect --detector ...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import UserError
from .dataset import Dataset
from .layouts import original_image

FRAME = (640, 480)
FACE_SIDES = (70, 300)  # px: the pasted face's height, drawn uniformly
TILT = 15  # degrees either way


def _background(rng: np.random.Generator, faces: np.ndarray) -> Image.Image:
    """A frame of other faces' pixels, enlarged and blurred (textured, face-coloured, no sharp face in it)."""
    tiles = faces[rng.choice(len(faces), 12)]
    grid = np.concatenate([np.concatenate(list(tiles[r * 4:(r + 1) * 4]), axis=1) for r in range(3)], axis=0)
    image = Image.fromarray(grid).convert("RGB").resize(FRAME, Image.Resampling.BILINEAR)
    return image.filter(ImageFilter.GaussianBlur(12))


def write_scenes(dataset: Dataset, source: Path, out: Path, per_class: int, seed: int = 0) -> int:
    """Write up to `per_class` scenes of each class of the data set's test (or development) part, from
    its original image files under `source`, into out/<class>/; returns how many were written."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder")
    rng = np.random.default_rng(seed)
    split, written = dataset.test, 0
    for label, name in enumerate(dataset.class_names):
        members = np.flatnonzero(split.labels == label)
        (out / name).mkdir(parents=True, exist_ok=True)
        for index in rng.permutation(members)[:per_class]:
            with Image.open(original_image(source, split.files[index])) as original:
                face = original.convert("RGB")
            side = int(rng.integers(*FACE_SIDES))
            face = face.resize((max(1, round(side * face.width / face.height)), side), Image.Resampling.BICUBIC)
            tilt = float(rng.uniform(-TILT, TILT))
            mask = Image.new("L", face.size, 255).rotate(tilt, expand=True, fillcolor=0)
            face = face.rotate(tilt, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
            frame = _background(rng, split.images)
            x = int(rng.integers(0, max(1, FRAME[0] - face.width)))
            y = int(rng.integers(0, max(1, FRAME[1] - face.height)))
            frame.paste(face, (x, y), mask)
            frame.save(out / name / f"scene_{written:05d}.jpg", quality=90)
            written += 1
    return written

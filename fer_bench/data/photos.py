"""Photos as people upload them: decoded safely (size caps, any mode and bit depth), turned upright
by their EXIF orientation, and downscaled to at most MAX_SIDE for face detection."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from ..errors import UserError
from .dataset import check_pixel_count, to_8bit

MAX_SIDE = 2048  # larger photos are downscaled before detection (boxes are reported in the original's pixels)


@dataclass
class Photo:
    """A decoded, upright RGB photo and how many original pixels one of its pixels stands for."""

    name: str
    image: Image.Image
    scale: float = 1.0


def read_image(data: bytes, name: str) -> Photo:
    """Decode JPEG/PNG/BMP bytes (colour or gray, any size) into an upright RGB photo ≤ MAX_SIDE."""
    if not data:
        raise UserError(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        original_side = max(image.size)  # the longer side, whatever the EXIF rotation
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode huge photos at reduced scale
        check_pixel_count(image)
        image = to_8bit(ImageOps.exif_transpose(image)).convert("RGB")
    except Image.DecompressionBombError as problem:
        raise UserError(f"{name}: the image is too large to decode safely ({problem})") from None
    except Exception:  # PIL signals non-images and truncated files with many types
        raise UserError(f"{name}: not a readable image (JPEG, PNG or BMP expected)") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return Photo(name, image, original_side / max(image.size))

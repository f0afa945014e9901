"""The frozen-feature cache: a frozen base without augmentation gives the same features every
epoch, so compute them once per (model, weights, input size, images, precision) and keep them."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..data.batches import predict
from ..data.dataset import as_model_input, cache_dir
from ..files import save_npz

log = logging.getLogger(__name__)
_CACHE_VERSION = "4"  # bump when the cache file's contents change


def feature_cache_path(model: str, weights_id: str, image_size: int, images_sha: str, precision: str,
                       framing: str = "fer") -> Path:
    """Cache file of one (model, weights, size, image set, precision, framing) combination."""
    key = f"{_CACHE_VERSION}|{model}|{weights_id}|{image_size}|{images_sha}|{precision}"
    key += "" if framing == "fer" else f"|{framing}"  # the files made before framing was an option stay valid
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / "features" / f"{model}-{image_size}px-{digest}.npz"


def extract_features(extractor, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run the frozen extractor over uint8 images with a progress bar; returns (n, d) float32 (any precision)."""
    log.info("extracting frozen features of %d images", len(images))
    features = predict(extractor, as_model_input(images), batch_size, verbose=1 if sys.stdout.isatty() else 2)
    return features.astype(np.float32)


def cached_features(extractor, images: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """(features, seconds it took to compute them), from the cache file or computed and stored on a miss."""
    if path.exists():
        with np.load(path) as z:
            log.info("frozen features from cache: %s", path.name)
            return z["features"], float(z["seconds"])
    started = time.perf_counter()
    features = extract_features(extractor, images)
    seconds = time.perf_counter() - started
    log.info("%d feature vectors in %.1f s (%.1f images/s)", len(images), seconds, len(images) / max(seconds, 1e-9))
    save_npz(path, features=features, seconds=np.array(seconds))
    return features, seconds

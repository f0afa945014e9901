"""Speed of the frozen-feature path, as ratios against a baseline measured in the same run.

For each transfer base: feature-extraction throughput on a sample of real images, the time of the
head's epochs on cached features of the full training set, and how that compares with one pass of
the base over those images and with one epoch of the scratch CNN (the baseline).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from ..data.batches import batches, predict
from ..data.dataset import Dataset, as_model_input
from ..models import create_model
from ..models.transfer import adapt_feature_norm
from ..training import TrainSettings, compile_for_training


def _time_fit(model, x, y, epochs: int, settings: TrainSettings) -> float:
    compile_for_training(model, settings, steps_per_epoch=1)
    model.fit(batches(x[:settings.batch_size * 2], y[:settings.batch_size * 2], settings.batch_size), shuffle=False, verbose=0)  # warm-up
    started = time.perf_counter()
    model.fit(batches(x, y, settings.batch_size, shuffle=True), shuffle=False, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def benchmark(dataset: Dataset, models: list[str], image_size: int, sample: int, head_epochs: int = 10,
              settings: TrainSettings = TrainSettings(), progress=print) -> pd.DataFrame:
    """One row per model: images/s, full-extraction seconds, head-epochs seconds and ratios."""
    k = len(dataset.class_names)
    n_train = len(dataset.train)
    y = keras.utils.to_categorical(dataset.train.labels, k)
    scratch = create_model("scratch", k, 48).full
    scratch_epoch = _time_fit(scratch, as_model_input(dataset.train.images), y, 1, settings)
    progress(f"baseline: one scratch CNN epoch (48 px) on {n_train} images: {scratch_epoch:.1f} s")
    rng = np.random.default_rng(0)
    picked = rng.choice(n_train, size=min(sample, n_train), replace=False)
    rows = []
    for name in models:
        built = create_model(name, k, image_size, weights="none")
        pixels = as_model_input(dataset.train.images[picked])
        predict(built.extractor, pixels[:8])  # warm-up (graph tracing)
        started = time.perf_counter()
        feats = predict(built.extractor, pixels, 64)
        per_second = len(picked) / (time.perf_counter() - started)
        full_feats = feats[np.resize(np.arange(len(feats)), n_train)]  # head cost depends on count and width only
        adapt_feature_norm(built, full_feats)
        head_seconds = _time_fit(built.head, full_feats, y, head_epochs, settings)
        extraction = n_train / per_second
        rows.append({
            "model": name,
            "image_size": image_size,
            "feature_dim": feats.shape[1],
            "extract_images_per_s": per_second,
            "full_extraction_s": extraction,
            f"head_{head_epochs}_epochs_s": head_seconds,
            "head_epochs_vs_one_base_pass": head_seconds / extraction,
            "head_epochs_vs_scratch_epoch": head_seconds / scratch_epoch,
            "extraction_vs_scratch_epoch": extraction / scratch_epoch,
        })
        progress(f"{name}: {per_second:.1f} images/s at {image_size} px; {head_epochs} head epochs {head_seconds:.1f} s "
                 f"= {head_seconds / extraction:.2%} of one pass through the base")
    return pd.DataFrame(rows)

"""Speed of the frozen-feature path, as ratios against a baseline measured in the same run.

For each transfer base and input size: feature-extraction throughput on a sample of real images
(and the GFLOP/s it achieves against this machine's convolution/matmul peak, probed in the same
run), the time of the head's epochs on cached features of the full training set, and how that
compares with one pass of the base over those images and with one epoch of the scratch CNN (the
baseline).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from ..data.batches import batches, predict
from ..data.dataset import Dataset, as_model_input
from ..models import create_model
from ..models.flops import flops_per_image
from ..models.transfer import adapt_feature_norm
from ..precision import precision_policy
from ..training import TrainSettings, compile_for_training
from .training_speed import peak_gflops


def _time_fit(model, x, y, epochs: int, settings: TrainSettings) -> float:
    compile_for_training(model, settings, steps_per_epoch=1)
    model.fit(batches(x[:settings.batch_size * 2], y[:settings.batch_size * 2], settings.batch_size), shuffle=False, verbose=0)  # warm-up
    started = time.perf_counter()
    model.fit(batches(x, y, settings.batch_size, shuffle=True), shuffle=False, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def benchmark(dataset: Dataset, models: list[str], image_sizes: list[int], sample: int, head_epochs: int = 10,
              settings: TrainSettings = TrainSettings(), progress=print, precision: str = "float32") -> pd.DataFrame:
    """One row per model and size: images/s, GFLOP/s against the peak, full-extraction seconds,
    head-epochs seconds and ratios. Extraction computes in `precision`, the head in float32."""
    k = len(dataset.class_names)
    n_train = len(dataset.train)
    y = keras.utils.to_categorical(dataset.train.labels, k)
    scratch = create_model("scratch", k, 48).full
    scratch_epoch = _time_fit(scratch, as_model_input(dataset.train.images), y, 1, settings)
    progress(f"baseline: one scratch CNN epoch (48 px) on {n_train} images: {scratch_epoch:.1f} s")
    peak = peak_gflops(precision)["peak_gflops"]
    progress(f"peak ({precision}): {peak:.0f} GFLOP/s (the faster of a matmul and a 3x3 convolution probe)")
    rng = np.random.default_rng(0)
    picked = rng.choice(n_train, size=min(sample, n_train), replace=False)
    rows = []
    for name in models:
        for image_size in image_sizes:
            rows.append(_one_base(dataset, name, image_size, picked, y, head_epochs, settings, precision,
                                  scratch_epoch, peak))
            progress(f"{name}: {rows[-1]['extract_images_per_s']:.1f} images/s at {image_size} px "
                     f"({rows[-1]['peak_fraction']:.0%} of peak); {head_epochs} head epochs "
                     f"{rows[-1][f'head_{head_epochs}_epochs_s']:.1f} s = "
                     f"{rows[-1]['head_epochs_vs_one_base_pass']:.2%} of one pass through the base")
    return pd.DataFrame(rows)


def _one_base(dataset, name, image_size, picked, y, head_epochs, settings, precision, scratch_epoch, peak) -> dict:
    n_train = len(dataset.train)
    with precision_policy(precision):
        built = create_model(name, len(dataset.class_names), image_size, weights="none")
    pixels = as_model_input(dataset.train.images[picked])
    predict(built.extractor, pixels[:8])  # warm-up (graph tracing)
    started = time.perf_counter()
    feats = predict(built.extractor, pixels, 64)
    per_second = len(picked) / (time.perf_counter() - started)
    full_feats = feats[np.resize(np.arange(len(feats)), n_train)].astype(np.float32)  # head cost: count and width
    adapt_feature_norm(built, full_feats)
    head_seconds = _time_fit(built.head, full_feats, y, head_epochs, settings)
    extraction = n_train / per_second
    achieved = flops_per_image(built.extractor) * per_second / 1e9
    return {
        "model": name,
        "image_size": image_size,
        "precision": precision,
        "feature_dim": feats.shape[1],
        "extract_images_per_s": per_second,
        "achieved_gflops": achieved,
        "peak_gflops": peak,
        "peak_fraction": achieved / peak,
        "full_extraction_s": extraction,
        f"head_{head_epochs}_epochs_s": head_seconds,
        "head_epochs_vs_one_base_pass": head_seconds / extraction,
        "head_epochs_vs_scratch_epoch": head_seconds / scratch_epoch,
        "extraction_vs_scratch_epoch": extraction / scratch_epoch,
    }

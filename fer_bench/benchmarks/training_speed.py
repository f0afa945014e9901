"""Training speed against the machine's own limit, everything measured in one process.

The limit is probed first: a large matrix multiplication and a large 3x3 convolution in the
precision asked for (the faster of the two is the peak). Then each model trains on random pixels
with the harness's own compile (optimizer, schedule, loss) and augmentation; achieved GFLOP/s is
3 x its forward FLOPs per image (forward + backward) x images per second. `against_seed` also times
the seed's own pipeline in the same process: images resized to 244 px and scaled outside the model,
a plain Keras model of the seed's layers, plain `fit`, batch 32.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from ..config import RunConfig, resolve
from ..data.batches import batches
from ..data.dataset import as_model_input
from ..memory import peak_resident_mb
from ..models import create_model, model_info
from ..models.augment import with_augmentation
from ..models.flops import flops_per_image
from ..precision import precision_policy
from ..training import TrainSettings, compile_for_training
from ..training.harness import train_settings

SEED_SIZE = 244
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _rate(step, flops: float, seconds: float = 2.0) -> float:
    """GFLOP/s of `step()` (which must block until done), repeated for about `seconds` after a warm-up."""
    step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return flops * count / (time.perf_counter() - started) / 1e9


def peak_gflops(precision: str) -> dict[str, float]:
    """This machine's measured matmul and convolution GFLOP/s in `precision` (the larger is the peak)."""
    import tensorflow as tf

    dtype = _DTYPES[precision]
    rng = np.random.default_rng(0)
    n = 2048
    a, b = (tf.constant(rng.standard_normal((n, n)), dtype=dtype) for _ in range(2))
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), "float32")))
    images = tf.constant(rng.standard_normal((32, 56, 56, 128)), dtype=dtype)
    kernel = tf.constant(rng.standard_normal((3, 3, 128, 128)) * 0.01, dtype=dtype)
    conv = tf.function(lambda: tf.reduce_sum(tf.cast(tf.nn.conv2d(images, kernel, 1, "SAME"), "float32")))
    result = {"matmul_gflops": _rate(lambda: matmul().numpy(), 2 * n**3),
              "conv_gflops": _rate(lambda: conv().numpy(), 2 * 32 * 56 * 56 * 9 * 128 * 128)}
    result["peak_gflops"] = max(result.values())
    return result


def _random_data(n: int, classes: int = 7):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    return images, keras.utils.to_categorical(rng.integers(0, classes, n), classes)


class _EpochClock(keras.callbacks.Callback):
    """Seconds of the last epoch, from its first step to its last: what an epoch costs inside a long
    training, without `fit`'s own start-up and tear-down (seconds per call, not per epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.started


def _timed_epoch(model, x, y, batch_size: int, pipeline: bool = True) -> float:
    """Images per second of one epoch of `fit` over (x, y), after a warm-up of three batches: fed as the
    harness feeds it (data/batches) or, with `pipeline=False`, as NumPy arrays the seed's way."""
    def feed(x, y, shuffle):
        if pipeline:
            return {"x": batches(x, y, batch_size, shuffle=shuffle), "shuffle": False}
        return {"x": x, "y": y, "batch_size": batch_size, "shuffle": shuffle}

    model.fit(**feed(x[:batch_size * 3], y[:batch_size * 3], False), verbose=0)
    clock = _EpochClock()
    model.fit(**feed(x, y, True), epochs=1, verbose=0, callbacks=[clock])
    return len(x) / clock.seconds


def _images_per_second(model, x, y, settings: TrainSettings) -> float:
    compile_for_training(model, settings, steps_per_epoch=-(-len(x) // settings.batch_size))
    return _timed_epoch(model, x, y, settings.batch_size)


def model_images_per_second(name: str, image_size: int | None, precision: str, recipe: str, n: int) -> dict:
    """Training throughput of one model as fer_bench trains it (the recipe's optimizer and augmentation)."""
    cfg = resolve(RunConfig(model=name, image_size=image_size, recipe=recipe, precision=precision, classes="all",
                            weights="none" if model_info(name).transfer else None))
    settings = train_settings(cfg)
    images, y = _random_data(n)
    with precision_policy(cfg.precision_used):
        built = create_model(name, 7, cfg.image_size, weights="none", width=cfg.width)
        flops = flops_per_image(built.full)
        model = with_augmentation(built.full, cfg.augment, cfg.seed)
        rate = _images_per_second(model, as_model_input(images), y, settings)
    return {"model": name, "image_size": cfg.image_size, "precision": cfg.precision_used, "recipe": recipe,
            "batch_size": cfg.batch_size, "images_per_second": rate, "train_gflops_per_image": 3 * flops / 1e9,
            "achieved_gflops": 3 * flops * rate / 1e9}


def seed_style_images_per_second(n: int) -> float:
    """The seed's way, for comparison: resize to 244 px and rescale outside the model (in memory, as
    its directory reader hands batches over), the seed's layers as a plain model with Keras' own
    BatchNormalization and Dropout, Keras' SGD, batch 32."""
    import tensorflow as tf

    from ..models.scratch import seed_layers

    images, y = _random_data(n)
    x = tf.image.resize(images[..., None], (SEED_SIZE, SEED_SIZE), method="nearest").numpy().astype("float32") / 255
    inputs = keras.Input((SEED_SIZE, SEED_SIZE, 1))
    model = keras.Model(inputs, seed_layers(inputs, 7, batch_norm=keras.layers.BatchNormalization,
                                           dropout=keras.layers.Dropout))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    return _timed_epoch(model, x, y, batch_size=32, pipeline=False)


RATES_FILE = "train_rates.json"


def measured_rates() -> dict[str, float]:
    """GFLOP/s that `benchmark --train` measured on this machine: achieved training rates by
    'model|precision|recipe', and the peak (matmul/convolution probe) by 'peak|precision'."""
    import json

    from ..data.dataset import cache_dir

    try:
        return json.loads((cache_dir() / RATES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def remember_rates(table: pd.DataFrame) -> None:
    """Add a benchmark's rates and peaks to this machine's cache (the latest measurement of a model and
    precision wins)."""
    from ..data.dataset import cache_dir
    from ..files import write_json

    rates = measured_rates()
    rates.update({f"{m}|{p}|{r}": float(g) for m, p, r, g in
                  zip(table["model"], table["precision"], table["recipe"], table["achieved_gflops"])})
    rates.update({f"peak|{p}": float(g) for p, g in zip(table["precision"], table["peak_gflops"])})
    write_json(cache_dir() / RATES_FILE, rates)


def train_benchmark(models: list[str], sizes: list[int | None], precisions: list[str], recipe: str = "strong",
                    against_seed: bool = False, images: int = 2048, progress=print) -> pd.DataFrame:
    """One row per (model, size, precision): images/s, achieved and peak GFLOP/s, peak fraction, memory."""
    peaks = {}
    rows = []
    for precision in precisions:
        peaks[precision] = peak_gflops(precision)
        progress(f"peak ({precision}): matmul {peaks[precision]['matmul_gflops']:.0f} GFLOP/s, "
                 f"3x3 convolution {peaks[precision]['conv_gflops']:.0f} GFLOP/s")
        for name in models:
            for size in sizes:
                row = model_images_per_second(name, size, precision, recipe, images)
                row.update(peak_gflops=peaks[precision]["peak_gflops"],
                           peak_fraction=row["achieved_gflops"] / peaks[precision]["peak_gflops"])
                if against_seed:
                    seed = seed_style_images_per_second(min(images, 1024))
                    row.update(seed_images_per_second=seed, speedup=row["images_per_second"] / seed)
                row["process_peak_resident_mb"] = peak_resident_mb()
                rows.append(row)
                progress(f"{name} {row['image_size']} px {row['precision']}: {row['images_per_second']:.0f} images/s, "
                         f"{row['achieved_gflops']:.0f} GFLOP/s = {row['peak_fraction']:.0%} of peak"
                         + (f"; {row['speedup']:.2f}x the seed-style pipeline" if against_seed else ""))
    table = pd.DataFrame(rows)
    remember_rates(table)
    return table

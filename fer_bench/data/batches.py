"""In-memory arrays as tf.data pipelines with tf.data's autotuner switched off.

Given NumPy arrays, Keras builds a tf.data pipeline whose autotuner runs in a background thread that
wakes on a timer; the timer's period doubles the longer the process runs. Keras makes a new
iterator for every epoch, every validation pass and every `predict` call, and destroying an
iterator waits for that thread to wake: profiled here (py-spy), a vggnet training process slept in
`RootDataset::Iterator::~Iterator` at epoch ends, and epochs took up to twice their compute time.
Batches of arrays already in memory need no tuning, so these pipelines run without it.
"""

from __future__ import annotations

import numpy as np


def _untuned(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def batches(x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 32, shuffle: bool = False,
            per_batch=None):
    """(x, y) or x alone in batches, reshuffled every epoch if `shuffle` (from TensorFlow's global seed);
    `per_batch` (a tf.data map over (x, y) batches) runs anew every epoch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if per_batch is not None:
        dataset = dataset.map(per_batch)
    return _untuned(dataset.prefetch(1))


def predict(model, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
    """The model's outputs for in-memory images, in order: up to one batch in one compiled call (a
    photo's faces: `predict`'s pipeline would cost 5x the model itself for one face), more through the
    untuned pipeline; an exported model (serving.exported) on the arrays."""
    if getattr(model, "takes_arrays", False):
        return model.predict(x, batch_size)
    import tensorflow as tf

    if 0 < len(x) <= batch_size and not tf.distribute.has_strategy():  # (under MirroredStrategy: each replica's)
        return np.asarray(model.predict_on_batch(x))
    return model.predict(batches(x, batch_size=batch_size), verbose=verbose)

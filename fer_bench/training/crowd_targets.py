"""Training targets from a crowd's votes (FER+): the four schemes of Barsoum et al. (2016).

    labels       one-hot majority labels (FER+'s "majority"; on other data the data's own labels)
    votes        cross-entropy against each image's vote distribution ("crossentropy")
    probability  every epoch, each image's label drawn from its vote distribution ("probability")
    multilabel   every class with at least MULTILABEL_SHARE of the votes is an acceptable answer: the
                 loss is -log of the probability mass on them ("multi-target")

Votes of a single tagger are dropped as outliers first, as FER+ does; the distribution is over the
run's classes only. Validation always uses the one-hot majority labels, so checkpoint choice and
every score mean the same whatever the scheme.
"""

from __future__ import annotations

import keras
import numpy as np

from ..errors import UserError

MULTILABEL_SHARE = 0.3


def vote_distribution(votes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's votes over the run's classes, single votes dropped, normalised (the one-hot label
    where no vote is left)."""
    kept = np.where(votes > 1, votes, 0).astype(np.float64)
    total = kept.sum(axis=1, keepdims=True)
    one_hot = np.eye(votes.shape[1])[labels]
    return np.where(total > 0, kept / np.maximum(total, 1), one_hot).astype(np.float32)


def fit_targets(scheme: str, votes: np.ndarray | None, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The fit targets of one scheme: one-hot labels, vote distributions, or multilabel masks (normalised)."""
    if scheme == "labels":
        return keras.utils.to_categorical(labels, num_classes)
    if votes is None:
        raise UserError(f"--targets {scheme} needs a crowd's votes for every training image (FER+ data); "
                        "this data has labels only")
    distribution = vote_distribution(votes, labels)
    if scheme in ("votes", "probability"):
        return distribution
    accepted = (distribution >= MULTILABEL_SHARE).astype(np.float32)
    accepted[accepted.sum(axis=1) == 0, :] = np.eye(num_classes, dtype=np.float32)[labels[accepted.sum(axis=1) == 0]]
    return accepted / accepted.sum(axis=1, keepdims=True)


def draw_labels(x, y):
    """tf.data map for 'probability': one-hot labels drawn from the batch's distributions (new each epoch)."""
    import tensorflow as tf

    drawn = tf.random.categorical(tf.math.log(tf.maximum(y, 1e-12)), 1)[:, 0]
    return x, tf.one_hot(drawn, tf.shape(y)[-1], dtype=y.dtype)


@keras.saving.register_keras_serializable(package="fer_bench")
class AcceptableClassesLoss(keras.losses.Loss):
    """'multilabel': -log of the predicted probability mass on the acceptable classes (targets > 0)."""

    def call(self, y_true, y_pred):
        mass = keras.ops.sum(keras.ops.where(y_true > 0, y_pred, 0.0), axis=-1)
        return -keras.ops.log(keras.ops.clip(mass, 1e-7, 1.0))

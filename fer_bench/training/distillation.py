"""Distillation: a student trains on a mix of the labels and a teacher run's calibrated probabilities.

The teacher is any complete run (an ensemble too) on the same classes and training images that was
validated on the same images as the student: a teacher that trained on the student's validation
images would carry them into the student and make its validation (and checkpoint choice)
optimistic; a teacher chosen on the test split would carry the test split in. Its probabilities of
the training split are computed once and cached (keyed by the teacher's model and calibration, by content, and the images).
The student's targets on its fit images are (1 - w) x one-hot label + w x teacher probabilities;
validation keeps the plain labels, so checkpoint choice and every score stay as for any run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import validation_difference
from ..data.batches import predict
from ..data.dataset import Dataset, cache_dir
from ..errors import UserError
from ..files import save_npz
from ..reporting.calibration import apply_temperature
from ..run_folder import RunFolder

log = logging.getLogger(__name__)


def check_teacher(teacher_dir: Path, cfg, class_names: tuple[str, ...], train_sha256: str) -> None:
    """UserError unless the teacher knows the run's classes, trained on its training images (by
    fingerprint) and was validated on the run's validation images (not on the test split)."""
    teacher = RunFolder(teacher_dir)
    config, data, metrics = teacher.config, teacher.data, teacher.metrics
    name = teacher_dir.name
    if tuple(metrics["classes"]) != tuple(class_names):
        raise UserError(f"teacher {name} knows {', '.join(metrics['classes'])}, the run {', '.join(class_names)}")
    if data["train_sha256"] != train_sha256:
        raise UserError(f"teacher {name} was trained on other images than this run's training split")
    if config["val_split"] == "test":
        raise UserError(f"teacher {name} chose its checkpoint on the test split; it would carry the test split "
                        "into the student")
    difference = validation_difference(config, asdict(cfg))
    if difference:
        raise UserError(f"teacher {name} was validated on other images ({difference}): it trained on some of this "
                        "run's validation images; distil from a teacher with the same validation split (the same "
                        "--val-seed, which defaults to --seed, when it is carved from train)")


def teacher_probabilities(teacher_dir: Path, dataset: Dataset) -> np.ndarray:
    """The teacher's calibrated class probabilities of every training image (cached)."""
    from ..data.dataset import as_model_input
    from ..models.saved import load_saved_model

    key = f"{RunFolder(teacher_dir).content_key()}-{dataset.fingerprint()['train_sha256'][:16]}"
    path = cache_dir() / "teachers" / f"{teacher_dir.name}-{key}.npz"
    if path.exists():
        return np.load(path)["probabilities"]
    log.info("distillation: teacher %s predicts %d training images (cached for later runs)", teacher_dir.name,
             len(dataset.train))
    teacher = RunFolder(teacher_dir)
    probs = predict(load_saved_model(teacher.file(RunFolder.MODEL)), as_model_input(dataset.train.images))
    if teacher.temperature is not None:
        probs = apply_temperature(probs, teacher.temperature)
    save_npz(path, probabilities=probs.astype(np.float32))
    return probs.astype(np.float32)


def distilled_targets(one_hot: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) x one-hot labels + weight x teacher probabilities, row by row."""
    return ((1 - weight) * one_hot + weight * teacher).astype(np.float32)

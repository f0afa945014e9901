"""FER2013's traps made visible: exact duplicate images within and across splits, dedupe, and the
validation split carved from train so that identical images never straddle it."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np

from .dataset import Dataset, Split, split_validation


def image_hashes(split: Split) -> list[str]:
    """Content hash of every decoded 48x48 image (pixel-identical images hash equal)."""
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in split.images]


def duplicate_report(dataset: Dataset) -> dict:
    """Extra copies within each split, and images of one split that also occur in another."""
    hashes = {name: image_hashes(split) for name, split in dataset.splits().items()}
    splits = dataset.splits()
    report = {"within": {}, "across": {}, "label_conflicts": {}}
    for name, values in hashes.items():
        report["within"][name] = sum(n - 1 for n in Counter(values).values() if n > 1)
    names = list(hashes)
    for i, later in enumerate(names):
        for earlier in names[:i]:
            labels_of = {}
            for h, label in zip(hashes[earlier], splits[earlier].labels):
                labels_of.setdefault(h, set()).add(int(label))
            shared = [(h, int(label)) for h, label in zip(hashes[later], splits[later].labels) if h in labels_of]
            report["across"][f"{later} in {earlier}"] = len(shared)
            report["label_conflicts"][f"{later} in {earlier}"] = sum(label not in labels_of[h] for h, label in shared)
    return report


def carve_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices into the training split: stratified and seeded, with every group of
    pixel-identical images on one side (FER2013's train split holds 1,236 extra copies; split image by
    image, ~7 % of validation would have a twin in the fit set)."""
    return split_validation(dataset.train.labels, fraction, seed, groups=image_hashes(dataset.train))


def test_twins_of_train(dataset: Dataset) -> np.ndarray:
    """Per test image: whether it is pixel-identical to some training image."""
    train = set(image_hashes(dataset.train))
    return np.array([h in train for h in image_hashes(dataset.test)], dtype=bool)


def twin_counts(dataset: Dataset, fit_idx: np.ndarray | None, val_idx: np.ndarray | None) -> dict:
    """How many validation images have a pixel-identical twin in the fit set (None when validation is
    not carved from train), and how many test images have one in the training split."""
    counts = {"test_images_with_a_twin_in_train": int(test_twins_of_train(dataset).sum())}
    if val_idx is not None:
        train = image_hashes(dataset.train)
        fit = {train[i] for i in fit_idx}
        counts["validation_images_with_a_twin_in_fit"] = sum(train[i] in fit for i in val_idx)
    return counts


def drop_test_duplicates(dataset: Dataset) -> Dataset:
    """The dataset without the test images that are pixel-identical to some training image."""
    keep = ~test_twins_of_train(dataset)
    return replace(dataset, test=dataset.test.subset(np.flatnonzero(keep)), dropped_duplicates=int((~keep).sum()))


def inspect_lines(dataset: Dataset) -> list[str]:
    """A human-readable report: layout, counts per split and class, formats, unreadable, duplicates."""
    import pandas as pd

    counts = pd.DataFrame(dataset.counts()).T
    counts["total"] = counts.sum(axis=1)
    lines = [f"source: {dataset.source}", f"layout: {dataset.layout}", "", "images per split and class:",
             counts.to_markdown(), "", "image formats found (before conversion to 48x48 gray):"]
    lines += [f"  {fmt}: {n}" for fmt, n in sorted(dataset.formats.items(), key=lambda item: -item[1])]
    lines.append(f"unreadable: {len(dataset.skipped)}")
    lines += [f"  {entry}" for entry in dataset.skipped[:20]]
    if len(dataset.skipped) > 20:
        lines.append(f"  ... and {len(dataset.skipped) - 20} more")
    report = duplicate_report(dataset)
    lines.append("exact duplicates (identical pixels):")
    lines += [f"  within {name}: {n} extra copies" for name, n in report["within"].items()]
    for pair, n in report["across"].items():
        later, earlier = pair.split(" in ")
        total = len(dataset.splits()[later])
        conflicts = report["label_conflicts"][pair]
        lines.append(f"  {n} {later} images also appear in {earlier} ({n / max(total, 1):.1%} of {later}; "
                     f"{conflicts} of them with a different label)")
    return lines

"""Score a finished run (or the bundled model) on another labelled data set: any supported layout
(its test split), a folder holding only test/, a single folder of class sub-folders, or a CSV.

Classes are matched by name and alias; `classes` restricts scoring to some of the run's classes
(argmax among them only). Results go to `<run>/evaluations/<data-id>/`, never over the run's own
files, and the folder appears only when complete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.classes import parse_classes
from ..data.dataset import Split, as_model_input, read_labelled_folder, to_native
from ..data.faces import DEFAULT_DETECTOR
from ..errors import UserError
from ..files import folder_replacing, write_json
from ..run_folder import RunFolder
from .calibration import apply_temperature, expected_calibration_error, plot_reliability
from .evaluation import evaluate_predictions, predict_with_tta, predictions_table, write_scores


@dataclass
class LabelledSet:
    """Images to score, with their own class names."""

    source: str
    layout: str
    split: Split
    class_names: tuple[str, ...]
    skipped: list[str]


def open_labelled_set(data: Path, test_usage: str = "PrivateTest") -> LabelledSet:
    """The images of `data` to score: the test split of a data set, else every labelled image."""
    from ..data.sources import is_dataset, open_dataset

    data = Path(data)
    if is_dataset(data):
        dataset = open_dataset(data, test_usage)
        layout = dataset.layout if "test split" in dataset.layout else f"{dataset.layout} (test split)"
        return LabelledSet(str(data.resolve()), layout, dataset.test, dataset.class_names, dataset.skipped)
    split, class_names, skipped, layout = read_labelled_folder(data)
    return LabelledSet(str(data.resolve()), layout, split, class_names, skipped)


def _match_classes(labelled: LabelledSet, run_classes: tuple[str, ...], wanted: tuple[str, ...] | None):
    """(images, labels into `scored`, scored class names, their columns in the run's output, the crowd's
    votes for the scored classes or None). Without `wanted`, the data's images of the run's classes are
    scored (a happy/sad run on a seven-class set: its happy and sad images)."""
    scored = wanted or tuple(c for c in run_classes if c in labelled.class_names)
    unknown_to_run = [c for c in wanted if c not in run_classes] if wanted else []
    if unknown_to_run:
        both = [c for c in run_classes if c in labelled.class_names]
        hint = f" (here: --classes {','.join(both)} scores without it)" if len(both) >= 2 else ""
        raise UserError(f"class {unknown_to_run[0]!r} is not one the run knows ({', '.join(run_classes)}); "
                        f"pass --classes with classes it knows{hint}")
    missing = [c for c in scored if c not in labelled.class_names]
    if missing:
        raise UserError(f"the data has no images of class {missing[0]!r}")
    if len(scored) < 2:
        raise UserError(f"the data and the run share {len(scored)} class(es) ({', '.join(scored) or 'none'}; the run "
                        f"knows {', '.join(run_classes)}); scoring needs at least two")
    keep = np.isin(np.asarray(labelled.class_names)[labelled.split.labels], scored)
    names = np.asarray(labelled.class_names)[labelled.split.labels[keep]]
    labels = np.array([scored.index(n) for n in names], dtype=np.int64)
    files = [f for f, k in zip(labelled.split.files, keep) if k]
    votes = None if labelled.split.votes is None else \
        labelled.split.votes[keep][:, [labelled.class_names.index(c) for c in scored]]
    return labelled.split.images[keep], labels, files, scored, [run_classes.index(c) for c in scored], votes


def crowd_agreement(probs: np.ndarray, votes: np.ndarray) -> dict:
    """How the calibrated probabilities match the crowd's vote distribution (FER+): cross-entropy and
    KL divergence in nats against it, and the calibration error against the crowd's share for the top class."""
    crowd = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1)
    p = np.clip(probs, 1e-7, 1.0)
    cross_entropy = float(-(crowd * np.log(p)).sum(axis=1).mean())
    entropy = float(-(crowd * np.log(np.where(crowd > 0, crowd, 1.0))).sum(axis=1).mean())
    top = probs.argmax(axis=1)
    confidence, agreement = probs.max(axis=1), crowd[np.arange(len(top)), top]
    bins = np.minimum((confidence * 10).astype(int), 9)
    gap = sum(abs(confidence[bins == b].mean() - agreement[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    return {"cross_entropy": cross_entropy, "kl_divergence": cross_entropy - entropy,
            "calibration_error_vs_crowd_share": float(gap), "images_with_votes": int(len(votes))}


def data_id(labelled: LabelledSet, scored: tuple[str, ...], tta: str, faces: str) -> str:
    """Folder name of one evaluation: the data's name and a hash of its pixels, labels, classes, TTA and face mode."""
    h = hashlib.sha256(np.ascontiguousarray(labelled.split.images).tobytes())
    h.update(labelled.split.labels.tobytes())
    h.update(("|".join(labelled.class_names) + "|" + "|".join(scored) + "|" + tta + "|" + faces).encode())
    name = Path(labelled.source).stem.replace(" ", "_")[:40] or "data"
    return f"{name}-{h.hexdigest()[:10]}"


def detected_faces(labelled: LabelledSet, files: list[str], detector: str) -> tuple[np.ndarray, int]:
    """The 48x48 input of each uncropped photo through the same path as `predict` (its most confident
    face, aligned; the whole photo where none is found); returns (images, photos without a face)."""
    from ..data.faces import find_faces
    from ..data.layouts import original_image
    from ..data.photos import read_image

    if Path(labelled.source).is_file():
        raise UserError("--faces detect needs a folder of photos, not a CSV of 48x48 faces")
    images, missed = [], 0
    for name in files:
        photo = read_image(original_image(Path(labelled.source), name).read_bytes(), name)
        faces = find_faces(photo.image, detector)
        if faces:
            images.append(max(faces, key=lambda f: (f.confidence or 0, f.box[2] * f.box[3])).pixels)
        else:
            missed += 1
            images.append(to_native(photo.image))
    return np.stack(images), missed


def evaluate_run(loaded, data: Path, out_root: Path, classes: str | None = None, tta: str = "none",
                 test_usage: str = "PrivateTest", faces: str = "off", detector: str = DEFAULT_DETECTOR
                 ) -> tuple[Path, dict]:
    """Score `loaded` (a predict.LoadedRun) on `data` with its calibrated probabilities; `faces`
    'detect' finds and aligns the face in each (uncropped) photo first. Returns (evaluation folder, metrics)."""
    labelled = open_labelled_set(data, test_usage)
    wanted = parse_classes(classes) if classes else None
    images, labels, files, scored, columns, votes = _match_classes(labelled, loaded.class_names, wanted)
    if not len(images):
        raise UserError(f"no images to score in {data}")
    missed = None
    if faces == "detect":
        images, missed = detected_faces(labelled, files, detector)
    raw = predict_with_tta(loaded.model, as_model_input(images), tta)
    calibrated = raw if loaded.temperature is None else apply_temperature(raw, loaded.temperature)
    raw, probs = (p[:, columns] / p[:, columns].sum(axis=1, keepdims=True) for p in (raw, calibrated))
    # (argmax and probabilities among the scored classes)
    metrics, per_class, cm = evaluate_predictions(labels, probs, scored, labels)
    metrics["calibration"] = {"temperature": loaded.temperature, "ece_before": expected_calibration_error(raw, labels),
                              "ece_after": expected_calibration_error(probs, labels)}
    if votes is not None:
        metrics["crowd"] = crowd_agreement(probs, votes)
    if missed is not None:
        metrics["face_detection"] = {"detector": detector, "photos_without_a_face": missed}
    metrics.pop("majority_class"), metrics.pop("majority_baseline_accuracy")  # no training labels here
    restricted = len(scored) < len(loaded.class_names)
    left_out = sorted(set(labelled.class_names) - set(scored))
    metrics.update(run=loaded.source, model=loaded.model_name, data=labelled.source, layout=labelled.layout,
                   classes=list(scored), tta=tta, faces=faces, skipped_unreadable=len(labelled.skipped),
                   restricted_to_classes=restricted, classes_left_out=left_out)
    target = out_root / data_id(labelled, scored, tta, faces if faces == "off" else f"detect:{detector}")
    title = f"{loaded.model_name} on {Path(labelled.source).name}"
    with folder_replacing(target, ".evaluating-") as work:
        write_json(work / RunFolder.METRICS, metrics)
        write_scores(work, scored, per_class, cm, predictions_table(files, labels, probs, scored), title)
        plot_reliability(raw, labels, loaded.temperature or 1.0, work / RunFolder.RELIABILITY, title)
    return target, json.loads((target / RunFolder.METRICS).read_text())

"""One run, start to finish: resolve the config, load data, train, evaluate, write the run folder.

A run folder `results/<id>/` holds everything needed to trust and redo the run. Its id is made
from the resolved config and the data fingerprint, so the same command finds its own folder:
complete (`complete.json`, written last) → nothing to do; interrupted → resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..config import RunConfig, resolve, resolve_val_split
from ..data.classes import classes_tag, parse_classes
from ..data.dataset import Dataset, select_classes
from ..data.integrity import carve_validation, drop_test_duplicates, twin_counts
from ..data.sources import open_dataset, parse_also_train, with_training_sources
from ..errors import UserError
from ..files import StorageError, write_json
from ..run_folder import (
    COMPLETE_MARKER,
    RESULTS_FORMAT,
    content_key,
    find_complete_run,
    finetune_record,
    has_start_records,
    is_complete,
    run_config_record,
    run_lock,
)

log = logging.getLogger(__name__)


def load_run_data(cfg: RunConfig) -> Dataset:
    """The data set of a resolved config: read (cached), optionally deduplicated, class-selected."""
    dataset = open_dataset(cfg.data, cfg.test_usage)
    if dataset.skipped:
        message = f"{len(dataset.skipped)} unreadable images (first: {dataset.skipped[0]})"
        if cfg.strict:
            raise UserError(f"{message}; fix them or run without --strict to skip them")
        log.warning("warning: skipped %s", message)
    if cfg.dedupe:
        dataset = drop_test_duplicates(dataset)
        log.info("dedupe: dropped %d test images that also occur in train", dataset.dropped_duplicates)
    dataset = select_classes(dataset, parse_classes(cfg.classes))
    if cfg.also_train:
        extras = [(path, open_dataset(path, cfg.test_usage), weight)
                  for path, weight in parse_also_train(cfg.also_train)]
        dataset = with_training_sources(dataset, extras)
    return dataset


def run_id(cfg: RunConfig, fingerprint: dict) -> str:
    """Readable id (model, classes, size, seed) plus a short hash of what the run is: the identity
    options as asked for (not as this machine resolved them), the data by content and the results format."""
    from ..models import model_info
    from ..training.features import weights_key

    identity = cfg.identity()
    identity["weights"] = weights_key(cfg)  # a weights file counts by its content
    if cfg.teacher is not None:
        identity["teacher"] = content_key(Path(cfg.teacher))  # by its model and calibration, wherever it is
    identity.update({k: v for k, v in fingerprint.items() if k.endswith("_sha256")})
    identity.update(finetune_record(cfg), results_format=RESULTS_FORMAT)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    variant = f"-{cfg.variant}" if model_info(cfg.model).transfer else ""
    tag = classes_tag(parse_classes(cfg.classes))
    return f"{cfg.model}{variant}-{tag}-{cfg.image_size}px-s{cfg.seed}-{digest}"


def duplicate_record(cfg: RunConfig, dataset: Dataset) -> dict:
    """What data.json says about identical images: validation images with a twin in the fit set (0 by
    construction when validation is carved from train) and test images with a twin in train."""
    split = carve_validation(dataset, cfg.val_fraction, cfg.validation_seed()) if cfg.val_split == "train" else (None, None)
    return twin_counts(dataset, *split)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("fer-bench", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "pandas", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def fetch_pretrained_weights(cfg: RunConfig) -> None:
    """Make sure a transfer run's pretrained weights are there (ImageNet's in Keras' cache, downloading them
    if they can be), so the run id counts them by their content; one clear error if they cannot be had."""
    from ..models import model_info
    from ..models.transfer import resolve_weights_file

    info = model_info(cfg.model)
    if info.transfer and cfg.weights == info.pretrained:
        resolve_weights_file(info, cfg.weights, cfg.width, cfg.image_size)


RESUMES_FILE = "resumes.json"


def record_resume(run_dir: Path, cfg: RunConfig) -> None:
    """Append this invocation (time, machine, precision, devices, libraries) to the run's resumes.json;
    refuse to resume in another precision than the run started in unless the config allows it."""
    started_in = json.loads((run_dir / "config.json").read_text()).get("precision_used")
    if started_in is not None and started_in != cfg.precision_used and not cfg.allow_precision_change:
        raise UserError(f"{run_dir.name} started in {started_in} and this machine would resume it in "
                        f"{cfg.precision_used}; pass --precision {started_in}, or --allow-precision-change to "
                        "resume it anyway (recorded in resumes.json)")
    path = run_dir / RESUMES_FILE
    resumes = json.loads(path.read_text()) if path.exists() else []
    resumes.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.node(),
                    "precision_used": cfg.precision_used, "devices": cfg.devices, "libraries": library_versions()})
    write_json(path, resumes)


def write_start_records(run_dir: Path, cfg: RunConfig, spec: "RunSpec") -> None:
    """What a run is, recorded once when it starts: its data, its libraries, then its config (last, so
    a folder with config.json has all three)."""
    write_json(run_dir / "data.json", {**spec.fingerprint, "duplicates": duplicate_record(cfg, spec.dataset)})
    write_json(run_dir / "environment.json", library_versions())
    write_json(run_dir / "config.json", run_config_record(cfg))


@dataclass(frozen=True)
class RunSpec:
    """A run as prepared, the one source of what it is: the resolved config (recipe and model defaults,
    its validation split, its teacher's folder; options that do not apply set to None), its data, the
    data's fingerprint and the run id made from them."""

    cfg: RunConfig
    dataset: Dataset
    fingerprint: dict
    run_id: str


def prepare_run(cfg: RunConfig, results: Path = Path("results"), load: Callable[[RunConfig], Dataset] = load_run_data,
                fetch_weights: bool = True) -> RunSpec:
    """Resolve `cfg`, load its data (`load`, e.g. a memoised loader), check its teacher and identify
    every input by content. `fetch_weights=False` (planning) leaves ImageNet files as they are."""
    cfg = resolve(cfg)
    if fetch_weights:
        fetch_pretrained_weights(cfg)
    dataset = load(cfg)
    cfg = resolve_val_split(cfg, dataset.validation is not None)
    fingerprint = dataset.fingerprint()
    if cfg.teacher is not None:
        from ..training.distillation import check_teacher

        cfg = replace(cfg, teacher=str(find_complete_run(cfg.teacher, results, "--teacher")))
        check_teacher(Path(cfg.teacher), cfg, dataset.class_names, fingerprint["train_sha256"])
    return RunSpec(cfg, dataset, fingerprint, run_id(cfg, fingerprint))


def execute(cfg: RunConfig, output: Path = Path("results"), force: bool = False, callbacks: tuple = ()) -> Path:
    """Run (or resume, or find) the run described by `cfg`; returns its complete run folder.

    One process at a time trains a run (a file lock); a run that fails on the user's input
    before its first epoch leaves no folder behind. `callbacks` (Keras callbacks) watch every
    training epoch; one that raises leaves the run resumable, never complete."""
    spec = prepare_run(cfg, output)
    cfg, dataset = spec.cfg, spec.dataset
    run_dir = Path(output) / spec.run_id
    if is_complete(run_dir) and not force:
        log.info("already complete: %s (use --force to redo it)", run_dir)
        if json.loads((run_dir / "config.json").read_text()).get("tta") != cfg.tta:
            from ..training.harness import rescore_tta

            with run_lock(run_dir):
                rescore_tta(cfg, dataset, run_dir)
        return run_dir
    with run_lock(run_dir):
        if is_complete(run_dir) and not force:  # finished by another process while we looked
            return run_dir
        resuming = not force and has_start_records(run_dir)
        if not resuming:  # new, forced, or killed before its start records were whole: start afresh
            for item in run_dir.iterdir():
                if item.name != ".lock":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        log.info("%s run folder %s", "resuming" if resuming else "new", run_dir)
        if resuming:  # what the run is was recorded when it started; a resume is added, never rewritten
            record_resume(run_dir, cfg)
        else:
            write_start_records(run_dir, cfg, spec)

        from ..training.harness import train_and_evaluate

        started = time.perf_counter()
        try:
            summary = train_and_evaluate(cfg, dataset, run_dir, callbacks)
        except UserError as error:
            if not resuming and not isinstance(error, StorageError):  # a bad input: nothing worth keeping
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if dataset.training_sources:
            score_elsewhere(run_dir, cfg.test_usage,
                            [(source["source"], ",".join(source["classes"])) for source in dataset.training_sources])
        summary["wall_seconds_this_invocation"] = time.perf_counter() - started
        summary["resumed"] = resuming
        write_json(run_dir / COMPLETE_MARKER, summary)
    return run_dir


def score_elsewhere(run_dir: Path, test_usage: str, data: list[tuple[str, str | None]]) -> None:
    """Score a trained run on other labelled data sets, each (path, classes: a comma list, or None for
    the run's classes), into the run's evaluations/: each --also-train source's own
    test part (its development part where it has none; a mixed test set would hide where it fails),
    an experiment's `evaluate` sets."""
    from ..reporting.scoring import evaluate_run
    from ..serving.predict import load_trained

    loaded = load_trained(run_dir)
    for path, classes in data:
        classes = classes or ",".join(loaded.class_names)  # the data's images of the run's classes
        _, metrics = evaluate_run(loaded, Path(path), run_dir / "evaluations", classes, "none", test_usage)
        log.info("%s on %s (%s): accuracy %.4f, balanced accuracy %.4f", run_dir.name, path,
                 metrics["layout"], metrics["accuracy"], metrics["balanced_accuracy"])


def scored_on(run_dir: Path) -> set[str]:
    """The data sets (resolved paths) a run has been scored on in its evaluations/."""
    return {str(Path(json.loads(f.read_text())["data"]).resolve())
            for f in (run_dir / "evaluations").glob("*/metrics.json")}


def fit_uncertainty(run_dir: Path, data: list[str]) -> dict:
    """Choose when a complete run's answers say they are unsure (reporting/uncertainty.py) on labelled
    development sets `data` (each scored into evaluations/ first where it is not yet); writes
    uncertainty.json and uncertainty.png into the run folder and returns the record."""
    import numpy as np
    import pandas as pd

    from ..reporting.uncertainty import UNCERTAINTY_FILE, fit_thresholds, plot_confidence

    if not is_complete(run_dir):
        raise UserError(f"not a complete run folder: {run_dir}")
    wanted = [str(Path(p).resolve()) for p in data]
    for path in wanted:
        if not Path(path).exists():
            raise UserError(f"data path does not exist: {path}")
    config = json.loads((run_dir / "config.json").read_text())
    if missing := [p for p in wanted if p not in scored_on(run_dir)]:
        score_elsewhere(run_dir, config.get("test_usage", "PrivateTest"), [(p, None) for p in missing])
    sets = {}
    for metrics_file in sorted((run_dir / "evaluations").glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        if (str(Path(metrics["data"]).resolve()) in wanted and metrics.get("tta") == "none"
                and metrics.get("faces", "off") == "off"):
            table = pd.read_csv(metrics_file.parent / "predictions.csv")
            classes = list(metrics["classes"])
            labels = np.array([classes.index(c) for c in table["true"]])
            sets[Path(metrics["data"]).name] = (table[[f"p_{c}" for c in classes]].to_numpy(), labels)
    record = {**fit_thresholds(sets), "fitted_on": sorted(sets)}
    write_json(run_dir / UNCERTAINTY_FILE, record)
    plot_confidence(sets, record, run_dir / "uncertainty.png")
    return record


def load_recorded_run(run_dir: Path, data: str | None = None) -> tuple[RunConfig, Dataset]:
    """The config a complete run recorded and its data set (from `data` if given, else where it was
    trained), checked to be the very images (and order) the run was trained, validated and scored on."""
    from dataclasses import fields

    if not is_complete(run_dir):
        raise UserError(f"not a complete run folder: {run_dir}")
    recorded = json.loads((run_dir / "config.json").read_text())
    cfg = RunConfig(**{f.name: recorded.get(f.name, f.default) for f in fields(RunConfig)})
    if data is not None:
        cfg = replace(cfg, data=str(data))
    dataset = load_run_data(cfg)
    recorded_data, found = json.loads((run_dir / "data.json").read_text()), dataset.fingerprint()
    for split in ("train", "validation", "test"):  # train too: its order decides the validation images
        if recorded_data.get(f"{split}_sha256") != found.get(f"{split}_sha256"):
            raise UserError(f"the {split} images at {cfg.data or 'the synthetic source'} are not those "
                            f"{run_dir.name} was {'scored' if split == 'test' else 'trained and validated'} on "
                            "(in content or order); pass --data with the run's own data")
    return cfg, dataset


def rescore_run(run_dir: Path, tta: str) -> dict:
    """Score a complete run's checkpoint on its own test set under test-time augmentation `tta`
    (no training); returns its updated metrics."""
    from ..training.harness import rescore_tta

    cfg, dataset = load_recorded_run(run_dir)
    with run_lock(run_dir):
        rescore_tta(replace(cfg, tta=tta), dataset, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def calibrate_run(run_dir: Path, data: str | None = None) -> dict:
    """Fit (again) a complete run's temperature on its validation split; returns the calibration record."""
    from ..training.harness import calibrate

    cfg, dataset = load_recorded_run(run_dir, data)
    with run_lock(run_dir):
        return calibrate(cfg, dataset, run_dir)

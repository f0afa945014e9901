"""One run, start to finish: resolve the config, load data, train, evaluate, write the run folder.

A run folder `results/<id>/` holds everything needed to trust and redo the run. Its id is made
from the resolved config and the data fingerprint, so the same command finds its own folder:
complete (`complete.json`, written last) → nothing to do; interrupted → resume.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..config import RunConfig, resolve, resolve_val_split
from ..data.classes import parse_classes
from ..data.dataset import Dataset, select_classes
from ..data.integrity import carve_validation, drop_test_duplicates, twin_counts
from ..data.sources import open_dataset, parse_also_train, with_training_sources
from ..errors import UserError
from ..files import StorageError
from ..run_folder import RunFolder, find_run, run_config_record, run_id

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


def record_resume(run: RunFolder, cfg: RunConfig) -> None:
    """Append this invocation (time, machine, precision, devices, libraries) to the run's resumes.json;
    refuse to resume in another precision than the run started in unless the config allows it."""
    started_in = run.config.get("precision_used")
    if started_in is not None and started_in != cfg.precision_used and not cfg.allow_precision_change:
        raise UserError(f"{run.name} started in {started_in} and this machine would resume it in "
                        f"{cfg.precision_used}; pass --precision {started_in}, or --allow-precision-change to "
                        f"resume it anyway (recorded in {RunFolder.RESUMES})")
    run.record_resume({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.node(),
                       "precision_used": cfg.precision_used, "devices": cfg.devices, "libraries": library_versions()})


def start_records(spec: "RunSpec") -> dict[str, dict]:
    """What a run is, recorded once when it starts: its data, its libraries, its config."""
    return {RunFolder.DATA: {**spec.fingerprint, "duplicates": duplicate_record(spec.cfg, spec.dataset)},
            RunFolder.ENVIRONMENT: library_versions(), RunFolder.CONFIG: run_config_record(spec.cfg)}


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

        cfg = replace(cfg, teacher=str(find_run(cfg.teacher, results, "--teacher").path))
        check_teacher(Path(cfg.teacher), cfg, dataset.class_names, fingerprint["train_sha256"])
    return RunSpec(cfg, dataset, fingerprint, run_id(cfg, fingerprint))


def execute(cfg: RunConfig, output: Path = Path("results"), force: bool = False, callbacks: tuple = ()) -> Path:
    """Run (or resume, or find) the run described by `cfg`; returns its complete run folder.

    One process at a time trains a run (a file lock); a run that fails on the user's input
    before its first epoch leaves no folder behind. `callbacks` (Keras callbacks) watch every
    training epoch; one that raises leaves the run resumable, never complete. A complete run is
    never changed (its test-time augmentation scores are asked for with `fer-bench evaluate RUN`)."""
    spec = prepare_run(cfg, output)
    cfg, dataset = spec.cfg, spec.dataset
    run = RunFolder(Path(output) / spec.run_id)
    if run.is_complete() and not force:
        log.info("already complete: %s (use --force to redo it)", run.path)
        return run.path
    records = start_records(spec)  # before any folder exists: a validation split that cannot be made is refused here
    with run.lock():
        if run.is_complete() and not force:  # finished by another process while we looked
            return run.path
        resuming = not force and run.has_start_records()
        if not resuming:  # new, forced, or killed before its start records were whole: start afresh
            run.clear()
        log.info("%s run folder %s", "resuming" if resuming else "new", run.path)
        if resuming:  # what the run is was recorded when it started; a resume is added, never rewritten
            record_resume(run, cfg)
        else:
            run.write_start_records(records)

        from ..training.harness import train_and_evaluate

        started = time.perf_counter()
        try:
            summary = train_and_evaluate(cfg, dataset, run.path, callbacks)
        except UserError as error:
            if not resuming and not isinstance(error, StorageError):  # a bad input: nothing worth keeping
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        if dataset.training_sources:
            score_elsewhere(run, cfg.test_usage,
                            [(source["source"], ",".join(source["classes"])) for source in dataset.training_sources])
        summary["wall_seconds_this_invocation"] = time.perf_counter() - started
        summary["resumed"] = resuming
        run.mark_complete(summary)
    return run.path


def score_elsewhere(run: RunFolder, test_usage: str, data: list[tuple[str, str | None]]) -> None:
    """Score a trained run on other labelled data sets, each (path, classes: a comma list, or None for
    the run's classes), into the run's evaluations/: each --also-train source's own
    test part (its development part where it has none; a mixed test set would hide where it fails),
    an experiment's `evaluate` sets."""
    from ..reporting.scoring import evaluate_run
    from ..serving.predict import load_trained

    loaded = load_trained(run)
    for path, classes in data:
        classes = classes or ",".join(loaded.class_names)  # the data's images of the run's classes
        _, metrics = evaluate_run(loaded, Path(path), run.file(RunFolder.EVALUATIONS), classes, "none", test_usage)
        log.info("%s on %s (%s): accuracy %.4f, balanced accuracy %.4f", run.name, path,
                 metrics["layout"], metrics["accuracy"], metrics["balanced_accuracy"])


def scored_on(run: RunFolder) -> set[str]:
    """The data sets (resolved paths) a run has been scored on in its evaluations/."""
    return {str(Path(metrics["data"]).resolve()) for _, metrics in run.evaluations() if not metrics.get("own_test")}

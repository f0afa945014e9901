"""An ensemble of finished runs as a run of its own: the members' calibrated probabilities averaged.

`make_ensemble` checks that the members answer the same question on the same images (classes,
train and test data, validation split), joins their best models into one Keras model
(`models.averaging`), scores it on the test set exactly as a trained run is scored (metrics with
intervals, per-class scores, confusion matrix, predictions, a temperature fitted on the shared
validation split, TTA) and writes a normal run folder. Its cost is the sum of its members' training
time. `compare`, `evaluate`, `predict` and `app` take it like any run.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..config import TTA_MODES, validation_difference, validation_images
from ..data.batches import predict
from ..errors import UserError
from ..files import folder_replacing, save_model, write_json
from ..run_folder import RESULTS_FORMAT, RunFolder, ensemble_id, find_run
from .finished import load_recorded_run
from .run import library_versions

log = logging.getLogger(__name__)

# what members must share besides classes and validation images: the same training and test images
SHARED_DATA = ("train_sha256", "test_sha256")


def member_dirs(runs: list[str], results: Path) -> list[RunFolder]:
    """The complete run folders named (as every command names a run), without repeats, in id order."""
    found = []
    for run in runs:
        member = find_run(run, results, "ensemble member")
        if member.is_stale():
            raise UserError(f"run {member.name} was written in another results format; run it again first")
        found.append(member)
    found = sorted(set(found), key=lambda d: d.name)
    if len(found) < 2:
        raise UserError("an ensemble needs at least two different runs")
    return found


def check_compatible(members: list[RunFolder], configs: list[dict], metrics: list[dict]) -> None:
    """UserError unless no member is inside another and every member has the same classes, the same train
    and test images and the same validation images (so none of them trained on the images the ensemble
    is calibrated on)."""
    names = {m.name for m in members}
    for member, config in zip(members, configs):
        inside = names & set(config.get("members", []))
        if inside:
            raise UserError(f"{sorted(inside)[0]} is already a member of {member.name}; name each run once")
    first, first_data = members[0], members[0].data
    for other, config, other_metrics in zip(members[1:], configs[1:], metrics[1:]):
        if other_metrics["classes"] != metrics[0]["classes"]:
            raise UserError(f"{other.name} has classes {other_metrics['classes']}, {first.name} {metrics[0]['classes']}: "
                            "an ensemble's members must answer the same question")
        data = other.data
        for key in SHARED_DATA:
            if data[key] != first_data[key]:
                raise UserError(f"{other.name} and {first.name} were trained or tested on different images "
                                f"({key.removesuffix('_sha256')} data differs)")
        difference = validation_difference(config, configs[0])
        if difference:
            raise UserError(f"{other.name} and {first.name} were validated on different images ({difference}): one "
                            "trained on the other's validation images, so the ensemble could not be calibrated or "
                            "judged on them honestly; ensemble runs with the same validation split (train members "
                            "of different --seed with one --val-seed)")


def _shared_or_each(values: list):
    """The one value all members share, else the list of each member's value (in member order)."""
    return values[0] if all(v == values[0] for v in values) else values


def ensemble_config(configs: list[dict], members: list[RunFolder], cfg) -> dict:
    """config.json of an ensemble: each option its members share as that value, each other one as the list
    of the members' values (so `compare` shows how they differ), then what makes it an ensemble."""
    keys = sorted(set().union(*configs) - {"members", "results_format"})
    merged = {key: _shared_or_each([c.get(key) for c in configs]) for key in keys}
    seeds = merged.pop("seed")
    if isinstance(seeds, list):
        merged["member_seeds"] = seeds
    # its seed is its validation split's (what compare pairs and pools by; what re-scoring splits by)
    merged.update(model="ensemble", members=[m.name for m in members], data=cfg.data, seed=cfg.validation_seed(),
                  val_seed=None, tta=cfg.tta, precision_used=cfg.precision_used, results_format=RESULTS_FORMAT)
    return merged


def make_ensemble(runs: list[str], output: Path = Path("results"), tta: str | None = None, force: bool = False) -> Path:
    """Write (or find) the run folder of the ensemble of `runs`; returns it. `tta` defaults to the
    first member's test-time augmentation. The folder appears under its final name only when complete."""
    from ..models.averaging import average_of_calibrated
    from ..models.saved import load_saved_model
    from ..training.harness import (
        StageData,
        pixels_of,
        score_test_set,
        validation_description,
    )

    if tta is not None and tta not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    members = member_dirs(runs, output)
    configs = [m.config for m in members]
    member_metrics = [m.metrics for m in members]
    check_compatible(members, configs, member_metrics)
    image_size = "+".join(sorted({str(c["image_size"]) for c in configs}, key=int))
    validation_seed = validation_images(configs[0]).get("validation seed", configs[0]["seed"])
    run_dir = Path(output) / ensemble_id(members, configs[0]["classes"], image_size, validation_seed)
    if RunFolder(run_dir).is_complete() and not force:
        log.info("already complete: %s (use --force to redo it)", run_dir)
        return run_dir

    cfg, dataset = load_recorded_run(members[0])
    precisions = [c.get("precision_used") or "float32" for c in configs]
    # (a global precision policy only shapes layers built anew; the members' layers keep their own)
    cfg = replace(cfg, model="ensemble", tta=tta or cfg.tta or "none",
                  precision_used=precisions[0] if len(set(precisions)) == 1 else "float32")
    temperatures = [member.temperature for member in members]
    for member, temperature in zip(members, temperatures):
        if temperature is None:
            log.warning("warning: %s has no calibration; its raw probabilities enter the average", member.name)
    model = average_of_calibrated([load_saved_model(m.file(RunFolder.MODEL)) for m in members], temperatures)
    data = StageData(cfg, dataset, pixels_of(dataset))
    log.info("ensemble of %d runs: scoring %d validation and %d test images", len(members), len(data.y_val),
             len(dataset.test))
    probs, val_probs = predict(model, data.x_test), predict(model, data.x_val)

    with folder_replacing(run_dir, ".ensemble-") as work:
        metrics = score_test_set(work, cfg, dataset, model, probs, val_probs, data.y_val.argmax(axis=1), data.fit_labels,
                                 run_dir.name)
        val_correct = val_probs.argmax(axis=1) == data.y_val.argmax(axis=1)
        metrics.update(
            model="ensemble",
            variant=None,
            classes=list(dataset.class_names),
            image_size=_shared_or_each([c["image_size"] for c in configs]),
            precision=_shared_or_each(precisions),
            members=[{"run": m.name, "model": c["model"], "accuracy": mm["accuracy"],
                      "best_val_accuracy": mm["best_val_accuracy"], "temperature": t,
                      "total_train_seconds": mm["total_train_seconds"]}
                     for m, c, mm, t in zip(members, configs, member_metrics, temperatures)],
            validation=validation_description(cfg),
            fit_images=len(data.y_fit),
            validation_images=len(data.y_val),
            best_val_accuracy=float(val_correct.mean()),
            trainable_params=sum(mm.get("trainable_params", 0) for mm in member_metrics),
            total_params=sum(mm.get("total_params", 0) for mm in member_metrics),
            train_seconds=sum(mm["train_seconds"] for mm in member_metrics),
            feature_extraction_seconds=sum(mm.get("feature_extraction_seconds", 0.0) for mm in member_metrics),
            total_train_seconds=sum(mm["total_train_seconds"] for mm in member_metrics),
        )
        save_model(work / RunFolder.MODEL, model)
        folder = RunFolder(work)
        folder.write_start_records({RunFolder.DATA: members[0].data, RunFolder.ENVIRONMENT: library_versions(),
                                    RunFolder.CONFIG: ensemble_config(configs, members, cfg)})
        write_json(folder.file(RunFolder.METRICS), metrics)
        folder.mark_complete({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1",
                                                      "majority_baseline_accuracy", "total_train_seconds")})
    return run_dir

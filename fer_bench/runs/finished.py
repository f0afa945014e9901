"""What is done with a finished run, never changing its records: scoring it on its own test set under
test-time augmentation (into evaluations/; on other data sets: runs.run.score_elsewhere), exporting it
as ONNX or TFLite with a parity check, fitting the temperature of a run that
has none, choosing when its answers say they are unsure, and shipping it as the bundled model."""

from __future__ import annotations

import logging
import shutil
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data.dataset import Dataset
from ..errors import UserError, first_line
from ..files import folder_replacing, write_json
from ..run_folder import BUNDLED_DIR, RunFolder
from .run import library_versions, load_run_data, score_elsewhere, scored_on

log = logging.getLogger(__name__)


def fit_uncertainty(run: RunFolder, data: list[str]) -> dict:
    """Choose when a complete run's answers say they are unsure (reporting/uncertainty.py) on labelled
    development sets `data` (each scored into evaluations/ first where it is not yet); writes
    uncertainty.json and uncertainty.png into the run folder and returns the record."""
    import numpy as np
    import pandas as pd

    from ..reporting.uncertainty import fit_thresholds, plot_confidence

    wanted = [str(Path(p).resolve()) for p in data]
    for path in wanted:
        if not Path(path).exists():
            raise UserError(f"data path does not exist: {path}")
    if missing := [p for p in wanted if p not in scored_on(run)]:
        score_elsewhere(run, run.config.get("test_usage", "PrivateTest"), [(p, None) for p in missing])
    sets = {}
    for folder, metrics in run.evaluations():
        if (not metrics.get("own_test") and str(Path(metrics["data"]).resolve()) in wanted and metrics.get("tta") == "none"
                and metrics.get("faces", "off") == "off"):
            table = pd.read_csv(folder / RunFolder.PREDICTIONS)
            classes = list(metrics["classes"])
            labels = np.array([classes.index(c) for c in table["true"]])
            sets[Path(metrics["data"]).name] = (table[[f"p_{c}" for c in classes]].to_numpy(), labels)
    record = {**fit_thresholds(sets), "fitted_on": sorted(sets)}
    write_json(run.file(RunFolder.UNCERTAINTY), record)
    plot_confidence(sets, record, run.file(RunFolder.UNCERTAINTY_PLOT))
    return record


def load_recorded_run(run: RunFolder, data: str | None = None) -> tuple[RunConfig, Dataset]:
    """The config a complete run recorded and its data set (from `data` if given, else where it was
    trained), checked to be the very images (and order) the run was trained, validated and scored on."""
    recorded = run.config
    cfg = RunConfig(**{f.name: recorded.get(f.name, f.default) for f in fields(RunConfig)})
    if data is not None:
        cfg = replace(cfg, data=str(data))
    dataset = load_run_data(cfg)
    recorded_data, found = run.data, dataset.fingerprint()
    for split in ("train", "validation", "test"):  # train too: its order decides the validation images
        if recorded_data.get(f"{split}_sha256") != found.get(f"{split}_sha256"):
            raise UserError(f"the {split} images at {cfg.data or 'the synthetic source'} are not those "
                            f"{run.name} was {'scored' if split == 'test' else 'trained and validated'} on "
                            "(in content or order); pass --data with the run's own data")
    return cfg, dataset


def rescore(run: RunFolder, tta: str, data: str | None = None) -> tuple[Path, dict]:
    """Score a complete run's checkpoint on its own test set under test-time augmentation `tta`, into
    evaluations/own-test-tta-<tta>/ (the run's records are left as they are); returns (folder, metrics)."""
    from ..models.saved import load_saved_model
    from ..precision import precision_policy
    from ..training.harness import tta_metrics

    cfg, dataset = load_recorded_run(run, data)
    target = run.file(RunFolder.EVALUATIONS) / f"own-test-tta-{tta}"
    with precision_policy(cfg.precision_used or "float32"):
        metrics = {"run": run.name, "own_test": True, "data": cfg.data or "synthetic faces", "tta": tta,
                   "test_images": len(dataset.test),
                   **tta_metrics(load_saved_model(run.file(RunFolder.MODEL)), dataset, tta)}
    with folder_replacing(target, ".evaluation-") as work:
        write_json(work / RunFolder.METRICS, metrics)
    return target, metrics


def calibrate_run(run: RunFolder, data: str | None = None) -> dict:
    """Fit the temperature of a complete run that has none (runs from before calibration existed) on its
    validation split; returns the calibration record. A run that has one keeps it: records are written once."""
    from ..training.harness import calibrate

    if run.file(RunFolder.CALIBRATION).exists():
        raise UserError(f"{run.name} is calibrated already (temperature {run.temperature:.3f}, fitted on its "
                        f"validation split when it was trained); a run's records are written once")
    cfg, dataset = load_recorded_run(run, data)
    with run.lock():
        return calibrate(cfg, dataset, run.path)


# What the bundled model ships of its run: every record but the per-image predictions and the feature head
BUNDLE_FILES = (RunFolder.CONFIG, RunFolder.DATA, RunFolder.ENVIRONMENT, RunFolder.METRICS, RunFolder.PER_CLASS,
                RunFolder.CONFUSION, RunFolder.CONFUSION_PLOT, RunFolder.HISTORY, RunFolder.CURVES,
                RunFolder.CALIBRATION, RunFolder.RELIABILITY, RunFolder.UNCERTAINTY, RunFolder.UNCERTAINTY_PLOT,
                "MODEL_CARD.md", RunFolder.COMPLETE)


def name_data_by_fingerprint(folder: Path) -> None:
    """Replace the training machine's data paths in a shipped run's config.json and data.json by the
    data's folder names and content fingerprints, which mean the same on every machine."""
    shipped = RunFolder(folder)
    config, data = shipped.config, shipped.data
    if config.get("data"):
        name = Path(config["data"]).name
        config["data"] = f"{name} (fingerprint: train {data['train_sha256']}, test {data['test_sha256']})"
        data["source"] = name
    for source in data.get("also_trained_on", []):  # --also-train sources: by folder name and content too
        source["source"] = Path(source["source"]).name
    if config.get("also_train"):
        config["also_train"] = ",".join(f"{Path(item.rsplit(':', 1)[0]).name}:{item.rsplit(':', 1)[1]}"
                                        for item in config["also_train"].split(","))
    write_json(shipped.file(RunFolder.CONFIG), config)
    write_json(shipped.file(RunFolder.DATA), data)


def write_bundle(run: RunFolder, target: Path = BUNDLED_DIR) -> Path:
    """Copy a complete run into `target` as the bundled model: its record files and its best model
    without optimizer state (a third of the size), computing in float32 (runs on every CPU), written
    beside and renamed into place; then that model as TFLite (parity-checked), which `predict` answers
    with without importing TensorFlow."""
    from ..models.saved import in_float32, load_saved_model
    from ..serving.predict import BUNDLED_TFLITE

    with folder_replacing(target, ".bundle-") as work:
        in_float32(load_saved_model(run.file(RunFolder.MODEL))).save(work / RunFolder.MODEL)
        for name in BUNDLE_FILES:
            if run.file(name).exists():
                shutil.copy2(run.file(name), work / name)
        name_data_by_fingerprint(work)
        (work / "SOURCE").write_text(f"{run.name}\n")
    export_run(RunFolder(target), "tflite", target / BUNDLED_TFLITE)
    return target


PARITY_FACES = 200
# An export is written only when it answers as the Keras model does on the parity faces
# (float16 weights, True: the bundled MobileFaceNet is 6.7e-3 / 99 % apart on synthetic cartoon faces and
# 1.7e-3 / 100 % on its own real test faces; a wrong export is 0.1-0.6 apart)
PARITY = {False: {"max_abs_difference": 1e-4, "argmax_agreement": 1.0},
          True: {"max_abs_difference": 1e-2, "argmax_agreement": 0.99}}


def parity_faces(run: RunFolder) -> tuple[np.ndarray, str]:
    """Up to PARITY_FACES faces to check an export on: the run's own test images (a seeded draw), or
    synthetic faces of every class where the run's data is not here (the bundled model)."""
    from ..data.synthetic import synthetic_split

    if not run.is_bundled:
        try:
            test = load_recorded_run(run)[1].test
            pick = np.sort(np.random.default_rng(0).permutation(len(test))[:PARITY_FACES])
            return test.images[pick], f"{len(pick)} images of the run's own test split"
        except UserError as error:
            log.warning("warning: the run's data is not here (%s); checking on synthetic faces", error)
    faces = synthetic_split(PARITY_FACES // 7 + 1, seed=0).images[:PARITY_FACES]
    return faces, f"{len(faces)} synthetic faces of the seven expressions (the run's data is not here)"


def export_run(run: RunFolder, fmt: str, out: Path | None = None, float16: bool = False) -> tuple[Path, dict]:
    """Write a run's model as ONNX (tf2onnx) or TFLite (TensorFlow's converter; `float16` weights) with its
    sidecar, both only after the file answered as the run's Keras model on its parity faces (max |Δ
    probability| and argmax agreement within PARITY, recorded in the sidecar); returns (file, sidecar)."""
    from ..data.batches import predict
    from ..data.dataset import as_model_input
    from ..files import atomic_path
    from ..models.saved import computes_in, in_float32, inference_model, load_saved_model
    from ..serving.exported import ExportedModel, file_sha256, sidecar_path

    if fmt not in ("onnx", "tflite"):
        raise UserError(f"--format must be onnx or tflite, got {fmt!r}")
    if float16 and fmt != "tflite":
        raise UserError("--float16 applies to --format tflite")
    target = Path(out) if out is not None else Path(f"{run.name}{'-float16' if float16 else ''}.{fmt}")
    if target.suffix != f".{fmt}":
        raise UserError(f"the exported file's name must end in .{fmt}, got {target.name}")
    model = inference_model(load_saved_model(run.file(RunFolder.MODEL)))  # (older runs: made training-free here)
    precision = computes_in(model)  # a run trained in bfloat16 or float16 computes so; the converters need float32
    exported = model if precision == "float32" else in_float32(model)
    faces, described = parity_faces(run)
    x = as_model_input(faces)
    expected = predict(exported, x)
    with atomic_path(target) as work:
        _convert(exported, fmt, float16, work)
        try:
            answered = ExportedModel(work).predict(x)
        except Exception as error:  # onnxruntime or LiteRT refusing what the converter wrote
            raise UserError(f"the {fmt} file written for {run.name} cannot be run: {first_line(error)}; nothing "
                            "written") from None
        parity = {"faces": described, "max_abs_difference": float(np.abs(answered - expected).max()),
                  "argmax_agreement": float(np.mean(answered.argmax(1) == expected.argmax(1)))}
        if exported is not model:  # the run's own answers, for the record
            own = predict(model, x)
            parity["run_computes_in"] = precision
            parity["vs_run_max_abs_difference"] = float(np.abs(own - expected).max())
            parity["vs_run_argmax_agreement"] = float(np.mean(own.argmax(1) == expected.argmax(1)))
        bound = PARITY[float16]
        if parity["max_abs_difference"] > bound["max_abs_difference"] or \
                parity["argmax_agreement"] < bound["argmax_agreement"]:
            raise UserError(f"the {fmt} export of {run.name} does not answer as its Keras model "
                            f"(max |Δp| {parity['max_abs_difference']:.2g}, argmax agreement "
                            f"{parity['argmax_agreement']:.1%} on {described}); nothing written")
        sha256 = file_sha256(work)
    metrics = run.metrics
    sidecar = {"format": fmt, "float16": float16, "file": target.name, "sha256": sha256,
               "run": run.name if not run.is_bundled else f"bundled:{run.file('SOURCE').read_text().strip()}",
               "model": metrics["model"], "classes": list(metrics["classes"]),
               "input": {"shape": [None, 48, 48, 1], "dtype": "float32", "pixels": "gray, 0-255 (no scaling)",
                         "face": "48x48 crop framed as FER2013's (fer_bench's aligned_crop)"},
               "output": "class probabilities in `classes` order (softmax); calibrated = softmax(log(p) / temperature)",
               "temperature": run.temperature, "uncertainty": run.uncertainty, "test_accuracy": metrics["accuracy"],
               "parity": parity, "fer_bench": library_versions().get("fer-bench")}
    write_json(sidecar_path(target), sidecar)
    return target, sidecar


def _convert(model, fmt: str, float16: bool, path: Path) -> None:
    """The model (stock layers, training-free) as an ONNX or TFLite file at `path`; what the converters
    print on the way (e.g. "Saved artifact at ...") is kept off the command's output."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        _write_converted(model, fmt, float16, path)


def _write_converted(model, fmt: str, float16: bool, path: Path) -> None:
    import tensorflow as tf

    try:
        if fmt == "onnx":
            import tf2onnx

            spec = (tf.TensorSpec((None, 48, 48, 1), tf.float32, name="pixels"),)
            call = tf.function(lambda x: model(x, training=False), input_signature=spec)
            tf2onnx.convert.from_function(call, input_signature=spec, opset=17, output_path=str(path))
            return
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        path.write_bytes(converter.convert())
    except ImportError as error:
        raise UserError(f"exporting to {fmt} needs {error.name}: `pip install fer-bench[export]`") from None
    except Exception as error:  # the converter's own failure, in one line (--verbose shows TensorFlow's log)
        raise UserError(f"the {fmt} converter failed on this model: {first_line(error)}") from None

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
from dataclasses import asdict, dataclass, fields, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from .classes import classes_tag, parse_classes
from .dataset import Dataset, select_classes
from .errors import UserError
from .integrity import drop_test_duplicates
from .sources import open_dataset

log = logging.getLogger(__name__)

COMPLETE_MARKER = "complete.json"
_NOT_IDENTITY = {"tensorboard", "strict"}  # options that do not change the result


@dataclass
class RunConfig:
    """Everything that defines a run; every field is a `fer-bench run` flag."""

    model: str = "scratch"
    data: str | None = None  # None: the embedded synthetic faces
    classes: str = "happy,sad"
    image_size: int | None = None  # None: the model's own default size
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    seed: int = 42
    val_split: str = "auto"  # 'train': stratified fraction of train; 'given': the data's own validation
    # split (fer2013.csv PublicTest); 'test': the seed's protocol; 'auto': 'given' if the data has one, else 'train'
    val_fraction: float = 0.1
    weights: str | None = None  # transfer models: 'imagenet' (default), 'none' or a file path
    variant: str = "frozen"  # transfer models: 'frozen' or 'finetune'
    finetune_epochs: int = 5
    finetune_learning_rate: float = 1e-4
    class_weight: str = "none"  # or 'balanced'
    test_usage: str = "PrivateTest"  # fer2013.csv only: which Usage is the test set
    dedupe: bool = False
    tensorboard: bool = False
    strict: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a mapping such as an experiment TOML row, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown run option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill model-dependent defaults and check option values; returns a new config."""
    from .models import check_image_size, model_info

    info = model_info(cfg.model)
    values = asdict(cfg)
    values["image_size"] = cfg.image_size or info.default_size
    check_image_size(info, values["image_size"])
    wanted = parse_classes(cfg.classes)
    values["classes"] = "all" if wanted is None else ",".join(wanted)
    if info.transfer:
        values["weights"] = cfg.weights or "imagenet"
        if values["weights"] not in ("imagenet", "none"):
            if not Path(values["weights"]).is_file():
                raise UserError(f"weights file not found: {values['weights']}")
            values["weights"] = str(Path(values["weights"]).resolve())
        if cfg.variant not in ("frozen", "finetune"):
            raise UserError(f"--variant must be 'frozen' or 'finetune', got {cfg.variant!r}")
    else:
        if cfg.weights not in (None, "none"):
            raise UserError(f"{cfg.model} is trained from scratch and takes no --weights")
        if cfg.variant != "frozen":
            raise UserError(f"--variant applies to transfer models only, not {cfg.model}")
        values["weights"] = "none"
    choices = {"val_split": ("auto", "train", "given", "test"), "class_weight": ("none", "balanced"), "optimizer": ("sgd", "adam", "rmsprop")}
    for key, allowed in choices.items():
        if values[key] not in allowed:
            raise UserError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, got {values[key]!r}")
    for key in ("epochs", "batch_size"):
        if values[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1")
    if cfg.data is not None:
        values["data"] = str(Path(cfg.data).resolve())
    return RunConfig(**values)


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
    return select_classes(dataset, parse_classes(cfg.classes))


def resolve_val_split(cfg: RunConfig, dataset: Dataset) -> RunConfig:
    """Turn val_split 'auto' into 'given' or 'train' for this data; refuse 'given' without one."""
    if cfg.val_split == "auto":
        return replace(cfg, val_split="given" if dataset.validation is not None else "train")
    if cfg.val_split == "given" and dataset.validation is None:
        raise UserError("--val-split given needs data with its own validation split (e.g. fer2013.csv PublicTest)")
    return cfg


def run_id(cfg: RunConfig, fingerprint: dict) -> str:
    """Readable id (model, classes, size, seed) plus a short hash of config and data."""
    from .features import weights_key
    from .models import model_info

    identity = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IDENTITY and k != "data"}
    identity["weights"] = weights_key(cfg.weights, cfg.seed)  # a weights file counts by its content
    identity.update({k: v for k, v in fingerprint.items() if k.endswith("_sha256")})
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    variant = f"-{cfg.variant}" if model_info(cfg.model).transfer else ""
    tag = classes_tag(parse_classes(cfg.classes))
    return f"{cfg.model}{variant}-{tag}-{cfg.image_size}px-s{cfg.seed}-{digest}"


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("fer-bench", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "pandas", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


def is_complete(run_dir: Path) -> bool:
    """A run folder counts only once its completion marker exists."""
    return (run_dir / COMPLETE_MARKER).exists()


def find_run_dirs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) run folders among the given run folders or folders of run folders."""
    complete, incomplete = [], []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"not a run folder or results folder: {path}")
        candidates = [path] if (path / "config.json").exists() else sorted(p for p in path.iterdir() if (p / "config.json").exists())
        for run_dir in candidates:
            (complete if is_complete(run_dir) else incomplete).append(run_dir)
    return complete, incomplete


def execute(cfg: RunConfig, output: Path = Path("results"), force: bool = False) -> Path:
    """Run (or resume, or find) the run described by `cfg`; returns its complete run folder."""
    cfg = resolve(cfg)
    dataset = load_run_data(cfg)
    cfg = resolve_val_split(cfg, dataset)
    fingerprint = dataset.fingerprint()
    run_dir = Path(output) / run_id(cfg, fingerprint)
    if is_complete(run_dir) and not force:
        log.info("already complete: %s (use --force to redo it)", run_dir)
        return run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    resuming = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("%s run folder %s", "resuming" if resuming else "new", run_dir)
    write_json(run_dir / "config.json", asdict(cfg))
    write_json(run_dir / "data.json", fingerprint)
    write_json(run_dir / "environment.json", library_versions())

    from .harness import train_and_evaluate

    started = time.perf_counter()
    summary = train_and_evaluate(cfg, dataset, run_dir)
    summary["wall_seconds_this_invocation"] = time.perf_counter() - started
    summary["resumed"] = resuming
    write_json(run_dir / COMPLETE_MARKER, summary)
    return run_dir


def class_weights(cfg: RunConfig, labels: np.ndarray) -> dict[int, float] | None:
    """sklearn's 'balanced' class weights when asked for, else None."""
    if cfg.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(labels)
    return {int(c): float(w) for c, w in zip(classes, compute_class_weight("balanced", classes=classes, y=labels))}

"""A run folder on disk, `results/<run id>/`: the one type that names its files, reads its records,
writes them once, locks it while it trains, marks it complete (`complete.json`, written last) and finds
a run by any of its names (a folder, a run id in a results folder, `latest`, `bundled`). Training writes
run folders through it; compare, evaluate, predict and the app read them through it.

A run's records (everything present when it is marked complete) never change afterwards: every later
scoring goes to `evaluations/`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock, Timeout

from .config import RunConfig
from .data.classes import classes_tag, parse_classes
from .errors import UserError
from .files import storage_error, write_json

# The layout and meaning of a run folder's files. It is part of every run id, so a run written in an
# older format is never reused as complete; bump it when a fix changes what a run folder holds.
RESULTS_FORMAT = 3  # 3: validation keeps identical images on one side; weight decay spares 1-D weights;
# best.keras in stock Keras layers; teachers and ensemble members counted by content
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"  # the run shipped inside the package


class RunLocked(UserError):
    """Another process is training this run right now."""


class RunFolder:
    """One run folder: its file names, its records (read views), and the steps that write them."""

    CONFIG = "config.json"  # every resolved option (what the run id hashes), written when the run starts
    DATA = "data.json"  # the data's fingerprint and duplicate counts, written when the run starts
    ENVIRONMENT = "environment.json"  # library versions, written when the run starts
    RESUMES = "resumes.json"  # one entry per resume
    METRICS = "metrics.json"  # test scores (an evaluation folder holds the same four score files)
    PREDICTIONS = "predictions.csv"
    PER_CLASS = "per_class.csv"
    CONFUSION = "confusion_matrix.csv"
    CONFUSION_PLOT = "confusion_matrix.png"
    HISTORY = "history.csv"
    CURVES = "curves.png"
    MODEL = "best.keras"  # the chosen checkpoint, stock Keras layers
    HEAD = "head.keras"  # a transfer run's head, trained on cached features
    CALIBRATION = "calibration.json"
    RELIABILITY = "reliability.png"
    UNCERTAINTY = "uncertainty.json"  # when answers say they are unsure (chosen after training)
    UNCERTAINTY_PLOT = "uncertainty.png"
    COMPLETE = "complete.json"  # the marker, written last
    EVALUATIONS = "evaluations"  # every scoring after the run completed
    LOCK = ".lock"
    START_RECORDS = (DATA, ENVIRONMENT, CONFIG)  # written in this order: a folder with config.json has all three

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunFolder) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def is_bundled(self) -> bool:
        return self.path.resolve() == BUNDLED_DIR

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, name: str) -> dict:
        """A JSON record, or one clear error when it is missing or not JSON."""
        try:
            return json.loads(self.file(name).read_text())
        except FileNotFoundError:
            raise UserError(f"run folder {self.path} has no {name}") from None
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"run folder {self.path}: its {name} is not valid JSON") from None

    @property
    def config(self) -> dict:
        return self.read(self.CONFIG)

    @property
    def data(self) -> dict:
        return self.read(self.DATA)

    @property
    def metrics(self) -> dict:
        return self.read(self.METRICS)

    @property
    def temperature(self) -> float | None:
        """The calibration temperature fitted on validation; None for a run without calibration.json."""
        return self.read(self.CALIBRATION)["temperature"] if self.file(self.CALIBRATION).exists() else None

    @property
    def uncertainty(self) -> dict | None:
        """uncertainty.json's thresholds (None: the run's answers never say they are unsure)."""
        return self.read(self.UNCERTAINTY) if self.file(self.UNCERTAINTY).exists() else None

    def has_start_records(self) -> bool:
        """Every start record is there (a folder killed before they were whole is restarted, not resumed)."""
        return all(self.file(name).exists() for name in self.START_RECORDS)

    def is_complete(self) -> bool:
        """A run counts only once its completion marker exists, beside its start records."""
        return self.file(self.COMPLETE).exists() and self.has_start_records()

    def is_stale(self) -> bool:
        """Written in another results format (older or newer), or a finetune run from before finetune runs recorded the
        layer they train above (InceptionV3's trained nothing): its id matches no new run."""
        config = self.config
        return (config.get("results_format", 1) != RESULTS_FORMAT
                or config.get("variant") == "finetune" and "finetune_from" not in config)

    def content_key(self) -> str:
        """What a complete run contributes when another run reads it (a teacher, an ensemble member): its
        model file and its temperature by content, so retraining or recalibrating it changes the key."""
        digest = hashlib.sha256(self.file(self.MODEL).read_bytes())
        digest.update(str(self.temperature).encode())
        return digest.hexdigest()[:16]

    def evaluations(self) -> list[tuple[Path, dict]]:
        """(folder, metrics) of every complete scoring after the run completed (evaluations/*/metrics.json;
        `own_test` in those of its own test set), in name order."""
        return [(f.parent, json.loads(f.read_text()))
                for f in sorted(self.file(self.EVALUATIONS).glob(f"*/{self.METRICS}")) if not f.parent.name.startswith(".")]

    # -- writing ---------------------------------------------------------------------------------------
    def write_start_records(self, records: dict[str, dict]) -> None:
        """What the run is, written once when it starts, config.json last."""
        for name in self.START_RECORDS:
            write_json(self.file(name), records[name])

    def record_resume(self, entry: dict) -> None:
        """Append one resume (when, where, in which precision) to resumes.json."""
        resumes = self.read(self.RESUMES) if self.file(self.RESUMES).exists() else []
        write_json(self.file(self.RESUMES), [*resumes, entry])

    def clear(self) -> None:
        """Remove everything but the lock: a run started afresh."""
        for item in self.path.iterdir():
            if item.name != self.LOCK:
                shutil.rmtree(item) if item.is_dir() else item.unlink()

    def mark_complete(self, summary: dict) -> None:
        write_json(self.file(self.COMPLETE), summary)

    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on the folder (creating it) or raise RunLocked."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(error, self.path) or UserError(
                f"cannot make the run folder {self.path}: {error.strerror or error}; give --results a folder "
                "that can be made") from None
        lock = FileLock(self.file(self.LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunLocked(f"run {self.name} is being trained by another process right now; "
                            "run the same command again once it has finished") from None
        try:
            yield self
        finally:
            lock.release()


def finetune_record(cfg: RunConfig) -> dict:
    """For a finetune run, the base layer above which it trains (recorded since InceptionV3's finetune
    variant, looking for layers by a name prefix its layers do not carry, trained none of its base)."""
    from .models.transfer import top_blocks_after

    return {"finetune_from": top_blocks_after(cfg.model)} if cfg.variant == "finetune" else {}


def run_config_record(cfg: RunConfig) -> dict:
    """What `config.json` holds: every resolved option, the layer a finetune run trains above, and the
    results format it was written in."""
    return {**asdict(cfg), **finetune_record(cfg), "results_format": RESULTS_FORMAT}


def identity_digest(identity: dict) -> str:
    """The short hash that ends a run id: what the run is, and the results format it is written in."""
    identity = {**identity, "results_format": RESULTS_FORMAT}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def run_id(cfg: RunConfig, fingerprint: dict) -> str:
    """A trained run's id: readable (model, classes, size, seed) plus a short hash of what the run is: the
    identity options as asked for (not as this machine resolved them), its base weights, its teacher and
    its data by content, and the results format."""
    from .models import model_info
    from .models.transfer import weights_key

    identity = cfg.identity()
    identity["weights"] = weights_key(cfg)  # a weights file counts by its content
    if cfg.teacher is not None:
        identity["teacher"] = RunFolder(cfg.teacher).content_key()  # by its model and calibration, wherever it is
    identity.update({k: v for k, v in fingerprint.items() if k.endswith("_sha256")})
    identity.update(finetune_record(cfg))
    variant = f"-{cfg.variant}" if model_info(cfg.model).transfer else ""
    tag = classes_tag(parse_classes(cfg.classes))
    return f"{cfg.model}{variant}-{tag}-{cfg.image_size}px-s{cfg.seed}-{identity_digest(identity)}"


def ensemble_id(members: list[RunFolder], classes: str, image_size: str, seed: int) -> str:
    """An ensemble's id: readable (classes as the members name them, input size, validation seed) plus a
    hash of the members by content (a recalibrated or retrained member makes a new ensemble)."""
    digest = identity_digest({"members": sorted(m.content_key() for m in members)})
    return f"ensemble-{classes_tag(parse_classes(classes))}-{image_size}px-s{seed}-{digest}"


def find_run_dirs(paths: list[Path]) -> tuple[list[RunFolder], list[RunFolder]]:
    """(complete, incomplete) run folders among the given run folders or folders of run folders."""
    complete, incomplete = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"not a run folder or results folder: {path}")
        candidates = [path] if (path / RunFolder.CONFIG).exists() else sorted(
            p for p in path.iterdir() if (p / RunFolder.CONFIG).exists())
        for run in map(RunFolder, candidates):
            (complete if run.is_complete() else incomplete).append(run)
    return complete, incomplete


def find_run(name: str | Path, results: Path = Path("results"), role: str = "run") -> RunFolder:
    """The complete run a user names, the same way in every command: a run folder, a run id in
    `results`, `latest` (the run in `results` completed last) or `bundled` (the model shipped with
    fer_bench). `role` (e.g. '--teacher') starts the one-line error when there is none."""
    name = str(name)
    if name == "bundled":
        run = RunFolder(BUNDLED_DIR)
        if not run.file(RunFolder.MODEL).exists():  # a development checkout before `fer-bench bundle`
            raise UserError("no bundled model in this installation; name a run folder instead")
        return run
    if name == "latest":
        complete = find_run_dirs([results])[0] if Path(results).is_dir() else []
        if not complete:
            raise UserError(f"{role} latest: no complete run in {results}")
        return max(complete, key=lambda run: run.file(RunFolder.COMPLETE).stat().st_mtime)
    for candidate in (Path(name), Path(results) / name):
        if candidate.is_dir():
            run = RunFolder(candidate.resolve())
            if not run.is_complete():
                raise UserError(f"{role} {name} is an incomplete run folder (no {RunFolder.COMPLETE} beside its start "
                                "records); finish it with the same `fer-bench run` command")
            return run
    raise UserError(f"{role} {name}: no such run folder or run id in {results}")

"""A run folder on disk: `results/<run id>/`, complete once its marker `complete.json` exists
(written last), in a results format that is part of every run id; finding run folders and locking
one while it trains. The one place that says what makes a folder a (complete) run, for the runs
that write them and for compare, predict and the app that read them."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock, Timeout

from .config import RunConfig
from .errors import UserError

COMPLETE_MARKER = "complete.json"
START_RECORDS = ("data.json", "environment.json", "config.json")  # written in this order when a run starts
# The layout and meaning of a run folder's files. It is part of every run id, so a run written in an
# older format is never reused as complete; bump it when a fix changes what a run folder holds.
RESULTS_FORMAT = 3  # 3: validation keeps identical images on one side; weight decay spares 1-D weights;
# best.keras in stock Keras layers; teachers and ensemble members counted by content


def finetune_record(cfg: RunConfig) -> dict:
    """For a finetune run, the base layer above which it trains (recorded since InceptionV3's finetune
    variant, looking for layers by a name prefix its layers do not carry, trained none of its base)."""
    from .models.transfer import top_blocks_after

    return {"finetune_from": top_blocks_after(cfg.model)} if cfg.variant == "finetune" else {}


def run_config_record(cfg: RunConfig) -> dict:
    """What `config.json` holds: every resolved option, the layer a finetune run trains above, and the
    results format it was written in."""
    return {**asdict(cfg), **finetune_record(cfg), "results_format": RESULTS_FORMAT}


def is_stale(run_dir: Path) -> bool:
    """A run folder written in an older results format, or a finetune run from before finetune runs
    recorded the layer they train above (InceptionV3's trained nothing): its id matches no new run."""
    config = json.loads((run_dir / "config.json").read_text())
    return (config.get("results_format", 1) != RESULTS_FORMAT
            or config.get("variant") == "finetune" and "finetune_from" not in config)


def content_key(run_dir: Path) -> str:
    """What a complete run contributes when another run reads it (a teacher, an ensemble member): its
    model file and its calibration by content, so recalibrating or retraining it changes the key."""
    import hashlib

    digest = hashlib.sha256((run_dir / "best.keras").read_bytes())
    calibration = run_dir / "calibration.json"
    if calibration.exists():
        digest.update(str(json.loads(calibration.read_text()).get("temperature")).encode())
    return digest.hexdigest()[:16]


def has_start_records(run_dir: Path) -> bool:
    """Whether a run folder holds every start record (config.json is written last; a folder killed
    before it has all of them is restarted, not resumed)."""
    return all((Path(run_dir) / name).exists() for name in START_RECORDS)


def is_complete(run_dir: Path) -> bool:
    """A run folder counts only once its completion marker exists, beside its start records."""
    return (Path(run_dir) / COMPLETE_MARKER).exists() and has_start_records(run_dir)


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


def find_complete_run(name: str, results: Path, role: str) -> Path:
    """The complete run folder `name` names (a folder, or a run id in `results`), resolved; `role` (e.g.
    '--teacher') starts the one-line error when there is none or it is not complete."""
    for candidate in (Path(name), Path(results) / name):
        if (candidate / "config.json").exists():
            if not is_complete(candidate):
                raise UserError(f"{role} {candidate.name} is not complete; finish it first")
            return candidate.resolve()
    raise UserError(f"{role} {name}: no such run folder or run id in {results}")


class RunLocked(UserError):
    """Another process is training this run right now."""


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on `run_dir` (its `.lock` file; creates the folder) or raise RunLocked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLocked(f"run {run_dir.name} is being trained by another process right now; "
                        "run the same command again once it has finished") from None
    try:
        yield
    finally:
        lock.release()

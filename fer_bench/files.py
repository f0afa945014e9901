"""Atomic file writes: every file is written under a temporary name beside its target and renamed
into place, so a crash or a kill never leaves a half-written file under its final name, and
concurrent writers of the same file (shared caches) never see each other's partial output."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError

# errors that mean "this disk or folder cannot take the file", not "the program is wrong"
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class StorageError(UserError):
    """A file could not be written for lack of space or permission; finished work is intact."""


def storage_error(error: OSError, path, writing: bool = True) -> StorageError | None:
    """The StorageError for an OSError that is about space or permissions, else None (`writing` False:
    the error may have come from reading, e.g. a data folder)."""
    if error.errno not in STORAGE_ERRNOS and "No space left" not in str(error):
        return None
    reason = error.strerror or str(error).splitlines()[0]
    if error.errno in (errno.EACCES, errno.EPERM):  # a permission, not the disk
        if writing:
            return StorageError(f"cannot write {path}: {reason}; make the folder writable and run the same command "
                                "again (nothing finished is lost)")
        return StorageError(f"cannot read or write {path}: {reason}; give yourself access to it (read for data, "
                            "write for outputs) and run the same command again")
    return StorageError(f"cannot write {path}: {reason}; nothing finished is lost - free some space (or make the "
                        "folder writable) and run the same command again to resume")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_work_dir(parent: Path, prefix: str) -> Path:
    """A hidden temporary folder in `parent`, readable like any new folder, to fill and rename into place."""
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(work, 0o777 & ~_umask())
    return work


@contextlib.contextmanager
def folder_replacing(target: Path, prefix: str):
    """Yield a hidden work folder beside `target` to fill; when the block succeeds it replaces `target`
    whole, otherwise it is removed, so `target` is never seen half-written."""
    import shutil

    work = make_work_dir(Path(target).parent, prefix)
    try:
        yield work
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


OUTPUT_MARKER = ".fer-bench-output.json"  # marks a folder fer_bench made for a command's outputs


@contextlib.contextmanager
def filling_output_folder(target: Path, what: str, complete: str):
    """Yield a hidden work folder inside `target` (a command's output folder) to fill; when the block
    succeeds its files replace the outputs fer_bench wrote there before, `complete` (the file that says
    the outputs are whole) last. `target` is created when new; an existing folder is used only when it
    is empty or marked as ours, never otherwise: nothing a user made is removed. A kill leaves at most a
    hidden work folder inside `target`, removed by the next command that writes there. `what` (e.g.
    '--out') starts the errors."""
    import shutil

    from filelock import FileLock, Timeout

    target = Path(target)
    marker = target / OUTPUT_MARKER
    if target.exists() and not target.is_dir():
        raise UserError(f"{what} {target} is a file, not a folder")
    if target.is_dir() and not marker.exists() and any(target.iterdir()):
        raise UserError(f"{what} {target} is a folder fer-bench did not make and it is not empty; name a new or "
                        "empty folder (nothing in it was touched)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            write_json(marker, {"written_by": "fer-bench", "files": []})
    except OSError as error:
        raise (storage_error(error, target) or UserError(f"{what} {target}: cannot make the folder "
                                                         f"({error.strerror or error})")) from None
    lock = FileLock(target / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{what} {target} is being written by another fer-bench command right now") from None
    try:
        for stale in target.glob(".writing-*"):  # left by a killed command (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = make_work_dir(target, ".writing-")
        try:
            yield work
            previous = json.loads(marker.read_text()).get("files", [])
            for name in [complete] + [n for n in previous if n != complete]:  # 'complete' goes first
                (target / Path(name).name).unlink(missing_ok=True)
            new = sorted(p.name for p in work.iterdir())
            write_json(marker, {"written_by": "fer-bench", "files": new})
            for name in sorted(new, key=lambda n: n == complete):  # 'complete' arrives last
                os.replace(work / name, target / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        lock.release()


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` (same suffixes, e.g. `.weights.h5`); on success it is renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name[: len(path.name) - len("".join(path.suffixes))]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=f".tmp{''.join(path.suffixes)}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from others on a shared disk
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise (storage_error(error, path) or error) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, value) -> None:
    """JSON with indentation, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")


def write_csv(path: Path, frame, **options) -> None:
    """A pandas DataFrame as CSV, written atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **options)


def save_figure(path: Path, fig, **options) -> None:
    """A matplotlib figure as PNG, written atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **options)


def save_model(path: Path, model) -> None:
    """A Keras model as `.keras`, written atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_npz(path: Path, **arrays) -> None:
    """Arrays as `.npz`, written atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)

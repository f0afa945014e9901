"""Runs survive SIGKILL at any moment, two processes never train one run, and a run that cannot
start leaves nothing behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fer_bench.run_folder import RunFolder

EPOCHS = 4


def _start(out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "fer_bench", "run", "--epochs", str(EPOCHS), "--results", str(out), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _history(out: Path) -> pd.DataFrame | None:
    for path in out.glob("*/history.csv"):
        frame = pd.read_csv(path)
        if len(frame):
            return frame
    return None


@pytest.mark.slow
def test_sigkill_after_first_epoch_then_rerun_completes_each_epoch_once(tmp_path):
    out = tmp_path / "results"
    process = _start(out)
    deadline = time.monotonic() + 240
    while _history(out) is None:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert not (run_dir / RunFolder.COMPLETE).exists()

    rerun = _start(out)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "resuming" in stderr
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(EPOCHS))
    assert json.loads((run_dir / RunFolder.COMPLETE).read_text())["resumed"] is True
    assert not list(run_dir.rglob(".*.tmp*")), "a temporary file was left behind"


@pytest.mark.slow
def test_two_concurrent_starts_of_one_run_train_it_once(tmp_path):
    out = tmp_path / "results"
    first, second = _start(out), _start(out)
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:  # the loser was refused with one clear line
        loser = results[[first.returncode, second.returncode].index(2)]
        assert loser[1].strip().splitlines()[-1].startswith("error: run ") and "another process" in loser[1]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == list(range(EPOCHS))


def test_a_run_locked_by_another_process_is_refused_with_one_line(tmp_path):
    """Deterministic form of the race: this process holds the run's lock while another starts the run."""
    from fer_bench.config import RunConfig
    from fer_bench.runs.run import prepare_run

    out = tmp_path / "results"
    run_dir = out / prepare_run(RunConfig(epochs=EPOCHS), out).run_id
    with RunFolder(run_dir).lock():
        stdout, stderr = _start(out).communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: run {run_dir.name} is being trained by another process"), stderr[-2000:]
    assert not (run_dir / "history.csv").exists() and not (run_dir / RunFolder.COMPLETE).exists()


def test_run_that_cannot_start_leaves_no_folder(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    out = tmp_path / "results"
    wrong = tmp_path / "wrong.weights.h5"
    import keras

    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(wrong)
    code, _, err = cli("run", "--model", "vgg16", "--image-size", "32", "--weights", str(wrong), "--results", out)
    assert code == 2 and err.startswith("error: cannot load weights")
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())


def test_full_disk_while_saving_a_checkpoint_is_one_error_line_and_resumes(tmp_path, cli, monkeypatch):
    import errno

    import keras

    out = tmp_path / "results"
    real_save = keras.Model.save
    saves = []

    def full_after_first_checkpoint(self, path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", full_after_first_checkpoint)
    code, out_text, err = cli("run", "--epochs", "3", "--seed", "7", "--results", out)
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "No space left on device" in line and "run the same command again to resume" in line
    assert "best-epoch-2.keras" in line  # names the file it could not write
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert not (run_dir / RunFolder.COMPLETE).exists()
    assert not list(run_dir.rglob(".*.tmp*")), "a temporary file was left behind"
    monkeypatch.setattr(keras.Model, "save", real_save)  # space freed: the same command finishes the run
    code, _, _ = cli("run", "--epochs", "3", "--seed", "7", "--results", out)
    assert code == 0 and (run_dir / RunFolder.COMPLETE).exists()


def test_results_folder_that_is_not_writable_is_one_error_line(tmp_path, cli, monkeypatch):
    import errno

    out = tmp_path / "results"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):  # root ignores permission bits, so refuse like a read-only disk
        if out in self.parents or self == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, out_text, err = cli("run", "--epochs", "1", "--results", out)
    assert code == 2 and "Traceback" not in err + out_text
    assert err.startswith(f"error: cannot write {out}") and "Permission denied" in err


def test_resume_keeps_the_first_record_appends_itself_and_refuses_another_precision(tmp_path, monkeypatch):
    """A run started where 'auto' meant float32, resumed where it means bfloat16: refused unless
    allowed; config.json stays as written at the start, resumes.json grows by one entry per resume."""
    import keras

    from fer_bench import precision
    from fer_bench.config import RunConfig
    from fer_bench.errors import UserError
    from fer_bench.runs.run import execute

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("killed")

    cfg = RunConfig(epochs=3, precision="auto", recipe="seed")
    monkeypatch.setattr(precision, "resolve_precision", lambda asked: "float32")
    with pytest.raises(RuntimeError, match="killed"):
        execute(cfg, output=tmp_path, callbacks=(StopAfterFirstEpoch(),))
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    first = (run_dir / "config.json").read_text()
    monkeypatch.setattr(precision, "resolve_precision", lambda asked: "bfloat16")
    with pytest.raises(UserError, match="started in float32 and this machine would resume it in bfloat16"):
        execute(cfg, output=tmp_path)
    assert not (run_dir / "resumes.json").exists() and not (run_dir / RunFolder.COMPLETE).exists()
    monkeypatch.setattr(precision, "resolve_precision", lambda asked: "float32")
    assert execute(cfg, output=tmp_path) == run_dir
    assert (run_dir / "config.json").read_text() == first  # never rewritten by the resume
    resumes = json.loads((run_dir / "resumes.json").read_text())
    assert len(resumes) == 1 and resumes[0]["precision_used"] == "float32" and "machine" in resumes[0]

"""Shared fixtures: an isolated cache, small folder data sets written by the tests, a CLI runner, and a
script run in its own process (for TensorFlow kernels that could crash natively)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_bench.data.classes import FER_CLASSES
from fer_bench.data.synthetic import draw_face

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"
# the architecture of the model shipped in fer_bench/bundled/ (what `predict` names as "bundled:<run id>")
BUNDLED_MODEL = (Path(__file__).resolve().parents[1] / "fer_bench" / "bundled" / "SOURCE").read_text().split("-")[0]


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Module-scoped fixtures never touch the user's cache either."""
    import os

    previous = os.environ.get("FER_BENCH_CACHE")
    os.environ["FER_BENCH_CACHE"] = str(tmp_path_factory.mktemp("session-cache"))
    yield
    if previous is None:
        del os.environ["FER_BENCH_CACHE"]
    else:
        os.environ["FER_BENCH_CACHE"] = previous


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, so cached arrays never leak between tests."""
    monkeypatch.setenv("FER_BENCH_CACHE", str(tmp_path / "cache"))


def script_report(script: str, *args, cwd: Path | None = None) -> dict:
    """Run a Python script in a new process (a native crash fails the test) and return the JSON
    object its last output line prints."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_faces(root: Path, split: str, class_folder: str, expression: str, n: int, seed: int = 0,
                size: int = 48, mode: str = "L", ext: str = "png") -> list[Path]:
    """Write `n` synthetic faces of `expression` into root/split/class_folder, resized/recoloured."""
    rng = np.random.default_rng(seed)
    folder = root / split / class_folder
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = Image.fromarray(draw_face(expression, rng)).resize((size, size)).convert(mode)
        path = folder / f"{expression}_{seed}_{i}.{ext}"
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def small_folder(tmp_path) -> Path:
    """A train/test folder data set of all seven classes, 12 train and 4 test images each."""
    root = tmp_path / "faces"
    for k, name in enumerate(FER_CLASSES):
        write_faces(root, "train", name, name, 12, seed=k)
        write_faces(root, "test", name, name, 4, seed=100 + k)
    return root


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `fer-bench ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from fer_bench.cli import main

    def invoke(*args: str):
        monkeypatch.setattr(sys, "argv", ["fer-bench", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def needs_real_data(test):
    """Mark a test as using ../shared/data/fer2013, skipping it cleanly when that is absent."""
    skip = pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data/fer2013 is absent")
    return pytest.mark.realdata(skip(test))


CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium as root on a closed network (its background connections would be refused)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def running_app():
    """`fer-bench app` (the bundled model) in its own process on a free port: yields its URL, and
    checks it is still serving when the block ends."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fer_bench", "app", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.time() < deadline, "app did not start"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
        assert server.poll() is None, "the app stopped serving"
    finally:
        server.terminate()
        server.wait(timeout=30)

"""predict on photos the tests draw (face in a larger colour canvas, blank, broken files), the JSON
output, and the web app driven in Debian's Chromium with Playwright."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA, needs_real_data
from PIL import Image

from fer_bench.data.synthetic import draw_face
from fer_bench.run import RunConfig, execute
from fer_bench.serving.predict import detect_face, read_image

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return execute(RunConfig(epochs=4, seed=5), output=tmp_path_factory.mktemp("results"))


def face_in_canvas(path: Path, expression: str, seed: int = 0, at=(380, 150), size=180) -> Path:
    face = Image.fromarray(draw_face(expression, np.random.default_rng(seed))).resize((size, size), Image.BILINEAR)
    canvas = Image.new("RGB", (800, 600), (40, 120, 200))
    canvas.paste(face.convert("RGB"), at)
    canvas.save(path)
    return path


def test_face_in_larger_colour_image_is_found_and_classified(cli, trained_run, tmp_path):
    happy = face_in_canvas(tmp_path / "happy.jpg", "happy", seed=1)
    sad = face_in_canvas(tmp_path / "sad.png", "sad", seed=2, at=(60, 300))
    code, out, _ = cli("predict", happy, sad, "--run", trained_run, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["classes"] == ["happy", "sad"] and result["run"] == str(trained_run)
    first, second = result["predictions"]
    assert first["face_found"] and second["face_found"]
    x, y, w, h = first["face_box"]
    assert 380 - 20 <= x <= 380 + 60 and 150 - 20 <= y <= 150 + 60 and 100 <= w <= 200
    for p in result["predictions"]:
        assert set(p["probabilities"]) == {"happy", "sad"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert [first["top_class"], second["top_class"]] == ["happy", "sad"]
    assert first["sentence"].startswith("With an expression percentage of ")
    assert first["sentence"].endswith("the image expression is more happy.")


def test_blank_image_reports_no_face_and_uses_whole_image(cli, trained_run, tmp_path):
    Image.new("RGB", (320, 240), (200, 200, 200)).save(tmp_path / "blank.png")
    code, out, _ = cli("predict", tmp_path / "blank.png", "--run", trained_run)
    assert code == 0 and "no face found, used the whole image" in out


def test_default_is_the_bundled_model_and_runs_are_chosen_by_name(cli, trained_run, tmp_path):
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    # a complete run with perfect test accuracy in results/ must not take over from the bundled model
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--no-detect")
    assert code == 0 and "run: the bundled model (vggnet" in out
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--run", "latest", "--no-detect")
    assert code == 0 and f"run: {trained_run}" in out
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--run", trained_run.name, "--json")
    assert code == 0 and json.loads(out)["run"] == str(trained_run)
    code, _, err = cli("predict", photo, "--results", trained_run.parent, "--run", "no-such-run")
    assert code == 2 and "no such run folder or run id" in err


def test_quick_start_then_predict_answers_with_the_bundled_model(tmp_path, monkeypatch):
    """The README's first command in an empty folder, then predict: the bundled model answers, not the cartoon run."""
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "FER_BENCH_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-m", "fer_bench", "run", "--model", "scratch", "--epochs", "2"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    done = subprocess.run([sys.executable, "-m", "fer_bench", "predict", str(photo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0 and "run: the bundled model (vggnet" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("content, fragment", [(b"", "the file is empty"), (b"hello", "not a readable image")])
def test_bad_files_are_one_line_errors(cli, trained_run, tmp_path, content, fragment):
    (tmp_path / "bad.jpg").write_bytes(content)
    code, _, err = cli("predict", tmp_path / "bad.jpg", "--run", trained_run)
    assert code == 2 and fragment in err and "Traceback" not in err


def test_truncated_image_and_incomplete_run(cli, trained_run, tmp_path, monkeypatch):
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    (tmp_path / "cut.jpg").write_bytes(photo.read_bytes()[:400])
    code, _, err = cli("predict", tmp_path / "cut.jpg", "--run", trained_run)
    assert code == 2 and "not a readable image" in err
    half = tmp_path / "half-run"
    half.mkdir()
    code, _, err = cli("predict", photo, "--run", half)
    assert code == 2 and "incomplete" in err
    monkeypatch.setattr("fer_bench.models.saved.BUNDLED_DIR", tmp_path / "no-bundle")
    code, _, err = cli("predict", photo, "--results", tmp_path / "empty")
    assert code == 2 and "no bundled model" in err


def test_huge_image_is_downscaled(tmp_path):
    big = Image.new("RGB", (9000, 7000), (90, 90, 90))
    big.paste(Image.fromarray(draw_face("happy", np.random.default_rng(0))).resize((1500, 1500)).convert("RGB"), (4000, 3000))
    big.save(tmp_path / "big.jpg", quality=80)
    image = read_image((tmp_path / "big.jpg").read_bytes(), "big.jpg")
    assert max(image.size) <= 2048
    assert detect_face(image) is not None


@needs_real_data
def test_real_face_pasted_into_photo_is_found():
    face = Image.open(sorted((REAL_DATA / "test" / "happy").glob("*.jpg"))[0]).convert("L").resize((200, 200))
    canvas = Image.new("RGB", (640, 480), (150, 60, 60))
    canvas.paste(face.convert("RGB"), (300, 150))
    assert detect_face(canvas) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_browser_upload_shows_sentence_chart_and_survives_bad_upload(trained_run, tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fer_bench", "app", "--run", str(trained_run), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
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
        photo = face_in_canvas(tmp_path / "upload.jpg", "happy", seed=1)
        (tmp_path / "junk.png").write_bytes(b"this is not a picture")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("input#image", str(photo))
            page.wait_for_selector("#sentence", timeout=60_000)
            assert "the image expression is more happy" in page.inner_text("#sentence")
            page.wait_for_selector("#probabilities img", timeout=60_000)
            page.wait_for_selector("#photo img", timeout=60_000)
            assert trained_run.name in page.inner_text("#run-info")
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

            page.set_input_files("input#image", str(tmp_path / "junk.png"))
            page.wait_for_selector("#error", timeout=60_000)
            assert "not a readable image" in page.inner_text("#error")

            page.set_input_files("input#image", str(photo))  # still serving
            page.wait_for_selector("#sentence", timeout=60_000)
            browser.close()
        assert server.poll() is None
        assert (tmp_path / "app.png").stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)

"""predict on photos the tests draw (face in a larger colour canvas, blank, broken files), the JSON
output, and the web app driven in Debian's Chromium with Playwright."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BUNDLED_MODEL, CHROMIUM, CHROMIUM_ARGS, REAL_DATA, needs_real_data, running_app
from PIL import Image

from fer_bench.data.faces import find_faces
from fer_bench.data.photos import read_image
from fer_bench.data.synthetic import draw_face
from fer_bench.runs.run import RunConfig, execute

ASTRONAUT = Path(__file__).parent / "fixtures" / "astronaut.jpg"


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
    # cartoon faces: MTCNN (for real faces) finds none, so the Haar cascade is asked for
    happy = face_in_canvas(tmp_path / "happy.jpg", "happy", seed=1)
    sad = face_in_canvas(tmp_path / "sad.png", "sad", seed=2, at=(60, 300))
    code, out, _ = cli("predict", happy, sad, "--run", trained_run, "--detector", "haar", "--json",
                       "--csv", tmp_path / "answers.csv")
    assert code == 0
    first, second = json.loads(out)
    assert set(first) == {"file", "face", "box", "label", "probabilities", "model", "uncertain", "note", "cautions"}
    assert first["file"] == str(happy) and first["model"] == trained_run.name
    x, y, w, h = first["box"]
    assert 380 - 20 <= x <= 380 + 60 and 150 - 20 <= y <= 150 + 60 and 100 <= w <= 200
    for p in (first, second):
        assert set(p["probabilities"]) == {"happy", "sad"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert [first["label"], second["label"]] == ["happy", "sad"]
    table = pd.read_csv(tmp_path / "answers.csv")
    assert list(table["label"]) == ["happy", "sad"] and {"x", "y", "w", "h", "p_happy", "p_sad"} <= set(table.columns)
    code, out, _ = cli("predict", happy, "--run", trained_run, "--detector", "haar")
    assert "With an expression percentage of " in out and "the image expression is more happy." in out


def test_blank_image_reports_no_face_and_uses_whole_image(cli, trained_run, tmp_path):
    Image.new("RGB", (320, 240), (200, 200, 200)).save(tmp_path / "blank.png")
    code, out, _ = cli("predict", tmp_path / "blank.png", "--run", trained_run)
    assert code == 0 and "no face found: the whole image was used (the answer may be meaningless)" in out


def test_astronaut_portrait_box_is_on_her_face_and_she_is_happy(cli, tmp_path):
    """The NASA portrait (public domain, from scikit-image): the box is on her face, not the helmet or
    the background beside it (where the Haar cascade finds a second 'face'), and she smiles."""
    code, out, err = cli("predict", ASTRONAUT, "--json")
    assert code == 0, err
    (answer,) = json.loads(out)
    x, y, w, h = answer["box"]
    assert 80 <= x <= 100 and 22 <= y <= 42 and 30 <= w <= 55 and 40 <= h <= 65  # her face is near (90, 32, 42, 54)
    assert answer["label"] == "happy" and answer["probabilities"]["happy"] > 0.6
    assert answer["model"].startswith(f"bundled:{BUNDLED_MODEL}-")
    haar_boxes = [a["box"] for a in json.loads(cli("predict", ASTRONAUT, "--json", "--detector", "haar")[1])]
    assert len(haar_boxes) == 2  # the reason MTCNN is the default: one of these is background


def test_folder_of_photos_is_answered_in_one_batch_with_a_csv(cli, tmp_path, monkeypatch):
    from fer_bench.serving import predict as predictor

    folder = tmp_path / "photos"
    folder.mkdir()
    rotated = Image.open(ASTRONAUT)
    rotated.save(folder / "a.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; a viewer turns it 90 degrees clockwise
    rotated.rotate(90, expand=True).save(folder / "b.jpg", exif=exif)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(folder / "c.png")
    calls = []
    original = predictor.LoadedRun.probabilities
    monkeypatch.setattr(predictor.LoadedRun, "probabilities", lambda self, pixels: calls.append(len(pixels)) or
                        original(self, pixels))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("predict", folder)
    assert code == 0, err
    assert calls == [3]  # every face of every photo in one batch
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert list(table["file"].map(lambda f: Path(f).name)) == ["a.jpg", "b.jpg", "c.png"]
    assert list(table["label"][:2]) == ["happy", "happy"]  # the EXIF-rotated copy is upright too
    assert table["x"][:2].notna().all() and pd.isna(table["x"][2])  # no face in the dark square


def test_default_is_the_bundled_model_and_runs_are_chosen_by_name(cli, trained_run, tmp_path):
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    # a complete run with perfect test accuracy in results/ must not take over from the bundled model
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--detector", "none")
    assert code == 0 and f"run: the bundled model ({BUNDLED_MODEL}" in out
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--run", "latest", "--detector", "none")
    assert code == 0 and f"run: {trained_run}" in out
    code, out, _ = cli("predict", photo, "--results", trained_run.parent, "--run", trained_run.name, "--json")
    assert code == 0 and json.loads(out)[0]["model"] == trained_run.name
    code, _, err = cli("predict", photo, "--results", trained_run.parent, "--run", "no-such-run")
    assert code == 2 and "no such run folder or run id" in err
    code, _, err = cli("predict", photo, "--detector", "dlib")
    assert code == 2 and "--detector must be blazeface, mtcnn, haar or none" in err


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
    assert done.returncode == 0 and f"run: the bundled model ({BUNDLED_MODEL}" in done.stdout, done.stderr[-2000:]


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
    monkeypatch.setattr("fer_bench.run_folder.BUNDLED_DIR", tmp_path / "no-bundle")
    code, _, err = cli("predict", photo, "--results", tmp_path / "empty")
    assert code == 2 and "no bundled model" in err


def test_huge_image_is_downscaled(tmp_path):
    big = Image.new("RGB", (9000, 7000), (90, 90, 90))
    big.paste(Image.fromarray(draw_face("happy", np.random.default_rng(0))).resize((1500, 1500)).convert("RGB"), (4000, 3000))
    big.save(tmp_path / "big.jpg", quality=80)
    photo = read_image((tmp_path / "big.jpg").read_bytes(), "big.jpg")
    assert max(photo.image.size) <= 2048 and photo.scale == pytest.approx(9000 / 2048, rel=0.01)
    (face,) = find_faces(photo.image, "haar")
    assert 3800 <= face.box[0] * photo.scale <= 4400  # reported in the original's pixels


@needs_real_data
def test_real_face_pasted_into_photo_is_found():
    face = Image.open(sorted((REAL_DATA / "test" / "happy").glob("*.jpg"))[0]).convert("L").resize((200, 200))
    canvas = Image.new("RGB", (640, 480), (150, 60, 60))
    canvas.paste(face.convert("RGB"), (300, 150))
    (found,) = find_faces(canvas)
    x, y, w, h = found.box
    assert 300 <= x + w / 2 <= 500 and 150 <= y + h / 2 <= 350 and w >= 100  # on the pasted face


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_browser_upload_shows_boxes_crops_bars_and_survives_bad_upload(tmp_path):
    """The app with its default (bundled) model in Debian's Chromium: the astronaut portrait gets one
    numbered box on her face, its 48x48 crop, calibrated bars and 'happy'; a junk upload is an error
    message and the app keeps serving."""
    from playwright.sync_api import sync_playwright

    (tmp_path / "junk.png").write_bytes(b"this is not a picture")
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        upload = page.locator("input#image")
        assert upload.get_attribute("accept") == "image/*" and upload.get_attribute("capture") == "user"
        page.set_input_files("input#image", str(ASTRONAUT))
        page.wait_for_selector("#sentence-1", timeout=60_000)
        assert "most likely happy" in page.inner_text("#sentence-1")
        assert page.inner_text("#summary").startswith("1 face found")
        assert page.locator("#face-2").count() == 0
        assert page.locator("#face-1 img.crop").count() == 1 and page.locator("#face-1 .bar").count() == 7
        page.wait_for_selector("#photo img", timeout=60_000)
        assert f"bundled:{BUNDLED_MODEL}-" in page.inner_text("#run-info") and "calibrated" in page.inner_text("#run-info")
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

        page.set_input_files("input#image", str(tmp_path / "junk.png"))
        page.wait_for_selector("#error", timeout=60_000)
        assert "not a readable image" in page.inner_text("#error")

        page.evaluate("""() => { window.answered = null;
            document.querySelector('input#image').addEventListener('change', () => {
                window.changed = performance.now(); window.answered = null; });
            $(document).on('shiny:value', e => { if (e.name === 'faces') window.answered = performance.now(); }); }""")
        page.set_input_files("input#image", str(ASTRONAUT))  # still serving, and quick once warm (goal: 0.5 s)
        page.wait_for_function("window.answered !== null", timeout=60_000)
        assert page.evaluate("(window.answered - window.changed) / 1000") < 1.0
        assert "most likely happy" in page.inner_text("#sentence-1")
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_uncalibrated_run_says_so_until_calibrate_fits_its_temperature(cli, trained_run, tmp_path):
    import shutil

    run = tmp_path / trained_run.name
    shutil.copytree(trained_run, run)
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["fitted_on"].startswith("validation split") and calibration["temperature"] > 0
    (run / "calibration.json").unlink()
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    code, out, _ = cli("predict", photo, "--run", run, "--detector", "haar")
    assert code == 0 and "probabilities NOT calibrated" in out
    code, out, err = cli("calibrate", run)
    assert code == 0 and "temperature" in out, err
    assert json.loads((run / "calibration.json").read_text())["temperature"] == pytest.approx(
        calibration["temperature"], rel=1e-3)  # the same validation split, the same fit
    code, out, _ = cli("predict", photo, "--run", run, "--detector", "haar")
    assert "probabilities calibrated on its validation split" in out


def test_thresholds_leave_the_most_answers_confident_that_are_right_often_enough():
    from fer_bench.reporting.uncertainty import fit_thresholds, is_confident

    # set a: 6 sure and right, 4 torn (top 0.40 vs 0.35) of which one is right; set b: 2 sure, 1 right
    sure, torn = [0.9, 0.05, 0.05], [0.40, 0.35, 0.25]
    a = (np.array([sure] * 6 + [torn] * 4), np.array([0] * 6 + [0, 1, 1, 1]))
    b = (np.array([sure] * 2), np.array([0, 2]))
    record = fit_thresholds({"a": a, "b": b}, target=0.65)
    # each set weighs 1 (a row of a 1/10, of b 1/2): everything confident is right (0.7 + 0.5) / 2 = 0.60
    # of the time, below 0.65; with the torn rows uncertain (0.6 + 0.5) / (0.6 + 1.0) = 0.6875
    assert record["target_reached"] and record["sets"]["a"]["confident_share"] == 0.6
    assert record["sets"]["a"]["accuracy_confident"] == 1.0 and record["sets"]["a"]["accuracy_uncertain"] == 0.25
    assert is_confident(np.array([sure, torn]), record["top"], record["margin"]).tolist() == [True, False]
    assert not fit_thresholds({"b": b}, target=0.99)["target_reached"]  # sure and wrong: no pair helps


def test_unsure_answers_say_so_with_the_two_closest_classes(cli, trained_run, tmp_path, small_folder):
    import shutil

    run = tmp_path / trained_run.name
    shutil.copytree(trained_run, run)
    photo = face_in_canvas(tmp_path / "p.jpg", "happy")
    code, out, _ = cli("predict", photo, "--run", run, "--detector", "haar", "--json")
    assert code == 0 and json.loads(out)[0]["uncertain"] is None  # a run without thresholds never claims either
    code, out, err = cli("calibrate", run, "--uncertain-on", small_folder)
    assert code == 0 and "confident, right" in out, err
    record = json.loads((run / "uncertainty.json").read_text())
    assert record["fitted_on"] == [small_folder.name] and (run / "uncertainty.png").stat().st_size > 0
    record.update(top=0.999, margin=0.999)  # as if the development data had asked for near certainty
    (run / "uncertainty.json").write_text(json.dumps(record))
    code, out, _ = cli("predict", photo, "--run", run, "--detector", "haar", "--json")
    (answer,) = json.loads(out)
    assert answer["uncertain"] is True and answer["note"].startswith("Uncertain: ")
    first, second = sorted(answer["probabilities"], key=answer["probabilities"].get, reverse=True)
    assert f"{first} " in answer["note"] and f"or {second} " in answer["note"]


def test_small_and_turned_faces_are_flagged():
    from fer_bench.data.faces import Face, _turn

    assert abs(_turn((100, 100), (140, 100), (120, 130))) < 0.01  # nose under the eyes' midpoint: frontal
    assert _turn((100, 100), (140, 100), (138, 130)) > 0.35  # nose near one eye: turned
    pixels = np.zeros((48, 48), np.uint8)
    assert Face((0, 0, 120, 140), pixels, turn=0.05).cautions() == []
    small, turned = Face((0, 0, 30, 34), pixels, turn=0.0), Face((0, 0, 120, 140), pixels, turn=-0.5)
    assert small.cautions()[0].startswith("small face (30 px") and small.cautions(scale=2.0) == []
    assert turned.cautions() == ["face turned far from the camera (answers are less reliable)"]

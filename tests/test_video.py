"""Video: faces tracked with stable ids through moves and a short absence, expression changes at the
right time in the timeline, one CSV row per face per analysed frame, outputs never half-written, and
bad videos answered in one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, running_app
from fer_bench.serving.tracking import FaceTracker
from video_scenes import B_AWAY, CHANGE_AT, FPS, RAFDB_ALIGNED, SECONDS, write_scene

needs_photos = pytest.mark.skipif(not RAFDB_ALIGNED.is_dir(), reason="../shared/data/rafdb is absent")


def _look(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(288).astype(np.float32)


def test_a_longer_video_costs_bytes_per_face_row_not_python_objects():
    """Every frame analysed: a video's rows must not hold a dict per face per frame (10 minutes with two faces
    at 30 frames/s grew peak memory by 45 MiB that way)."""
    import tracemalloc

    from fer_bench.serving.video import FaceRows

    def row(k: int) -> dict:
        return {"time": k / 30, "frame": k // 2, "face": 1 + k % 2, "x": 10, "y": 20, "w": 90, "h": 90,
                "label": "happy", **{f"p_{c}": 1 / 7 for c in "abcdefg"}, "uncertain": False,
                "detector_confidence": 0.9}

    rows = FaceRows()
    tracemalloc.start()
    for k in range(0, 20_000, 2):
        rows.extend([row(k), row(k + 1)])
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 20_000 * 300, f"{held / 20_000:.0f} bytes a row"
    table = rows.table()
    assert len(rows) == len(table) == 20_000 and table["frame"].tolist() == [k // 2 for k in range(20_000)]
    assert FaceRows().table().empty


def test_tracker_keeps_ids_through_moves_and_reacquires_within_the_window():
    tracker = FaceTracker(reacquire_seconds=2.0)
    a, b = _look(1), _look(2)
    assert tracker.update(0.0, [(0, 0, 50, 50), (300, 0, 50, 50)], [a, b]) == [1, 2]
    assert tracker.update(0.2, [(310, 0, 50, 50), (10, 0, 50, 50)], [b, a]) == [2, 1]  # order swapped, boxes moved
    assert tracker.update(0.4, [(20, 0, 50, 50)], [a]) == [1]  # b left
    assert tracker.update(1.5, [(20, 0, 50, 50), (150, 200, 50, 50)], [a, b]) == [1, 2]  # b back elsewhere
    assert tracker.update(1.7, [(20, 0, 50, 50)], [a]) == [1]
    assert tracker.update(3.0, [(20, 0, 50, 50)], [a]) == [1]
    assert tracker.update(4.0, [(20, 0, 50, 50), (150, 200, 50, 50)], [a, b]) == [1, 3]  # gone too long: new id
    assert tracker.update(4.2, [(500, 300, 50, 50)], [_look(9)]) == [4]  # a stranger is nobody's track


@pytest.fixture(scope="module")
def analysed_scene(tmp_path_factory):
    """The scene analysed by `fer-bench predict VIDEO` in its own process (TensorFlow kernels)."""
    folder = tmp_path_factory.mktemp("video")
    video = write_scene(folder / "scene.mp4")
    done = subprocess.run([sys.executable, "-m", "fer_bench", "predict", str(video), "--every", "2", "--annotate"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder / "scene.mp4.fer", done.stdout


@needs_photos
def test_two_faces_keep_their_ids_and_the_csv_has_a_row_per_face_per_analysed_frame(analysed_scene):
    out, stdout = analysed_scene
    table = pd.read_csv(out / "frames.csv")
    assert sorted(table["face"].unique()) == [1, 2]
    assert table["uncertain"].isin([True, False]).all()  # the bundled model's thresholds judge every answer
    analysed = np.arange(0, int(SECONDS * FPS), 2)
    assert sorted(table["frame"].unique()) == analysed.tolist()
    per_frame = table.groupby("frame").size()
    away = (table.groupby("frame")["time"].first() >= B_AWAY[0]) & (table.groupby("frame")["time"].first() < B_AWAY[1])
    assert (per_frame[~away] == 2).mean() >= 0.9 and (per_frame[away] == 1).all()  # a rare missed detection
    a = table[table["face"] == table.loc[table["x"].idxmin(), "face"]]
    b = table[table["face"] != a["face"].iloc[0]]
    assert len(a) >= 0.9 * len(analysed) and b["time"].min() < B_AWAY[0] and b["time"].max() > B_AWAY[1]  # one id before and after
    assert (b[b["time"] > B_AWAY[1]]["y"] > 200).all()  # it came back lower, and kept its id
    summary = json.loads((out / "video.json").read_text())
    assert summary["frames_read"] == SECONDS * FPS and summary["frames_analysed"] == len(analysed)
    assert summary["settings"]["smoothing"]["half_life_seconds"] == 0.5 and "mostly" in stdout


@needs_photos
def test_the_expression_change_shows_in_the_timeline_at_its_time(analysed_scene):
    out, _ = analysed_scene
    table = pd.read_csv(out / "frames.csv")
    a = table[table["face"] == table.loc[table["x"].idxmin(), "face"]]
    assert (a[a["time"] < CHANGE_AT]["label"] == "happy").all()  # raw answers switch at the change
    assert (a[a["time"] >= CHANGE_AT]["label"] == "sad").mean() >= 0.9
    switch = a[a["smoothed_label"] == "sad"]["time"].min()
    assert CHANGE_AT <= switch <= CHANGE_AT + 1.0  # smoothing delays it by less than a second
    faces = {f["face"]: f for f in json.loads((out / "video.json").read_text())["faces"]}
    segments = faces[a["face"].iloc[0]]["segments"]
    assert [s["label"] for s in segments] == ["happy", "sad"] and segments[1]["start"] == pytest.approx(switch)
    for face in faces:
        assert (out / f"timeline_face{face}.png").stat().st_size > 10_000


@needs_photos
def test_annotated_video_has_every_frame(analysed_scene):
    import cv2

    out, _ = analysed_scene
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == SECONDS * FPS
    assert not list(out.parent.glob(".writing-*")) and not list(out.parent.glob("tmp*.mp4"))


def _one_line_error(cli, *args):
    code, out, err = cli("predict", *map(str, args))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_videos_are_one_clear_line(cli, tmp_path, monkeypatch):
    import cv2

    (tmp_path / "text.mp4").write_text("not a video at all\n" * 100)
    assert "not a video OpenCV can read" in _one_line_error(cli, tmp_path / "text.mp4")
    (tmp_path / "empty.avi").write_bytes(b"")
    assert "the file is empty" in _one_line_error(cli, tmp_path / "empty.avi")
    assert "video not found" in _one_line_error(cli, tmp_path / "missing.mkv")
    small = tmp_path / "small.mp4"
    writer = cv2.VideoWriter(str(small), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(5):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    from fer_bench.serving import video

    monkeypatch.setattr(video, "MAX_VIDEO_PIXELS", 1000)
    assert "larger than the 1,000 pixels allowed" in _one_line_error(cli, small)
    assert not list(tmp_path.glob("*.fer"))


def test_a_video_without_faces_and_a_truncated_one_give_a_clear_result(cli, tmp_path):
    import cv2

    blank = tmp_path / "blank.mp4"
    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for k in range(20):
        writer.write(np.full((120, 160, 3), 40 + 5 * k, np.uint8))
    writer.release()
    code, out, err = cli("predict", blank, "--every", "5")
    assert code == 0, err
    assert "no face in 4 analysed frames" in out
    summary = json.loads((tmp_path / "blank.mp4.fer" / "video.json").read_text())
    assert summary["faces"] == [] and summary["frames_read"] == 20
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(blank.read_bytes()[: len(blank.read_bytes()) // 3])
    code, out, err = cli("predict", truncated)
    assert "Traceback" not in err and (code == 0 and "frames" in out or code == 2 and err.count("\n") == 1)


@pytest.mark.slow
def test_video_benchmark_times_both_schemes_with_their_memory(cli, tmp_path):
    import cv2

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 120))
    for k in range(30):
        writer.write(np.full((120, 160, 3), 60 + k, np.uint8))
    writer.release()
    code, out, err = cli("benchmark", "--video", clip, "--frame-sizes", "96x64", "--detectors", "blazeface,haar",
                         "--out", tmp_path / "video.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "video.csv")
    assert table["every"].tolist() == [1, 5, 1, 5] and (table["frames"] == 30).all()  # 30 fps: 6 answers a second
    assert table["detector"].tolist() == ["blazeface", "blazeface", "haar", "haar"]
    assert (table["peak_resident_mb"] > 50).all() and (table["speed_vs_every_frame"].iloc[[0, 2]] == 1.0).all()
    assert table["speed_vs_first"].iloc[0] == 1.0 and (tmp_path / "video.png").exists()
    assert_bad = cli("benchmark", "--video", clip, "--frame-sizes", "96by64")
    assert assert_bad[0] == 2 and "WIDTHxHEIGHT" in assert_bad[2]


@pytest.mark.slow
@needs_photos
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_app_answers_an_uploaded_video_and_a_live_fake_camera(tmp_path):
    """In Debian's Chromium: a video upload shows each face's timeline and summary; the live camera,
    Chromium's fake device playing a scene the test made, gets boxes and a rolling timeline."""
    from playwright.sync_api import sync_playwright

    from video_scenes import write_y4m

    scene = write_scene(tmp_path / "scene.mp4", seconds=4)
    fake_camera = write_y4m(scene, tmp_path / "scene.y4m")
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_camera}"])
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(url)
        page.set_input_files("input#video", str(scene))
        page.wait_for_selector("#video-face-2", timeout=180_000)
        assert page.inner_text("#video-summary").startswith("2 face(s) followed")
        assert page.locator("img.timeline").count() == 2

        page.click("#camera-start")
        page.wait_for_function("document.querySelector('#camera_answer').innerText.includes('face 1:')",
                               timeout=120_000)
        page.wait_for_function("Number(document.querySelector('#camera-timeline').dataset.updates || 0) >= 5",
                               timeout=120_000)
        assert "happy" in page.inner_text("#camera_answer")
        counts = """[Number(document.querySelector('#camera-timeline').dataset.updates),
                     document.querySelector('#camera-video').getVideoPlaybackQuality().totalVideoFrames]"""
        answers, frames = page.evaluate(counts)
        page.wait_for_timeout(3000)  # each new frame goes out while < 2 await answers (was one every 200 ms)
        answered, shown = (now - then for now, then in zip(page.evaluate(counts), (answers, frames)))
        assert answered >= 0.8 * shown, f"{answered} answers for {shown} camera frames"
        page.screenshot(path=str(tmp_path / "camera.png"), full_page=True)
        page.click("#camera-stop")
        assert page.inner_text("#camera-status") == "camera off"
        browser.close()

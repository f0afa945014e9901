"""Nothing a user owns is lost or mistaken for finished: output folders fer_bench did not make are
never emptied, kills leave nothing beside the user's files, a run killed before its start records are
whole is restarted, no file overwrites another, and video times follow the container's timestamps."""

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_faces
from video_scenes import FACE_A_HAPPY, FACE_A_SAD, RAFDB_ALIGNED, _face, write_scene

needs_photos = pytest.mark.skipif(not RAFDB_ALIGNED.is_dir(), reason="../shared/data/rafdb is absent")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene") / "scene.mp4", seconds=2)


@needs_photos
def test_predict_video_never_empties_a_folder_it_did_not_make(cli, scene, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    code, _, err = cli("predict", scene, "--out", mine)
    assert code == 2 and "fer-bench did not make" in err and err.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    monkeypatch.chdir(scene.parent)  # `--out .`: the folder holding the video itself
    code, _, err = cli("predict", scene, "--out", ".")
    assert code == 2 and scene.exists()
    (tmp_path / "a-file").write_text("x")
    code, _, err = cli("predict", scene, "--out", tmp_path / "a-file")
    assert code == 2 and "is a file" in err and (tmp_path / "a-file").read_text() == "x"


@needs_photos
def test_our_own_output_folder_is_replaced_and_a_killed_work_folder_cleaned(cli, scene, tmp_path):
    out = tmp_path / "answers"
    out.mkdir()  # an empty folder may be used
    assert cli("predict", scene, "--out", out, "--annotate")[0] == 0
    assert {"frames.csv", "video.json", "annotated.mp4"} <= {p.name for p in out.iterdir()}
    assert (out / "annotated.mp4").stat().st_mode & 0o044  # readable like the other outputs
    (out / ".writing-left-by-a-kill").mkdir()
    code, _, err = cli("predict", scene, "--out", out)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert "annotated.mp4" not in names and "video.json" in names  # the earlier run's outputs replaced
    assert not [n for n in names if n.startswith(".writing-")]


@needs_photos
def test_a_kill_during_an_annotated_analysis_leaves_nothing_beside_the_video(tmp_path):
    video = write_scene(tmp_path / "long.mp4", seconds=30)
    (tmp_path / "holiday.jpg").write_bytes(b"the user's")
    before = {p.name for p in tmp_path.iterdir()}
    process = subprocess.Popen([sys.executable, "-m", "fer_bench", "predict", str(video), "--annotate", "--every", "3"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "long.mp4.fer"
    deadline = time.time() + 240
    while not any(p.stat().st_size > 0 for p in target.glob(".writing-*/annotated.mp4")):
        assert process.poll() is None and time.time() < deadline, "the analysis ended before it could be killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {p.name for p in tmp_path.iterdir()} == before | {"long.mp4.fer"}  # no temporary video beside them
    assert not (target / "video.json").exists()  # never mistaken for complete


@needs_photos
def test_variable_frame_rate_video_is_timed_by_its_timestamps(cli, tmp_path):
    """Happy for 4 s in 8 frames, then sad for 1 s in 30 frames: mostly happy, changing at 4 s."""
    av = pytest.importorskip("av")
    happy, sad = _face(FACE_A_HAPPY), _face(FACE_A_SAD)
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for t in [*np.arange(0, 4, 0.5), *np.arange(4, 5, 1 / 30)]:
            image = np.full((240, 320, 3), 95, np.uint8)
            image[45:195, 85:235] = happy if t < 4 else sad
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:, :, ::-1]), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    code, out, err = cli("predict", path, "--every", "1", "--smooth", "0")
    assert code == 0, err
    summary = json.loads((tmp_path / "vfr.mkv.fer" / "video.json").read_text())
    face = summary["faces"][0]
    assert face["dominant"] == "happy" and face["share_of_time"]["happy"] == pytest.approx(0.8, abs=0.05)
    assert face["segments"][-1]["label"] == "sad" and face["segments"][-1]["start"] == pytest.approx(4.0, abs=0.05)
    assert summary["truncated"] is None and "warning" not in err
    times = pd.read_csv(tmp_path / "vfr.mkv.fer" / "frames.csv")["time"]
    assert times.iloc[1] == pytest.approx(0.5)


def test_a_truncated_video_says_how_much_was_read(cli, tmp_path):
    import cv2

    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for k in range(100):
        writer.write(np.full((120, 160, 3), k, np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    code, out, err = cli("predict", cut, "--every", "10")
    assert code == 0 and "warning: only the first" in err and "of the 10.0 s the file announces" in err, err
    assert "truncated" in json.loads((tmp_path / "cut.avi.fer" / "video.json").read_text())["truncated"]
    assert "[mjpeg" not in err and "overread" not in err  # FFmpeg's own lines stay off the console
    code, out, err = cli("predict", whole, "--every", "10", "--out", tmp_path / "whole")
    assert code == 0 and "warning" not in err


def _run_args(results: Path) -> list[str]:
    return ["run", "--model", "scratch", "--epochs", "1", "--results", str(results)]


def test_a_run_killed_while_writing_its_start_records_is_restarted_not_resumed(tmp_path, cli):
    """A kill -9 between the first and the last start record (in its own process), then the same
    command: a new start, complete with every record, and `evaluate`/`compare` read it."""
    results = tmp_path / "results"
    script = ("import os, signal, sys\n"
              "import fer_bench.run_folder as run\n"
              "write = run.write_json\n"
              "def killed_after_data(path, value):\n"
              "    write(path, value)\n"
              "    if path.name == 'data.json': os.kill(os.getpid(), signal.SIGKILL)\n"
              "run.write_json = killed_after_data\n"
              "from fer_bench.cli import main\n"
              "sys.argv = ['fer-bench', *sys.argv[1:]]\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script, *_run_args(results)], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL
    (run_dir,) = results.iterdir()
    assert (run_dir / "data.json").exists() and not (run_dir / "config.json").exists()
    code, out, err = cli(*_run_args(results))
    assert code == 0, err
    for name in ("config.json", "data.json", "environment.json", "complete.json", "best.keras"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "resumes.json").exists()  # a new start, not a resume
    assert cli("compare", run_dir, "--out", tmp_path / "cmp")[0] == 0
    # a folder that an older fer-bench marked complete without its start records is redone, not trusted
    (run_dir / "data.json").unlink()
    code, out, err = cli("evaluate", run_dir)
    assert code == 2 and "incomplete run folder" in err
    assert cli(*_run_args(results))[0] == 0 and (run_dir / "data.json").exists()


def test_predict_folder_never_overwrites_an_earlier_csv(cli, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    write_faces(photos, ".", "x", "happy", 2)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "predictions.csv").write_text("a run's own per-image predictions\n")
    code, out, err = cli("predict", photos / "x", "--detector", "none")
    assert code == 0, err
    assert (tmp_path / "predictions.csv").read_text() == "a run's own per-image predictions\n"
    assert len(pd.read_csv(tmp_path / "predictions-2.csv")) == 2 and "predictions-2.csv" in err + out
    assert cli("predict", photos / "x", "--detector", "none")[0] == 0 and (tmp_path / "predictions-3.csv").exists()
    code, _, err = cli("predict", photos / "x", "--csv", photos)
    assert code == 2 and "is a folder" in err


def test_data_export_keeps_images_whose_names_differ_only_in_suffix(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("happy", "sad"):
            write_faces(root, split, name, name, 2)
    face = Image.open(next((root / "train" / "happy").iterdir()))
    face.save(root / "train" / "happy" / "a.png")
    face.save(root / "train" / "happy" / "a.jpg")
    code, out, _ = cli("data", "export", root, tmp_path / "out")
    files = list((tmp_path / "out").rglob("*.png"))
    assert code == 0 and f"wrote {len(files)} images" in out and len(files) == 10


def test_a_pipe_behind_a_symlink_is_skipped_not_waited_on(tmp_path):
    """(In its own process, with a timeout: the bug was a hang.)"""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("happy", "sad"):
            write_faces(root, split, name, name, 3)
    os.mkfifo(tmp_path / "pipe")
    (root / "train" / "happy" / "face.png").symlink_to(tmp_path / "pipe")
    script = ("import sys; from fer_bench.data.dataset import read_folder_dataset\n"
              "d = read_folder_dataset(sys.argv[1], use_cache=False); print(len(d.train), d.skipped)")
    done = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("6 ") and "face.png" in done.stdout, done.stderr


def test_a_class_folder_name_that_is_not_utf8_is_one_error_line(cli, tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        write_faces(root, split, "happy", "happy", 3)
        odd = os.fsencode(root / split) + b"/caf\xe9"
        os.mkdir(odd)
        write_faces(Path(os.fsdecode(odd)).parent, ".", os.fsdecode(odd).rsplit("/", 1)[1], "sad", 3)
    for args in (("run", "--data", root, "--classes", "all", "--results", tmp_path / "r"), ("data", "inspect", root),
                 ("data", "export", root, tmp_path / "out")):
        code, _, err = cli(*args)
        assert code == 2 and "not UTF-8" in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "out").exists()

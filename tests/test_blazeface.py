"""BlazeFace as fer_bench decodes it: MediaPipe's anchor counts, weighted suppression, boxes and eyes
where MTCNN puts them (the astronaut; scenes of real RAF-DB faces at several sizes, tilts and places, two
faces in a frame), nothing on a frame without a face, and the aligned crop `predict` answers from."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_bench.data import blazeface
from fer_bench.data.faces import find_faces

ASTRONAUT = Path(__file__).resolve().parent / "fixtures" / "astronaut.jpg"
RAFDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "rafdb"
MTCNN_EYES = ((101, 50), (123, 51))  # MTCNN's eyes on the astronaut (the mtcnn package, as fer_bench calls it)


def test_anchors_are_mediapipes():
    short, full = blazeface.anchors(blazeface.SHORT_RANGE), blazeface.anchors(blazeface.FULL_RANGE)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])  # 2 anchors a cell
    assert np.allclose(short[512], [0.5 / 8, 0.5 / 8])  # the 8x8 grid after the 16x16 one, 6 anchors a cell
    assert np.allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_suppression_averages_overlapping_boxes_by_score():
    corners = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    points = np.zeros((3, 6, 2))
    points[1] += 1.0
    kept = blazeface.weighted_suppression(corners, points, np.array([0.9, 0.6, 0.7]))
    assert len(kept) == 2
    box, keypoints, score = kept[0]
    assert score == 0.9 and np.allclose(box, [0.4, 0.4, 10.4, 10.4]) and np.allclose(keypoints, 0.4)
    assert np.allclose(kept[1][0], [50, 50, 60, 60]) and kept[1][2] == 0.7


def _eyes(detection):
    return sorted([detection.keypoints["right_eye"], detection.keypoints["left_eye"]])


def test_the_astronaut_is_found_with_mtcnns_eyes():
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    (face,) = blazeface.detect(rgb)
    distance = np.linalg.norm(np.subtract(*MTCNN_EYES))
    for ours, theirs in zip(_eyes(face), MTCNN_EYES):
        assert np.linalg.norm(np.subtract(ours, theirs)) < 0.15 * distance
    x, y, w, h = face.box
    assert x < MTCNN_EYES[0][0] < MTCNN_EYES[1][0] < x + w and y < MTCNN_EYES[0][1] < y + h
    (found,) = find_faces(Image.open(ASTRONAUT).convert("RGB"), "blazeface")
    assert found.pixels.shape == (48, 48) and found.confidence > 0.5


def test_a_small_far_face_is_found_on_tiles():
    """The astronaut (her face 47 px) in a 960x720 frame: too small for either model on the whole frame
    (9 px of the full-range input), found on the overlapping tiles, where MTCNN puts her eyes."""
    frame = Image.new("RGB", (960, 720), (70, 80, 90))
    frame.paste(Image.open(ASTRONAUT).convert("RGB"), (100, 150))
    rgb = np.asarray(frame)
    assert blazeface.detect(rgb) == [] and blazeface.detect(rgb, blazeface.FULL_RANGE) == []
    (face,) = blazeface.detect_tiled(rgb)
    distance = np.linalg.norm(np.subtract(*MTCNN_EYES))
    for ours, theirs in zip(_eyes(face), MTCNN_EYES):
        assert np.linalg.norm(np.subtract(ours, (theirs[0] + 100, theirs[1] + 150))) < 0.2 * distance
    (found,) = find_faces(frame, "blazeface")
    assert 180 <= found.box[0] <= 200


def test_a_frame_without_a_face_gives_nothing():
    rng = np.random.default_rng(0)
    noise = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    assert blazeface.detect(noise) == [] and blazeface.detect(noise, blazeface.FULL_RANGE) == []
    assert blazeface.detect_tiled(noise) == []
    assert find_faces(Image.new("RGB", (640, 480), (90, 120, 90)), "blazeface") == []


@pytest.mark.skipif(not RAFDB.is_dir(), reason="../shared/data/rafdb is absent")
def test_real_faces_at_several_sizes_tilts_and_places_match_mtcnn():
    """Pairs of RAF-DB faces pasted into 640x480 frames (sizes 90-260 px, tilts up to 15 degrees, two a
    frame): both found, and their eyes where MTCNN puts them on the same frame (median distance under
    15 % of the eye distance, none beyond 40 %: on these tight crops the two detectors' eyes differ by a
    median 11 %, measured over 71 faces)."""
    from mtcnn import MTCNN

    from fer_bench.data.layouts import RAFDB_LIST, rafdb_root

    base = rafdb_root(RAFDB)
    names = [line.split()[0] for line in (base / RAFDB_LIST).read_text().splitlines()[:80:5]]
    rng = np.random.default_rng(1)
    mtcnn = MTCNN()
    found, errors = 0, []
    for first, second in zip(names[::2], names[1::2]):
        frame = Image.new("RGB", (640, 480), (70, 80, 90))
        for name, x in ((first, 20), (second, 340)):
            face = Image.open(base / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")).convert("RGB")
            side = int(rng.integers(90, 260))
            face = face.resize((side, side)).rotate(float(rng.uniform(-15, 15)), expand=True, fillcolor=(70, 80, 90))
            frame.paste(face, (x + int(rng.integers(0, 40)), int(rng.integers(0, 480 - face.height))))
        rgb = np.asarray(frame)
        ours = sorted(blazeface.detect(rgb), key=lambda d: d.box[0])
        theirs = sorted((f for f in mtcnn.detect_faces(rgb) if f["confidence"] > 0.9), key=lambda f: f["box"][0])
        found += len(ours) == 2
        if len(ours) == len(theirs) == 2:
            for detection, reference in zip(ours, theirs):
                eyes = sorted([reference["keypoints"]["left_eye"], reference["keypoints"]["right_eye"]])
                distance = np.linalg.norm(np.subtract(*eyes))
                errors.append(max(np.linalg.norm(np.subtract(a, b)) for a, b in zip(_eyes(detection), eyes)) / distance)
    assert found >= 7 and len(errors) >= 8, (found, len(errors))
    assert np.median(errors) < 0.15 and max(errors) < 0.4, errors


def test_threads_sharing_the_tflite_models_each_get_their_own_answers():
    """The app and `serve` answer on worker threads that share one BlazeFace interpreter and the bundled
    model's TFLite copy: answers under concurrency equal the answers alone."""
    from concurrent.futures import ThreadPoolExecutor

    from fer_bench.run_folder import BUNDLED_DIR
    from fer_bench.serving.exported import ExportedModel

    model = ExportedModel(BUNDLED_DIR / "model.tflite")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (n, 48, 48, 1)).astype("float32") for n in (1, 3, 8, 1, 5, 2) * 4]
    alone = [model.predict(x) for x in batches]
    frames = [np.asarray(Image.open(ASTRONAUT).convert("RGB").rotate(angle)) for angle in (0, 5, -5, 10) * 3]
    boxes_alone = [[d.box for d in blazeface.detect(f)] for f in frames]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(model.predict, batches))
        boxes_together = list(pool.map(lambda f: [d.box for d in blazeface.detect(f)], frames))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert boxes_alone == boxes_together

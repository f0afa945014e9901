"""Test videos made from real face photos: faces that move, cross, leave and come back, and change expression."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RAFDB_ALIGNED = Path(__file__).resolve().parents[2] / "shared" / "data" / "rafdb" / "basic" / "Image" / "aligned"
# RAF-DB photos the bundled model answers confidently: A happy (0.94), then A' sad (0.92); B happy (0.80)
FACE_A_HAPPY, FACE_A_SAD, FACE_B = "train_00011", "train_00025", "train_00003"
FPS, SECONDS, SIZE, SIDE = 10, 8, (640, 480), 150
CHANGE_AT = 4.0  # face A's photo turns from happy to sad
B_AWAY = (2.5, 3.5)  # face B has left the frame


def _face(name: str):
    import cv2

    return cv2.resize(cv2.imread(str(RAFDB_ALIGNED / f"{name}_aligned.jpg")), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)


def write_scene(path: Path, seconds: float = SECONDS, size=SIZE, fps: int = FPS) -> Path:
    """Face A walks right and changes expression at CHANGE_AT; face B walks left, leaves during B_AWAY
    and comes back lower; mp4v at `fps`, the SECONDS-long scene replayed to fill `seconds`."""
    import cv2

    a_happy, a_sad, b = _face(FACE_A_HAPPY), _face(FACE_A_SAD), _face(FACE_B)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for k in range(int(seconds * fps)):
        t = (k / fps) % SECONDS  # a longer video replays the scene
        frame = np.full((height, width, 3), 95, np.uint8)
        x = int(30 + 12 * t)
        frame[60:60 + SIDE, x:x + SIDE] = a_happy if t < CHANGE_AT else a_sad
        if not B_AWAY[0] <= t < B_AWAY[1]:
            bx, by = int(width - 30 - SIDE - 10 * t), 60 if t < B_AWAY[0] else 250
            frame[by:by + SIDE, bx:bx + SIDE] = b
        writer.write(frame)
    writer.release()
    return path


def write_y4m(video: Path, out: Path) -> Path:
    """`video`'s frames as a Y4M file (planar 4:2:0), what Chromium's fake camera plays in a loop."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    fps = int(round(capture.get(cv2.CAP_PROP_FPS))) or 10
    with open(out, "wb") as f:
        header_written = False
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            height, width = frame.shape[:2]
            if not header_written:
                f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
                header_written = True
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    capture.release()
    return out

"""Inputs users and the internet produce, at every entry point: each ends as a counted skip (an
error with --strict) or one `error:` line and exit code 2 — no traceback, no hang."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_faces
from PIL import Image

from fer_bench.data.dataset import read_folder_dataset, to_native
from fer_bench.data.synthetic import draw_face


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A PNG a few hundred bytes long whose header claims side x side pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 5000))
                     + chunk(b"IEND", b""))
    return path


def face(mode: str, expression: str = "happy") -> Image.Image:
    gray = Image.fromarray(draw_face(expression, np.random.default_rng(0)))
    if mode == "I;16":
        return Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    if mode == "P":
        return gray.convert("RGB").quantize(16)
    return gray.convert(mode)


BAD_FILES = {  # name → bytes written into train/happy; each must be skipped
    "truncated.jpg": lambda: _encoded(face("L"), "JPEG")[:300],
    "truncated.png": lambda: _encoded(face("L"), "PNG")[:200],
    "empty.jpg": lambda: b"",
    "random.jpg": lambda: os.urandom(2048),
}
GOOD_ODD_FILES = {  # decoded as faces
    "cmyk.jpg": lambda: _encoded(face("CMYK"), "JPEG"),
    "sixteen.png": lambda: _encoded(face("I;16"), "PNG"),
    "palette.png": lambda: _encoded(face("P"), "PNG"),
    "alpha.png": lambda: _encoded(face("RGBA"), "PNG"),
}


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    root = tmp_path / "messy"
    for split, n in (("train", 8), ("test", 3)):
        for k, name in enumerate(("happy", "sad")):
            write_faces(root, split, name, name, n, seed=k)
    happy = root / "train" / "happy"
    for name, make in {**BAD_FILES, **GOOD_ODD_FILES}.items():
        (happy / name).write_bytes(make())
    png_bomb(happy / "bomb.png")
    (happy / "loop.jpg").symlink_to(happy / "loop.jpg")
    odd_name = os.fsencode(happy) + b"/caf\xe9-latin1.png"  # not UTF-8
    with open(odd_name, "wb") as f:
        f.write(_encoded(face("L"), "PNG"))
    return root


def test_folder_skips_and_counts_every_bad_file(messy_folder):
    dataset = read_folder_dataset(messy_folder, use_cache=False)
    skipped = {Path(s).name for s in dataset.skipped}
    assert skipped == set(BAD_FILES) | {"bomb.png", "loop.jpg"}
    names = {Path(f).name for f in dataset.train.files}
    assert set(GOOD_ODD_FILES) <= names and "caf\ufffd-latin1.png" in names
    assert len(dataset.train) == 16 + len(GOOD_ODD_FILES) + 1


def test_sixteen_bit_gray_is_scaled_not_clipped():
    native = to_native(face("I;16"))
    reference = to_native(face("L"))
    assert np.abs(native.astype(int) - reference).max() <= 1


def test_run_on_messy_folder_warns_with_count_and_strict_refuses(cli, messy_folder, tmp_path, caplog):
    code, out, err = cli("run", "--data", messy_folder, "--epochs", "1", "--results", tmp_path / "r")
    assert code == 0, err
    assert "warning: skipped 6 unreadable images" in caplog.text
    import pandas as pd

    (run_dir,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    assert len(pd.read_csv(run_dir / "predictions.csv")) == 6
    code, _, err = cli("run", "--data", messy_folder, "--epochs", "1", "--strict", "--results", tmp_path / "r2")
    assert code == 2 and err.startswith("error: 6 unreadable images") and "Traceback" not in err
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").iterdir())


def test_messy_csv(cli, tmp_path):
    pixels = " ".join(["100"] * 2304)
    lines = [
        "\ufeffemotion,pixels,Usage,extra",  # byte-order mark and an extra column
        f'3,"{pixels}",Training,x',  # quoted pixels
        "",  # blank line
        "   ",
        f"4,{pixels},Training,y",
        f"3,{pixels},PrivateTest,z",
        f"4,{pixels},PrivateTest,z",
        "3,1 2 3,Training,short",  # wrong pixel count
        "9,{pixels},Training,bad-emotion",
        "3,\0,Training,nul",  # NUL byte
    ]
    path = tmp_path / "messy.csv"
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n" + b"3,\xff\xfe,Training,latin\r\n")
    code, out, err = cli("data", "inspect", path)
    assert code == 0, err
    assert "Traceback" not in err
    assert "unreadable: 4" in out and "row 8: 3 pixels, expected 2304" in out and "row 11: non-numeric" in out
    totals = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in out.splitlines() if line.startswith("| t")}
    assert totals == {"train": "2", "test": "2"}
    code, _, err = cli("data", "inspect", tmp_path / "nothing.csv")
    assert code == 2 and err.startswith("error:")
    (tmp_path / "binary.csv").write_bytes(os.urandom(4096))
    code, _, err = cli("data", "inspect", tmp_path / "binary.csv")
    assert code == 2 and "not a FER2013 CSV" in err


@pytest.mark.parametrize("toml, fragment", [
    ('[defaults]\nlearning_rat = 0.1\n[grid]\nseed = [1]\n', "did you mean 'learning_rate'"),
    ('[defaults]\nepochs = "ten"\n[grid]\nseed = [1]\n', "'epochs' must be an integer"),
    ('[grid]\nmodel = "scratch"\n', "must be a non-empty list"),
    ('[grids]\nseed = [1]\n', "unknown section 'grids'"),
    ('[grid\nseed = [1]\n', "is not valid TOML"),
])
def test_bad_experiment_files(cli, tmp_path, toml, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    code, _, err = cli("experiment", path, "--dry-run", "--results", tmp_path / "r")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_predict_refuses_bomb_and_reads_odd_modes(cli, tmp_path):
    from fer_bench.config import RunConfig
    from fer_bench.runs.run import execute

    run_dir = execute(RunConfig(epochs=1), output=tmp_path / "r")
    code, _, err = cli("predict", png_bomb(tmp_path / "bomb.png"), "--run", run_dir)
    assert code == 2 and "too large to decode safely" in err
    for name, make in GOOD_ODD_FILES.items():
        (tmp_path / name).write_bytes(make())
        code, out, err = cli("predict", tmp_path / name, "--run", run_dir, "--detector", "none")
        assert code == 0 and ("more happy" in out or "more sad" in out), (name, err)

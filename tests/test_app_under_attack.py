"""The app under one bad client: upload limits count the bytes that arrive (not the size a client
declares) and stop reading at the limit, camera frames over a camera's size are refused before they
are decoded, malformed messages get our own words, and one session's video never holds up another
session's page and photo answer."""

import asyncio
import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CHROMIUM, CHROMIUM_ARGS, running_app
from fer_bench.errors import UserError
from fer_bench.serving import app
from video_scenes import RAFDB_ALIGNED, write_scene

ASTRONAUT = Path(__file__).resolve().parent / "fixtures" / "astronaut.jpg"


def _post(middleware, chunks: list[bytes], content_length: int | None = None):
    """Send one upload POST through `middleware`; (status, bytes the app behind it read)."""
    read, sent = [], []

    async def shiny(scope, receive, send):  # stands for Shiny's upload handler: reads to the end, answers 200
        while True:
            message = await receive()
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"OK"})

    incoming = [{"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)]
    pulled = []

    async def receive():
        pulled.append(1)
        return incoming[len(pulled) - 1]

    async def send(message):
        sent.append(message)

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/session/abc/upload/1", "headers": headers}
    asyncio.run(middleware(shiny, 1000)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, sum(map(len, read)), len(pulled)


def test_upload_limit_counts_received_bytes_and_stops_reading():
    ok = _post(app.UploadLimit, [b"x" * 400, b"x" * 400])
    assert ok[0] == 200 and ok[1] == 800
    status, stored, pulled = _post(app.UploadLimit, [b"x" * 600] * 500)  # declares nothing, sends 300 kB
    assert status == 413 and stored == 1001 and pulled == 2  # one byte over (refused on disk too), no more read
    status, stored, pulled = _post(app.UploadLimit, [b"x" * 600] * 5, content_length=3000)  # honest, over the limit
    assert status == 413 and stored == 0 and pulled == 0


def test_upload_size_is_judged_on_the_bytes_stored_not_the_declared_size(tmp_path):
    stored = tmp_path / "0.png"
    stored.write_bytes(b"x" * 2000)
    with pytest.raises(UserError, match="face.png: larger than"):
        app._check_size({"name": "face.png", "size": 10, "datapath": str(stored)}, 1000)
    app._check_size({"name": "face.png", "size": 10**9, "datapath": str(stored)}, 5000)


def _jpeg_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, "JPEG", quality=30)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_camera_frames_larger_than_a_camera_or_malformed_are_refused_before_decoding(monkeypatch):
    frame = app.camera_frame_image({"jpeg": _jpeg_uri(320, 240), "t": 1.5})
    assert frame.shape == (240, 320, 3)
    decoded = []
    monkeypatch.setattr("cv2.imdecode", lambda *a: decoded.append(1))
    with pytest.raises(UserError, match="larger than a camera's"):
        app.camera_frame_image({"jpeg": _jpeg_uri(4000, 3000), "t": 0.0})  # 12 MP in a few kB
    assert not decoded
    for message in (None, [], {"jpeg": 5, "t": 1}, {"jpeg": "data:,", "t": "x"}, {"jpeg": _jpeg_uri(8, 8), "t": float("nan")},
                    {"jpeg": "data:image/jpeg;base64,!!!", "t": 1}, {"jpeg": "no comma", "t": 1},
                    {"jpeg": "data:image/jpeg;base64," + "A" * (3 * 2**20), "t": 1}):
        with pytest.raises(UserError) as error:
            app.camera_frame_image(message)
        assert "Error" not in str(error.value) and "camera frame" in str(error.value)


def _lying_upload(url: str, size: int):
    """POST `size` bytes in chunks with no Content-Length (a client that declared a small file):
    the answer's status, or 'cut off' when the server stopped reading and closed the connection."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    chunk = b"x" * 2**20
    try:
        connection.request("POST", f"{parts.path}?{parts.query}", body=(chunk for _ in range(size // len(chunk))),
                           encode_chunked=True)
        return connection.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        return "cut off"
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.skipif(not RAFDB_ALIGNED.is_dir(), reason="../shared/data/rafdb is absent")
def test_one_session_analysing_a_video_does_not_hold_up_another(tmp_path):
    """Session A uploads a 40 s video; while it is analysed, session B loads the page and gets the
    astronaut's answer, well before A's video is done; a client declaring a small file and sending a
    big one is cut off; both sessions are still served at the end."""
    from playwright.sync_api import sync_playwright

    video = write_scene(tmp_path / "long.mp4", seconds=40)
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        a, b = browser.new_page(), browser.new_page()
        a.goto(url)
        a.set_input_files("input#video", str(video))
        a.wait_for_selector(".shiny-progress-notification, .shiny-notification", timeout=60_000)
        started = time.monotonic()
        b.goto(url, timeout=20_000)
        page_seconds = time.monotonic() - started
        b.set_input_files("input#image", str(ASTRONAUT))
        b.wait_for_selector("#sentence-1", timeout=60_000)
        photo_seconds = time.monotonic() - started
        assert a.locator("#video-summary").count() == 0, "the video finished first: the test proves nothing"
        assert page_seconds < 5 and photo_seconds < 15, (page_seconds, photo_seconds)
        print(f"while another session analysed a video: page {page_seconds:.1f} s, photo answer {photo_seconds:.1f} s")
        upload_url = b.evaluate("""() => new Promise((ok, fail) => Shiny.shinyapp.makeRequest(
            "uploadInit", [[{name: "small.png", size: 1000, type: "image/png"}]], init => ok(init.uploadUrl), fail))""")
        assert _lying_upload(url + upload_url, 250 * 2**20) in (413, "cut off")
        a.wait_for_selector("#video-summary", timeout=300_000)
        b.set_input_files("input#image", str(ASTRONAUT))
        b.wait_for_selector("#sentence-1", timeout=60_000)
        browser.close()

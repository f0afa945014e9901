"""The seed's Shiny app, rebuilt with Shiny for Python: upload a photo (or take one with a phone's
camera), see every face found with a numbered box, the 48x48 crop each answer came from, its
calibrated class probabilities and the seed's sentence, and which model answered. Below it: a
video upload answered with each face's timeline and summary (`video`), and a live browser camera
(`www/camera.js` sends frames; each session keeps its own face tracker) with boxes and a rolling
timeline.

One client cannot stall or bloat the server for the others: detection and inference run on a small
pool of worker threads (Shiny's extended tasks), never on the event loop, so every session keeps
being served while one video is analysed; an upload is cut off at its limit as its bytes arrive
(whatever size the client declared), and a camera frame larger than a camera's is refused before
it is decoded."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..data.photos import Photo, read_image
from ..errors import UserError
from .predict import FaceAnswer, LoadedRun, answer_photos

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_VIDEO_BYTES = 200 * 1024 * 1024  # also what any upload request may carry (UploadLimit)
MAX_CAMERA_MESSAGE = 2 * 1024 * 1024  # a camera frame's data URI
MAX_CAMERA_PIXELS = 1920 * 1080  # the browser sends 320 px wide frames; anything above a camera's is refused
HEAVY_WORKERS = 2  # photos, videos and camera frames analysed at once (the rest wait their turn)
CAMERA_JS = Path(__file__).resolve().parent / "www" / "camera.js"
BOX_COLOURS = ("lime", "orange", "magenta", "cyan", "yellow", "red")


def _crop_uri(answer: FaceAnswer) -> str:
    """The face's 48x48 model input, enlarged 3x, as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(answer.pixels).resize((144, 144), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _face_card(answer: FaceAnswer):
    """One face: number, crop, probability bars (calibrated), sentence."""
    from shiny import ui

    n = answer.face
    bars = [ui.div(ui.span(f"{name} {p:.0%}", style="display:inline-block;width:9em"),
                   ui.span(style=f"display:inline-block;height:0.9em;width:{p * 12:.2f}em;background:#1f77b4"),
                   class_="bar") for name, p in sorted(answer.probabilities.items(), key=lambda kv: -kv[1])]
    where = f"face {n}" if answer.box else "no face found: the whole image was used (the answer may be meaningless)"
    return ui.div(
        ui.h4(where, style=f"color:{BOX_COLOURS[(n - 1) % len(BOX_COLOURS)] if answer.box else 'black'}"),
        ui.div(ui.img(src=_crop_uri(answer), alt=f"the 48x48 crop of face {n}", class_="crop",
                      style="image-rendering:pixelated;margin-right:1em"),
               ui.div(*bars, class_="bars"), style="display:flex;align-items:center;flex-wrap:wrap"),
        ui.p(ui.strong(answer.sentence, id=f"sentence-{n}")),
        *[ui.p(ui.em(f"Note: {caution}"), class_="caution") for caution in answer.cautions],
        id=f"face-{n}", class_="face card", style="padding:0.5em;margin:0.5em 0",
    )


def _check_size(upload: dict, limit: int) -> None:
    """An upload whose received bytes (on disk, not the size the client declared) exceed `limit` is
    a UserError naming it."""
    if Path(upload["datapath"]).stat().st_size > limit:
        raise UserError(f"{upload['name']}: larger than {limit // 2**20} MB")


def camera_frame_image(message) -> "np.ndarray":
    """The BGR frame of a camera message ({"jpeg": data URI, "t": seconds}), or UserError: a malformed
    message, a frame over MAX_CAMERA_PIXELS (read from its header, before decoding) or not a JPEG."""
    import cv2
    import numpy as np
    from PIL import Image

    if not (isinstance(message, dict) and isinstance(message.get("jpeg"), str)
            and isinstance(message.get("t"), (int, float)) and math.isfinite(message["t"])):
        raise UserError("a camera frame message must hold a JPEG data URI and a time")
    if len(message["jpeg"]) > MAX_CAMERA_MESSAGE or "," not in message["jpeg"]:
        raise UserError("a camera frame was not a JPEG data URI of at most 2 MB")
    try:
        data = base64.b64decode(message["jpeg"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
    except (binascii.Error, ValueError, OSError):
        raise UserError("a camera frame could not be read") from None
    if width * height > MAX_CAMERA_PIXELS:
        raise UserError(f"a camera frame of {width}x{height} is larger than a camera's ({MAX_CAMERA_PIXELS:,} pixels)")
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise UserError("a camera frame could not be read")
    return frame


class UploadLimit:
    """ASGI middleware in front of Shiny: an upload request's body is cut off once it exceeds `limit`
    bytes (at once when its Content-Length says so), answered 413, and never read further. The file
    Shiny stored then holds limit + 1 bytes, which `_check_size` refuses."""

    def __init__(self, app, limit: int = MAX_VIDEO_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or "/upload/" not in scope["path"]:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        received, over = 0, False

        async def limited_receive():
            nonlocal received, over
            message = await receive() if not over else {"type": "http.request", "body": b"", "more_body": False}
            if message["type"] == "http.request" and not over:
                body = message.get("body", b"")
                received += len(body)
                if received > self.limit:  # keep one byte over the limit: the stored file shows it
                    over = True
                    message = {"type": "http.request", "body": body[:len(body) - (received - self.limit - 1)],
                               "more_body": False}
            return message

        async def refusing_send(message):
            if not over:
                return await send(message)
            if message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, limited_receive, refusing_send)

    async def _refuse(self, send):
        text = f"upload larger than {self.limit // 2**20} MB".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _video_answer(summary: dict, out: Path):
    """Per face: its dominant expression, share of time in each, segments, and its timeline."""
    from shiny import ui

    warning = [ui.div(f"Warning: {summary['truncated']}.", id="video-truncated", class_="alert alert-warning")] \
        if summary.get("truncated") else []
    if not summary["faces"]:
        return ui.div(*warning, ui.div(summary["no_face"], id="video-summary", class_="alert alert-warning"))
    cards = []
    for face in summary["faces"]:
        n = face["face"]
        shares = ", ".join(f"{c} {v:.0%}" for c, v in sorted(face["share_of_time"].items(), key=lambda kv: -kv[1]) if v)
        segments = "; ".join(f"{s['label']} {s['start']:.1f}-{s['end']:.1f} s" for s in face["segments"])
        cards.append(ui.div(
            ui.h4(f"face {n}: mostly {face['dominant']}", id=f"video-face-{n}"),
            ui.p(f"seen {face['first_seen']:.1f}-{face['last_seen']:.1f} s; {shares}"), ui.p(f"segments: {segments}"),
            ui.img(src=_png_uri(out / f"timeline_face{n}.png"), alt=f"timeline of face {n}", class_="timeline",
                   style="max-width:100%"), class_="card", style="padding:0.5em;margin:0.5em 0"))
    note = (f"{summary['frames_read']} frames, {summary['frames_analysed']} analysed "
            f"({summary['answers_per_face_per_second']:.1f} answers per face per second), smoothing half-life "
            f"{summary['settings']['smoothing']['half_life_seconds']} s.")
    return ui.div(*warning, ui.div(f"{len(summary['faces'])} face(s) followed. {note}", id="video-summary",
                                   class_="alert alert-info"), *cards)


def build_app(run: LoadedRun):
    """A Shiny App serving `run`'s model (loaded once, shared by every session)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from shiny import App, reactive, render, ui

    app_ui = ui.page_fluid(
        ui.h2("Facial Expression Recognition Test"),
        ui.p("Let's calculate the image's expression percentage: upload a photo with one or more faces, "
             "or take one with your phone's camera."),
        ui.input_file("image", "Photo", accept="image/*", capture="user"),
        ui.output_ui("message"),
        ui.layout_columns(ui.output_plot("photo"), ui.output_ui("faces")),
        ui.p(f"Answered by {run.source} ({run.name}, {run.model_name}, test accuracy {run.test_accuracy:.1%}); "
             f"{run.calibration_note}.", id="run-info"),
        ui.h3("Video"),
        ui.input_file("video", "Video (mp4, webm, mov, avi, mkv)", accept="video/*"),
        ui.output_ui("video_answer"),
        ui.h3("Live camera"),
        ui.div(ui.tags.button("Start camera", id="camera-start", type="button", class_="btn btn-primary"),
               ui.tags.button("Stop", id="camera-stop", type="button", class_="btn btn-secondary"),
               ui.span("camera off", id="camera-status", style="margin-left:1em")),
        ui.div(ui.tags.video(id="camera-video", autoplay="", muted="", playsinline="", style="width:480px"),
               ui.tags.canvas(id="camera-overlay", style="position:absolute;left:0;top:0;pointer-events:none"),
               style="position:relative;display:inline-block"),
        ui.tags.canvas(id="camera-timeline", width="480", height="120", style="display:block;border:1px solid #ccc"),
        ui.output_text("camera_answer"),
        ui.include_js(CAMERA_JS),
        title="fer_bench",
    )

    pool = ThreadPoolExecutor(max_workers=HEAVY_WORKERS, thread_name_prefix="fer-bench-analysis")

    async def off_the_loop(work, *args):
        """Run `work(*args)` on the analysis pool: the event loop keeps serving every session."""
        return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

    def server(input, output, session):
        from .tracking import FaceTracker
        from .video import SMOOTH_SECONDS, analyse, faces_in_frame, open_video, output_folder, write_outputs

        tracker = FaceTracker()

        def analyse_video(upload: dict, state: dict):
            """(summary, output folder) of an uploaded video, or the error's text; `state` carries progress."""
            try:
                _check_size(upload, MAX_VIDEO_BYTES)
                source = open_video(Path(upload["datapath"]), upload["name"])
                analysis = analyse(run, source, progress=lambda done, total, rate: state.update(
                    done=done, total=total, rate=rate))
                out = Path(upload["datapath"]).with_name("answer.fer")
                with output_folder(out) as work:
                    summary = write_outputs(analysis, run, source, work, SMOOTH_SECONDS)
                return summary, out
            except UserError as error:
                return str(error)

        @reactive.extended_task
        async def video_task(upload: dict):
            state = {"done": 0, "total": None, "rate": 0.0}
            work = asyncio.ensure_future(off_the_loop(analyse_video, upload, state))
            with ui.Progress(min=0, max=1) as bar:
                while not work.done():
                    total = state["total"] or 1
                    bar.set(min(state["done"] / total, 1.0), message=f"frame {state['done']} of "
                            f"{state['total'] or '?'}, {state['rate']:.0f} frames/s")
                    await asyncio.wait([work], timeout=0.5)
            return work.result()

        @reactive.effect
        @reactive.event(input.video)
        def _start_video():
            if files := input.video():
                video_task.invoke(files[0])

        @render.ui
        def video_answer():
            if video_task.status() == "initial":
                return None
            result = video_task.result()
            if isinstance(result, str):
                return ui.div(result, id="video-error", class_="alert alert-danger")
            return _video_answer(*result)

        def answer_frame(message) -> tuple[list[dict], int, int, str]:
            """The faces in one camera frame, the frame's size and the line shown under the camera."""
            try:
                frame = camera_frame_image(message)
            except UserError as error:
                return [], 1, 1, str(error)
            rows = faces_in_frame(run, frame, float(message["t"]), 0, tracker)
            faces = [{"face": r["face"], "x": r["x"], "y": r["y"], "w": r["w"], "h": r["h"], "label": r["label"],
                      "p": r[f"p_{r['label']}"]} for r in rows]
            text = "; ".join(f"face {f['face']}: {f['label']} {f['p']:.0%}" for f in faces) or "no face in view"
            return faces, frame.shape[1], frame.shape[0], text

        @reactive.extended_task
        async def camera_task(message):
            faces, width, height, text = await off_the_loop(answer_frame, message)
            await session.send_custom_message("camera_faces", {"faces": faces, "width": width, "height": height})
            return text

        @reactive.effect
        @reactive.event(input.camera_frame)
        def _camera_frame():
            camera_task.invoke(input.camera_frame())

        @render.text
        def camera_answer():
            return "" if camera_task.status() == "initial" else camera_task.result()

        def answer_upload(upload: dict) -> tuple[Photo, list[FaceAnswer]] | str:
            try:
                _check_size(upload, MAX_UPLOAD_BYTES)
                photo = read_image(Path(upload["datapath"]).read_bytes(), upload["name"])
                return photo, answer_photos(run, [photo])
            except UserError as error:
                return str(error)

        @reactive.extended_task
        async def photo_task(upload: dict):
            return await off_the_loop(answer_upload, upload)

        @reactive.effect
        @reactive.event(input.image)
        def _start_photo():
            if files := input.image():
                photo_task.invoke(files[0])

        @reactive.calc
        def answer() -> tuple[Photo, list[FaceAnswer]] | str | None:
            return None if photo_task.status() == "initial" else photo_task.result()

        def success() -> tuple[Photo, list[FaceAnswer]] | None:
            result = answer()
            return None if result is None or isinstance(result, str) else result

        @render.ui
        def message():
            result = answer()
            if result is None:
                return ui.p("No image yet.")
            if isinstance(result, str):
                return ui.div(result, id="error", class_="alert alert-danger")
            _, answers = result
            found = sum(a.box is not None for a in answers)
            text = f"{found} face{'s' if found != 1 else ''} found." if found else \
                "No face found: the whole image was used, so the answer may be meaningless."
            return ui.div(text, id="summary", class_="alert alert-info" if found else "alert alert-warning")

        @render.plot(alt="the uploaded image with a numbered box on each face")
        def photo():
            if (result := success()) is None:
                return None
            photo, answers = result
            fig, ax = plt.subplots()
            ax.imshow(photo.image)
            for a in answers:
                if a.box:
                    x, y, w, h = (v / photo.scale for v in a.box)
                    colour = BOX_COLOURS[(a.face - 1) % len(BOX_COLOURS)]
                    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=2))
                    ax.text(x, y - 4, str(a.face), color=colour, fontsize=12, fontweight="bold")
            ax.axis("off")
            return fig

        @render.ui
        def faces():
            if (result := success()) is None:
                return None
            return ui.div(*[_face_card(a) for a in result[1]])

    return App(app_ui, server)


def serve(run: LoadedRun, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the app (behind its upload limit) until interrupted."""
    import uvicorn

    uvicorn.run(UploadLimit(build_app(run)), host=host, port=port, log_level="warning")

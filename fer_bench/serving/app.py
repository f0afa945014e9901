"""The seed's Shiny app, rebuilt with Shiny for Python: upload a photo (or take one with a phone's
camera), see every face found with a numbered box, the 48x48 crop each answer came from, its
calibrated class probabilities and the seed's sentence, and which model answered. Below it: a
video upload answered with each face's timeline and summary (`video`), and a live browser camera
(`www/camera.js` sends frames; each session keeps its own face tracker) with boxes and a rolling
timeline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..data.photos import Photo, read_image
from ..errors import UserError
from .predict import FaceAnswer, LoadedRun, answer_photos

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_VIDEO_BYTES = 200 * 1024 * 1024
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
    """An upload over `limit` bytes is a UserError naming it."""
    if upload["size"] > limit:
        raise UserError(f"{upload['name']}: larger than {limit // 2**20} MB")


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _video_answer(summary: dict, out: Path):
    """Per face: its dominant expression, share of time in each, segments, and its timeline."""
    from shiny import ui

    if not summary["faces"]:
        return ui.div(summary["no_face"], id="video-summary", class_="alert alert-warning")
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
    return ui.div(ui.div(f"{len(summary['faces'])} face(s) followed. {note}", id="video-summary",
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

    def server(input, output, session):
        from .tracking import FaceTracker
        from .video import SMOOTH_SECONDS, analyse, faces_in_frame, open_video, write_outputs

        tracker, camera_text = FaceTracker(), reactive.value("")

        @reactive.calc
        def video_result():
            if not (files := input.video()):
                return None
            upload = files[0]
            try:
                _check_size(upload, MAX_VIDEO_BYTES)
                source = open_video(Path(upload["datapath"]))
                source.name = upload["name"]  # as the user knows it, not the upload's temporary name
                with ui.Progress(min=0, max=source.frames or 1) as bar:
                    analysis = analyse(run, source, progress=lambda done, total, rate: bar.set(
                        done, message=f"frame {done} of {total or '?'}, {rate:.0f} frames/s"))
                out = Path(upload["datapath"]).with_name("answer.fer")
                return write_outputs(analysis, run, source, out, SMOOTH_SECONDS), out
            except UserError as error:
                return str(error)

        @render.ui
        def video_answer():
            result = video_result()
            if result is None:
                return None
            if isinstance(result, str):
                return ui.div(result, id="video-error", class_="alert alert-danger")
            return _video_answer(*result)

        @reactive.effect
        @reactive.event(input.camera_frame)
        async def camera_frame():
            import cv2
            import numpy as np

            message = input.camera_frame()
            faces, width, height = [], 1, 1
            try:
                data = base64.b64decode(message["jpeg"].split(",", 1)[1])
                frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                height, width = frame.shape[:2]
                rows = faces_in_frame(run, frame, float(message["t"]), 0, tracker)
                faces = [{"face": r["face"], "x": r["x"], "y": r["y"], "w": r["w"], "h": r["h"], "label": r["label"],
                          "p": r[f"p_{r['label']}"]} for r in rows]
                camera_text.set("; ".join(f"face {f['face']}: {f['label']} {f['p']:.0%}" for f in faces)
                                or "no face in view")
            except Exception:  # a frame the browser garbled: skip it, keep the camera going
                camera_text.set("a camera frame could not be read")
            await session.send_custom_message("camera_faces", {"faces": faces, "width": width, "height": height})

        @render.text
        def camera_answer():
            return camera_text()

        @reactive.calc
        def answer() -> tuple[Photo, list[FaceAnswer]] | str | None:
            if not (files := input.image()):
                return None
            upload = files[0]
            try:
                _check_size(upload, MAX_UPLOAD_BYTES)
                photo = read_image(Path(upload["datapath"]).read_bytes(), upload["name"])
                return photo, answer_photos(run, [photo])
            except UserError as error:
                return str(error)

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
    """Serve the app until interrupted."""
    from shiny import run_app

    run_app(build_app(run), host=host, port=port, launch_browser=False)

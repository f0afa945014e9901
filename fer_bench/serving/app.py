"""The seed's Shiny app, rebuilt with Shiny for Python: upload a photo (or take one with a phone's
camera), see every face found with a numbered box, the 48x48 crop each answer came from, its
calibrated class probabilities and the seed's sentence, and which model answered."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..data.photos import Photo, read_image
from ..errors import UserError
from .predict import FaceAnswer, LoadedRun, answer_photos

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
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
        id=f"face-{n}", class_="face card", style="padding:0.5em;margin:0.5em 0",
    )


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
        title="fer_bench",
    )

    def server(input, output, session):
        @reactive.calc
        def answer() -> tuple[Photo, list[FaceAnswer]] | str | None:
            files = input.image()
            if not files:
                return None
            upload = files[0]
            try:
                if upload["size"] > MAX_UPLOAD_BYTES:
                    raise UserError(f"{upload['name']}: larger than {MAX_UPLOAD_BYTES // 2**20} MB")
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

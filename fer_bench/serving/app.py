"""The seed's Shiny app, rebuilt with Shiny for Python: upload a photo, see the detected face,
the class probabilities and the seed's sentence, and which run answered."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .predict import LoadedRun, Prediction, predict_image, read_image

MAX_UPLOAD_BYTES = 15 * 1024 * 1024


def build_app(run: LoadedRun):
    """A Shiny App serving `run`'s model (loaded once, shared by every session)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from shiny import App, reactive, render, ui

    app_ui = ui.page_fluid(
        ui.h2("Facial Expression Recognition Test"),
        ui.p("Let's calculate the image's expression percentage: upload a photo with a face (JPEG, PNG or BMP)."),
        ui.input_file("image", "Photo", accept=[".jpg", ".jpeg", ".png", ".bmp"]),
        ui.output_ui("message"),
        ui.layout_columns(ui.output_plot("photo"), ui.output_plot("probabilities")),
        ui.p(f"Answered by {run.source} ({run.model_name}, test accuracy {run.test_accuracy:.1%}).",
             id="run-info"),
        title="fer_bench",
    )

    def server(input, output, session):
        @reactive.calc
        def answer() -> tuple[object, Prediction] | str | None:
            files = input.image()
            if not files:
                return None
            upload = files[0]
            try:
                if upload["size"] > MAX_UPLOAD_BYTES:
                    raise UserError(f"{upload['name']}: larger than {MAX_UPLOAD_BYTES // 2**20} MB")
                image = read_image(Path(upload["datapath"]).read_bytes(), upload["name"])
                return image, predict_image(run, image, upload["name"])
            except UserError as error:
                return str(error)

        def success() -> tuple[object, Prediction] | None:
            result = answer()
            return None if result is None or isinstance(result, str) else result

        @render.ui
        def message():
            result = answer()
            if result is None:
                return ui.p("No image yet.")
            if isinstance(result, str):
                return ui.div(result, id="error", class_="alert alert-danger")
            _, prediction = result
            note = "" if prediction.face_found else " (no face found: the whole image was used)"
            return ui.div(ui.strong(prediction.sentence, id="sentence"), note, class_="alert alert-info")

        @render.plot(alt="the uploaded image with the detected face")
        def photo():
            if (result := success()) is None:
                return None
            image, prediction = result
            fig, ax = plt.subplots()
            ax.imshow(image)
            if prediction.face_box:
                x, y, w, h = prediction.face_box
                ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=2))
            ax.axis("off")
            return fig

        @render.plot(alt="class probabilities")
        def probabilities():
            if (result := success()) is None:
                return None
            _, prediction = result
            fig, ax = plt.subplots()
            names = list(prediction.probabilities)
            ax.barh(names, [prediction.probabilities[n] for n in names], color="tab:blue")
            ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability")
            ax.invert_yaxis()
            return fig

    return App(app_ui, server)


def serve(run: LoadedRun, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the app until interrupted."""
    from shiny import run_app

    run_app(build_app(run), host=host, port=port, launch_browser=False)

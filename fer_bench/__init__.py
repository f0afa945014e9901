"""fer_bench: does frozen-base transfer learning beat a small scratch CNN on FER2013?

The Python API is the same machinery as the `fer-bench` command:

    import fer_bench
    fer_bench.list_models("*net*")                       # registered model names
    built = fer_bench.create_model("mobilenet", 7, 96)   # a BuiltModel (raw 48x48 pixels in)
    folder = fer_bench.run(fer_bench.RunConfig(model="scratch", classes="happy,sad"))  # one run folder
    answers = fer_bench.load_run(folder)                  # its best model, calibrated, ready to predict

Names are imported on first use, so `import fer_bench` stays light (no TensorFlow).
"""

__version__ = "0.4.0"  # the one place: pyproject.toml reads it, CHANGELOG.md says what changed
__all__ = ["RunConfig", "create_model", "list_models", "load_run", "run"]


def __getattr__(name: str):
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    if name == "run":
        from .runs.run import execute

        return execute
    if name == "load_run":
        from .serving.predict import load_run

        return load_run
    raise AttributeError(f"module 'fer_bench' has no attribute {name!r}")

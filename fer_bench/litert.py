"""A TFLite interpreter: LiteRT's (`ai-edge-litert`), or TensorFlow's own where LiteRT has no wheel."""

from __future__ import annotations

from pathlib import Path


def tflite_interpreter(path: Path):
    """An interpreter for the .tflite file at `path`, its tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    from .quiet import stderr_to_devnull

    with stderr_to_devnull():  # LiteRT announces its XNNPACK delegate on the console
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter

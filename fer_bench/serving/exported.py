"""A model exported by `fer-bench export` (ONNX or TFLite), answering like the Keras model it came from.

Beside every exported file lies its sidecar, `<file>.json`: the classes in output order, the input
(raw gray pixels 0-255, shape (n, 48, 48, 1), float32), the calibration temperature, the uncertainty
thresholds, the run it came from, the file's sha256 and the parity check it passed. A program needs
the two files and onnxruntime or ai-edge-litert, nothing else (docs/export.md)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from ..errors import UserError

FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def sidecar_path(path: Path) -> Path:
    return Path(f"{path}.json")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ExportedModel:
    """An exported file's runtime: `predict(x)` maps raw pixels (n, 48, 48, 1) to class probabilities."""

    takes_arrays = True  # data.batches.predict hands it arrays, not a tf.data pipeline

    def __init__(self, path: Path):
        self.path = Path(path)
        self.format = FORMATS.get(self.path.suffix)
        if self.format == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        elif self.format == "tflite":
            from ..litert import tflite_interpreter

            self._interpreter = tflite_interpreter(self.path)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
            self._batch = None
            self._one_at_a_time = threading.Lock()  # an interpreter's tensors serve one caller at a time
        else:
            raise UserError(f"{self.path}: not an exported model (.onnx or .tflite)")

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([self._answer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
                              or [np.zeros((0, 0), np.float32)])

    def _answer(self, x: np.ndarray) -> np.ndarray:
        if self.format == "onnx":  # (an onnxruntime session takes concurrent calls)
            return self._session.run(None, {self._input: x})[0]
        with self._one_at_a_time:  # the app's and serve's worker threads share one model
            if self._batch != len(x):  # TFLite tensors have one shape at a time
                self._interpreter.resize_tensor_input(self._input, list(x.shape))
                self._interpreter.allocate_tensors()
                self._batch = len(x)
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()


def load_exported(path: Path) -> tuple[ExportedModel, dict]:
    """An exported file and its sidecar, checked to belong together (by the file's sha256)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model not found: {path}")
    sidecar = sidecar_path(path)
    try:
        facts = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} has no readable sidecar {sidecar.name} beside it (`fer-bench export` writes both)") \
            from None
    if facts.get("sha256") != file_sha256(path):
        raise UserError(f"{path} is not the file its sidecar {sidecar.name} describes (sha256 differs); export again")
    try:
        return ExportedModel(path), facts
    except ImportError as error:
        raise UserError(f"{path}: {error.name} is not installed; `pip install fer-bench[export]`") from None

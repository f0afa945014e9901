"""One model, four ways to run it: Keras' `model.predict` (a tf.data pipeline per call), Keras'
`predict_on_batch` (one compiled call), onnxruntime and LiteRT on the exported files. Each runs in its
own fresh process, which reports its cold start (from the process's start to its first answer, imports
included), the time per face at batch 1 and at batch 32 (medians), and its peak memory; ratios are
against `model.predict` in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ..errors import UserError, last_line

CALLS = 100  # timed calls per batch size

# argv: runtime, model file; prints one JSON line. The clock starts before the imports.
_PROBE = """
import json, sys, time
started = time.perf_counter()
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
if kind.startswith("keras"):
    import keras
    model = keras.models.load_model(path, compile=False)
    if kind == "keras-predict":
        answer = lambda x: model.predict(x, verbose=0)
    else:
        answer = model.predict_on_batch
elif kind == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    answer = lambda x: session.run(None, {name: x})[0]
else:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    interpreter = Interpreter(model_path=path)
    index, output, shape = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"], [None]
    def answer(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(index, list(x.shape)); interpreter.allocate_tensors(); shape[0] = x.shape
        interpreter.set_tensor(index, x); interpreter.invoke()
        return interpreter.get_tensor(output)
faces = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1)).astype("float32")
answer(faces[:1])
cold = time.perf_counter() - started
per_face = {}
for batch in (1, 32):
    answer(faces[:batch])
    times = []
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter(); answer(faces[:batch]); times.append(time.perf_counter() - t)
    per_face[batch] = float(np.median(times)) / batch
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"cold_start_s": cold, "per_face_ms_batch1": 1000 * per_face[1],
                  "per_face_ms_batch32": 1000 * per_face[32], "peak_mb": peak}))
"""


def runtime_benchmark(keras_file: Path, exported: dict[str, Path], calls: int = CALLS, progress=print) -> pd.DataFrame:
    """One row per runtime: cold start, ms per face at batch 1 and 32, peak memory, and ratios against
    Keras' `model.predict`. `exported`: {"onnx": file, "tflite": file}."""
    rows = []
    for kind, path in [("keras-predict", keras_file), ("keras-predict_on_batch", keras_file),
                       *((name, file) for name, file in exported.items())]:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PROBE, kind, str(path), str(calls)], capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0:
            raise UserError(f"timing {kind} failed: {last_line(done.stderr)}")
        row = {"runtime": kind, **json.loads(done.stdout.strip().splitlines()[-1]),
               "process_s": time.perf_counter() - started}
        rows.append(row)
        progress(f"{kind}: cold start {row['cold_start_s']:.2f} s, {row['per_face_ms_batch1']:.2f} ms a face alone, "
                 f"{row['per_face_ms_batch32']:.3f} ms a face in 32, peak {row['peak_mb']:.0f} MiB")
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    for column in ("cold_start_s", "per_face_ms_batch1", "per_face_ms_batch32", "peak_mb"):
        table[f"{column}_vs_keras_predict"] = table[column] / base[column]
    return table

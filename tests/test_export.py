"""`fer-bench export`: ONNX and TFLite files that answer as the run's Keras model (parity checked before
anything is written, recorded in the sidecar), taken by predict/evaluate as the model, runnable with the
docs' ten-line examples where neither TensorFlow nor fer_bench can be imported; an export that does not
answer as the model (Keras' own export of a model whose training flag leaks) is refused."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import script_report

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "tests" / "fixtures" / "astronaut.jpg"


def fer(*args, cwd=None) -> subprocess.CompletedProcess:
    """`fer-bench ARGS` in its own process (TensorFlow's converters run in it)."""
    return subprocess.run([sys.executable, "-m", "fer_bench", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    for name, extra in (("fer.onnx", ["--format", "onnx"]), ("fer.tflite", ["--format", "tflite"]),
                        ("fer16.tflite", ["--format", "tflite", "--float16"])):
        done = fer("export", "bundled", *extra, "--out", folder / name)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "argmax agreement" in done.stdout
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name, bound, agreement", [("fer.onnx", 1e-4, 1.0), ("fer.tflite", 1e-4, 1.0),
                                                     ("fer16.tflite", 1e-2, 0.99)])
def test_export_records_its_parity_and_answers_as_predict_does(exported, name, bound, agreement):
    sidecar = json.loads((exported / f"{name}.json").read_text())
    assert sidecar["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert sidecar["parity"]["max_abs_difference"] <= bound and sidecar["parity"]["argmax_agreement"] >= agreement
    assert sidecar["temperature"] > 0 and {"top", "margin"} <= set(sidecar["uncertainty"])
    keras_answer = json.loads(fer("predict", ASTRONAUT, "--json").stdout)[0]
    file_answer = json.loads(fer("predict", ASTRONAUT, "--json", "--run", exported / name).stdout)[0]
    assert file_answer["label"] == keras_answer["label"] == "happy" and file_answer["box"] == keras_answer["box"]
    for label, p in keras_answer["probabilities"].items():
        assert file_answer["probabilities"][label] == pytest.approx(p, abs=10 * bound)


@pytest.mark.slow
def test_a_file_that_is_not_its_sidecars_is_refused(exported, tmp_path):
    other = tmp_path / "fer.onnx"
    other.write_bytes((exported / "fer.onnx").read_bytes()[:-10] + b"0123456789")
    (tmp_path / "fer.onnx.json").write_text((exported / "fer.onnx.json").read_text())
    done = fer("predict", ASTRONAUT, "--run", other)
    assert done.returncode == 2 and "is not the file its sidecar" in done.stderr
    (tmp_path / "fer.onnx.json").unlink()
    done = fer("predict", ASTRONAUT, "--run", other)
    assert done.returncode == 2 and "no readable sidecar" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_the_docs_examples_run_without_tensorflow_or_fer_bench(exported, tmp_path, fmt):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "export.md").read_text(), re.S)
    (example,) = [b for b in blocks if ("onnxruntime" in b) == (fmt == "onnx")]
    crop = tmp_path / "face.png"
    from PIL import Image

    from fer_bench.data.synthetic import draw_face

    Image.fromarray(draw_face("happy", np.random.default_rng(3))).save(crop)
    for name in (f"fer.{fmt}", f"fer.{fmt}.json"):
        (tmp_path / name).write_bytes((exported / name).read_bytes())
    guard = "import sys\nsys.modules['tensorflow'] = None; sys.modules['fer_bench'] = None; sys.modules['keras'] = None\n"
    done = subprocess.run([sys.executable, "-c", guard + example, str(crop)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    label, share = done.stdout.split()
    assert label in json.loads((tmp_path / f"fer.{fmt}.json").read_text())["classes"] and share.endswith("%")


# Keras' own ONNX export of a model whose BatchNormalization still follows the training flag (as fer_bench's
# saved models did before they were made training-free; a Resizing layer passes training=True on): the parity
# check must refuse it, writing nothing. A vggnet run at 40 px trained here (the bundled model once was one).
LEAKY_EXPORT = """
import json, sys
from pathlib import Path
from fer_bench.errors import UserError
from fer_bench.models import saved
from fer_bench.run_folder import RunFolder
from fer_bench.runs import finished
import keras

def leaky(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    return model

saved.inference_model = leaky
finished._convert = lambda model, fmt, float16, path: model.export(str(path), format="onnx", verbose=False)
out, run = Path(sys.argv[1]), RunFolder(Path(sys.argv[2]))
try:
    finished.export_run(run, "onnx", out / "leaky.onnx")
    print(json.dumps({"refused": False}))
except UserError as error:
    print(json.dumps({"refused": True, "message": str(error), "left": sorted(p.name for p in out.iterdir())}))
"""


def test_the_parity_check_refuses_keras_own_export_of_a_leaking_model(tmp_path):
    from fer_bench.runs.run import RunConfig, execute

    run = execute(RunConfig(model="vggnet", image_size=40, epochs=1, seed=3, precision="float32"),  # a Resizing layer, float32
                  output=tmp_path / "results")
    (tmp_path / "out").mkdir()
    report = script_report(LEAKY_EXPORT, tmp_path / "out", run)
    assert report["refused"] and "does not answer as its Keras model" in report["message"], report
    assert report["left"] == []


def test_a_converter_failure_is_one_line_and_writes_nothing(tmp_path):
    from fer_bench.errors import UserError
    from fer_bench.runs import finished

    with pytest.raises(UserError, match="the tflite converter failed on this model: "):
        finished._convert(object(), "tflite", False, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_transfer_run_trained_in_bfloat16_exports_to_both_formats(tmp_path):
    """A bfloat16 run (`auto` on CPUs with AVX512_BF16) with Normalization layers (MobileFaceNet's
    preprocessing, the frozen head's feature standardisation): TFLite's converter once refused its
    bfloat16 ops and tf2onnx its float32 copy's captured Normalization constants, each with a traceback."""
    done = fer("run", "--model", "mobilefacenet", "--weights", "none", "--image-size", "32", "--epochs", "1",
               "--precision", "bfloat16", "--results", tmp_path / "results")
    assert done.returncode == 0, done.stderr[-2000:]
    run = next((tmp_path / "results").glob("mobilefacenet-frozen-*"))
    for fmt in ("onnx", "tflite"):
        done = fer("export", run, "--format", fmt, "--out", tmp_path / f"m.{fmt}")
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        parity = json.loads((tmp_path / f"m.{fmt}.json").read_text())["parity"]
        assert parity["max_abs_difference"] <= 1e-4 and parity["run_computes_in"] == "bfloat16"
        assert parity["vs_run_argmax_agreement"] >= 0.9 and "the run computes in bfloat16" in done.stdout


def test_predict_with_the_bundled_model_runs_without_tensorflow(tmp_path):
    """The bundled model ships as TFLite too (parity-checked against its best.keras): a photo is answered
    in a process where TensorFlow and Keras cannot be imported, as with them."""
    script = ("import sys\n"
              "sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
              "from fer_bench.cli import main\n"
              f"sys.argv = ['fer-bench', 'predict', {str(ASTRONAUT)!r}, '--json']\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (answer,) = json.loads(done.stdout)
    assert answer["label"] == "happy" and answer["model"].startswith("bundled:")
    from fer_bench.run_folder import BUNDLED_DIR, RunFolder
    from fer_bench.serving.predict import load_trained, predict_files

    (with_keras,) = predict_files(load_trained(RunFolder(BUNDLED_DIR)), [ASTRONAUT])  # its best.keras
    assert answer["box"] == with_keras.box
    for label, p in with_keras.probabilities.items():
        assert answer["probabilities"][label] == pytest.approx(p, abs=1e-4)


@pytest.mark.slow
def test_the_runtime_benchmark_times_each_runtime_in_its_own_process(exported):
    from fer_bench.benchmarks.runtimes import runtime_benchmark
    from fer_bench.run_folder import BUNDLED_DIR

    table = runtime_benchmark(BUNDLED_DIR / "best.keras", {"onnx": exported / "fer.onnx",
                                                          "tflite": exported / "fer.tflite"}, calls=3,
                              progress=lambda line: None)
    assert table["runtime"].tolist() == ["keras-predict", "keras-predict_on_batch", "onnx", "tflite"]
    assert (table["cold_start_s"] > 0).all() and (table["per_face_ms_batch1"] > 0).all()
    assert table["cold_start_s_vs_keras_predict"].iloc[0] == 1.0
    assert table.set_index("runtime").loc["tflite", "peak_mb"] < table.set_index("runtime").loc["keras-predict", "peak_mb"]

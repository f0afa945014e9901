"""`fer-bench evaluate` on other labelled data, and the bundled model."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from fer_bench.config import RunConfig
from fer_bench.data.dataset import write_folder_layout
from fer_bench.data.synthetic import synthetic_dataset
from fer_bench import run_folder
from fer_bench.models import saved
from fer_bench.run_folder import RunFolder
from fer_bench.runs import finished
from fer_bench.runs.run import execute


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    return execute(RunConfig(classes="happy,sad,surprise", epochs=5, seed=2),
                   output=tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def second_set(tmp_path_factory) -> Path:
    """Another synthetic data set (other seed), written as train/test folders."""
    root = tmp_path_factory.mktemp("second") / "faces"
    write_folder_layout(synthetic_dataset(5, 30, seed=9), root)
    return root


def test_evaluate_restricted_to_two_classes(cli, three_class_run, second_set):
    own_metrics = (three_class_run / "metrics.json").read_text()
    code, out, err = cli("evaluate", three_class_run, "--data", second_set, "--classes", "happy,sad")
    assert code == 0, err
    assert "scored among happy, sad only" in out
    (folder,) = (three_class_run / "evaluations").iterdir()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["classes"] == ["happy", "sad"] and metrics["test_images"] == 60
    assert metrics["accuracy"] >= 0.8 and metrics["restricted_to_classes"]
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == ["file", "true", "predicted", "p_happy", "p_sad"]
    assert np.allclose(predictions[["p_happy", "p_sad"]].sum(axis=1), 1, atol=1e-5)
    assert {"per_class.csv", "confusion_matrix.csv", "confusion_matrix.png"} <= {p.name for p in folder.iterdir()}
    assert (three_class_run / "metrics.json").read_text() == own_metrics  # the run's own results untouched


def test_evaluate_single_class_folder_and_csv_with_json(cli, three_class_run, second_set, tmp_path):
    code, out, err = cli("evaluate", three_class_run, "--data", second_set / "test", "--classes", "happy,sad,surprise",
                         "--json", "--tta", "flip")
    assert code == 0, err
    result = json.loads(out)
    assert result["test_images"] == 90 and result["tta"] == "flip" and result["accuracy"] >= 0.8
    rows = [f"{3 if name.startswith('happy') else 4},{' '.join(['128'] * 2304)},PrivateTest"
            for name in ("happy", "sad")]
    (tmp_path / "faces.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    code, out, err = cli("evaluate", three_class_run, "--data", tmp_path / "faces.csv", "--classes", "happy,sad", "--json")
    assert code == 0, err
    assert json.loads(out)["test_images"] == 2


def test_evaluate_scores_a_narrower_run_on_its_classes_and_refuses_a_class_it_does_not_know(
        cli, three_class_run, second_set):
    code, out, err = cli("evaluate", three_class_run, "--data", second_set / "test", "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert "angry" in scored["classes_left_out"] and "angry" not in scored["classes"]
    assert set(scored["classes"]) <= {"happy", "sad", "surprise"}
    code, out, _ = cli("evaluate", three_class_run, "--data", second_set / "test")
    assert code == 0 and "the data's images of angry" in out
    code, _, err = cli("evaluate", three_class_run, "--data", second_set, "--classes", "happy,fear")
    assert code == 2 and "'fear' is not one the run knows" in err


def test_bundle_is_used_when_results_is_empty(cli, three_class_run, tmp_path, monkeypatch):
    bundled = finished.write_bundle(RunFolder(three_class_run), tmp_path / "bundled")
    assert not list(bundled.glob(".*"))
    monkeypatch.setattr(run_folder, "BUNDLED_DIR", bundled)
    photo = tmp_path / "face.png"
    from PIL import Image

    from fer_bench.data.synthetic import draw_face

    Image.fromarray(draw_face("happy", np.random.default_rng(3))).resize((120, 120)).save(photo)
    code, out, err = cli("predict", photo, "--results", tmp_path / "empty-results", "--detector", "none")
    assert code == 0, err
    assert out.startswith("run: the bundled model (scratch")


def test_shipped_bundled_model_loads_and_predicts(cli, tmp_path):
    """The model inside the package: small, complete, it predicts from raw pixels, and `predict`
    uses it when results/ holds no complete run."""
    files = {p.name for p in run_folder.BUNDLED_DIR.iterdir()}
    assert {"best.keras", "config.json", "data.json", "metrics.json", "complete.json"} <= files
    assert sum(p.stat().st_size for p in run_folder.BUNDLED_DIR.iterdir()) < 13e6  # the Keras file and its TFLite copy
    metrics = json.loads((run_folder.BUNDLED_DIR / "metrics.json").read_text())
    assert len(metrics["classes"]) == 7
    model = saved.load_saved_model(run_folder.BUNDLED_DIR / "best.keras")
    faces = synthetic_dataset(2, 2, seed=1).test.images[..., None].astype("float32")
    probs = model.predict(faces, verbose=0)
    assert probs.shape == (len(faces), 7) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert isinstance(model, keras.Model)
    from PIL import Image

    Image.fromarray(faces[0, ..., 0].astype("uint8")).resize((96, 96)).save(tmp_path / "face.png")
    (tmp_path / "results").mkdir()
    code, out, err = cli("predict", tmp_path / "face.png", "--results", tmp_path / "results", "--detector", "none")
    assert code == 0, err
    assert out.startswith(f"run: the bundled model ({metrics['model']}")


# The shipped model's probabilities (angry, disgust, fear, happy, neutral, sad, surprise) for one drawn
# face of each expression (draw_face(name, default_rng(i)) for the i-th class), recorded when it was
# bundled. Update them together with the bundled model; any other change is a regression.
GOLDEN_BUNDLED = np.array([
    [0.5507, 0.1248, 0.1286, 0.0098, 0.0221, 0.0914, 0.0726],
    [0.5031, 0.0271, 0.0777, 0.0696, 0.1245, 0.1785, 0.0194],
    [0.0220, 0.0117, 0.6636, 0.0240, 0.0207, 0.1152, 0.1428],
    [0.4735, 0.0374, 0.1019, 0.0595, 0.0883, 0.1821, 0.0572],
    [0.1117, 0.0215, 0.4245, 0.0505, 0.1009, 0.2588, 0.0322],
    [0.1094, 0.0513, 0.4443, 0.0675, 0.0556, 0.2361, 0.0358],
    [0.2832, 0.0076, 0.3201, 0.0342, 0.1080, 0.2125, 0.0345],
])


def test_the_bundled_model_opens_with_plain_keras(tmp_path):
    """`keras.models.load_model` on the shipped best.keras in a process where fer_bench cannot be
    imported gives the golden predictions."""
    import subprocess
    import sys

    from fer_bench.data.classes import FER_CLASSES
    from fer_bench.data.synthetic import draw_face

    faces = np.stack([draw_face(name, np.random.default_rng(i)) for i, name in enumerate(FER_CLASSES)])
    np.save(tmp_path / "faces.npy", faces[..., None].astype("float32"))
    # predict, a plain call (no `training=`, as exporters trace a model), training=True, and one face alone:
    # the same answers (a Resizing layer's training=True once leaked into every BatchNormalization: 0.63 apart)
    script = ("import sys; sys.modules['fer_bench'] = None\n"
              "import keras, numpy as np\n"
              f"model = keras.models.load_model({str(run_folder.BUNDLED_DIR / 'best.keras')!r})\n"
              f"x = np.load({str(tmp_path / 'faces.npy')!r})\n"
              "calls = [model.predict(x, verbose=0), np.asarray(model(x)), np.asarray(model(x, training=True)),\n"
              "         np.concatenate([np.asarray(model(x[i:i + 1])) for i in range(len(x))])]\n"
              f"np.save({str(tmp_path / 'probs.npy')!r}, np.stack(calls))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for probs in np.load(tmp_path / "probs.npy"):
        np.testing.assert_allclose(probs, GOLDEN_BUNDLED, atol=0.01)


def test_shipped_bundled_model_gives_its_golden_predictions():
    from fer_bench.data.classes import FER_CLASSES
    from fer_bench.data.synthetic import draw_face

    faces = np.stack([draw_face(name, np.random.default_rng(i)) for i, name in enumerate(FER_CLASSES)])
    model = saved.load_saved_model(run_folder.BUNDLED_DIR / "best.keras")
    probs = model.predict(faces[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(probs, GOLDEN_BUNDLED, atol=0.01)
    assert list(probs.argmax(1)) == [0, 0, 2, 0, 2, 2, 2]


def test_evaluate_faces_detect_scores_uncropped_photos_through_the_predict_path(cli, tmp_path):
    """A folder of uncropped photos: each is turned into model input as `predict` does (its default
    detector, BlazeFace; aligned); a photo without a face is scored whole and counted. Calibration is reported."""
    from PIL import Image

    fixture = Path(__file__).parent / "fixtures" / "astronaut.jpg"
    for name in ("happy", "sad"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    Image.open(fixture).save(tmp_path / "photos" / "happy" / "astronaut.jpg")
    Image.new("RGB", (200, 200), (30, 60, 90)).save(tmp_path / "photos" / "sad" / "wall.png")
    code, out, err = cli("evaluate", "bundled", "--data", tmp_path / "photos", "--classes", "happy,sad",
                         "--faces", "detect", "--json", "--out", tmp_path / "evals")
    assert code == 0, err
    headline = json.loads(out)
    assert headline["faces"] == "detect" and headline["test_images"] == 2
    (folder,) = [p for p in (tmp_path / "evals").iterdir() if p.is_dir()]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["face_detection"] == {"detector": "blazeface", "photos_without_a_face": 1}
    bundled_temperature = json.loads((run_folder.BUNDLED_DIR / "calibration.json").read_text())["temperature"]
    assert metrics["calibration"]["temperature"] == pytest.approx(bundled_temperature)
    predictions = pd.read_csv(folder / "predictions.csv")
    assert predictions.loc[predictions["file"].str.contains("astronaut"), "predicted"].item() == "happy"
    assert (folder / "reliability.png").stat().st_size > 0
    code, _, err = cli("evaluate", "bundled", "--data", tmp_path / "photos", "--faces", "maybe")
    assert code == 2 and "--faces must be off or detect" in err

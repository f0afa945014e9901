"""Run identity: what the user asked for, normalised, plus the data and the results format; the same
on every machine; evaluation-only options outside it. Plus portability (no fcntl) and safe loading."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from fer_bench import precision
from fer_bench.config import EVALUATION, IDENTITY, MACHINE, RunConfig, resolve
from fer_bench import run_folder
from fer_bench.runs.experiment import load_experiment
from fer_bench.run_folder import RESULTS_FORMAT, RunFolder, run_id
from fer_bench.runs.run import execute
from fer_bench.training import harness

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = {"train_sha256": "0123456789abcdef", "test_sha256": "fedcba9876543210"}
# the shipped experiment bundled.toml on this fingerprint, as every machine must name it (AVX2 or AVX512_BF16, GPU or not)
BUNDLED_ID = "mobilefacenet-full-all-64px-s7-b3ab0400"


def _bundled_config(monkeypatch, fast_bfloat16: bool, data: Path) -> RunConfig:
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda *a: fast_bfloat16)
    monkeypatch.setattr(precision, "gpu_has_fast_bfloat16", lambda: False)
    (cfg,) = load_experiment(ROOT / "fer_bench" / "experiments" / "bundled.toml", data=str(data)).configs
    return resolve(cfg)


def test_bundled_experiment_has_one_id_on_every_cpu(monkeypatch, tmp_path):
    for name in ("fer2013", "rafdb", "sfew"):  # the shared data sets side by side (the id counts them by content)
        (tmp_path / name).mkdir()
    avx2 = _bundled_config(monkeypatch, fast_bfloat16=False, data=tmp_path / "fer2013")
    bf16 = _bundled_config(monkeypatch, fast_bfloat16=True, data=tmp_path / "fer2013")
    assert avx2.also_train == f"{tmp_path / 'rafdb'}:1,{tmp_path / 'sfew'}:2"
    assert (avx2.precision_used, bf16.precision_used) == ("float32", "bfloat16")  # the probe really differed
    assert avx2.precision == bf16.precision == "auto"
    assert run_id(avx2, FINGERPRINT) == run_id(bf16, FINGERPRINT) == BUNDLED_ID


def test_integer_and_float_numbers_are_one_run():
    from_toml = resolve(RunConfig.from_dict({"learning_rate": 1, "width": 1, "model": "vggnet"}))
    from_flags = resolve(RunConfig(learning_rate=1.0, width=1.0, model="vggnet"))
    assert run_id(from_toml, FINGERPRINT) == run_id(from_flags, FINGERPRINT)
    assert resolve(RunConfig(learning_rate=2.0)).identity() != resolve(RunConfig(learning_rate=1.0)).identity()


def test_roles_decide_what_the_id_hashes():
    base = resolve(RunConfig())
    for name, value in (("tta", "crops"), ("devices", "2"), ("tensorboard", True), ("strict", True),
                        ("data", "/elsewhere/same-pixels")):
        assert run_id(resolve(RunConfig(**{name: value})) if name != "data" else
                      RunConfig(**{**base.__dict__, "data": value}), FINGERPRINT) == run_id(base, FINGERPRINT), name
    for name, value in (("epochs", 3), ("seed", 1), ("precision", "bfloat16"), ("val_split", "test")):
        assert run_id(resolve(RunConfig(**{name: value})), FINGERPRINT) != run_id(base, FINGERPRINT), name
    assert run_id(base, {**FINGERPRINT, "test_sha256": "other"}) != run_id(base, FINGERPRINT)
    roles = {f: RunConfig.__dataclass_fields__[f].metadata["role"] for f in ("tta", "devices", "model")}
    assert roles == {"tta": EVALUATION, "devices": MACHINE, "model": IDENTITY}


def test_results_format_is_part_of_the_id(monkeypatch):
    cfg = resolve(RunConfig())
    before = run_id(cfg, FINGERPRINT)
    monkeypatch.setattr(run_folder, "RESULTS_FORMAT", run_folder.RESULTS_FORMAT + 1)
    assert run_id(cfg, FINGERPRINT) != before


def test_run_command_options_are_the_config_fields(cli):
    import dataclasses

    from fer_bench.config import RECORD

    code, out, _ = cli("run", "--help")
    assert code == 0
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert (flag in out) == (f.metadata["role"] != RECORD), flag


def record_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run folder outside evaluations/ (its records)."""
    import hashlib

    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "evaluations" not in p.parts and p.name != ".lock"}


def test_other_tta_finds_the_finished_run_and_changes_none_of_its_records(tmp_path, monkeypatch):
    first = execute(RunConfig(epochs=2, seed=5), output=tmp_path)
    before = record_hashes(first)
    monkeypatch.setattr(harness, "train_and_evaluate", lambda *a: pytest.fail("trained again"))
    assert execute(RunConfig(epochs=2, seed=5, tta="crops"), output=tmp_path) == first
    assert record_hashes(first) == before


def test_evaluate_calibrate_and_ensemble_score_into_evaluations_and_never_change_records(tmp_path, cli, monkeypatch):
    runs = [execute(RunConfig(epochs=2, seed=seed, val_seed=6), output=tmp_path) for seed in (6, 7)]
    before = [record_hashes(run) for run in runs]
    monkeypatch.setattr(harness, "train_and_evaluate", lambda *a: pytest.fail("trained again"))
    code, out, err = cli("evaluate", runs[0], "--tta", "flip", "--json")
    assert code == 0, err
    scored = json.loads(out)
    written = json.loads((runs[0] / "evaluations" / "own-test-tta-flip" / "metrics.json").read_text())
    assert scored["tta"] == written["tta"] == "flip" and scored["accuracy"] == written["accuracy"]
    code, out, err = cli("evaluate", runs[0].name, "--results", tmp_path)  # a run named by its id
    assert code == 0 and "on its own test set" in out, err
    code, _, err = cli("calibrate", runs[0])
    assert code == 2 and "calibrated already" in err
    code, _, err = cli("ensemble", *runs, "--results", tmp_path)
    assert code == 0, err
    assert [record_hashes(run) for run in runs] == before

def test_every_module_imports_without_fcntl():
    script = ("import sys, pkgutil, importlib; sys.modules['fcntl'] = None\n"
              "import fer_bench\n"
              "for m in pkgutil.walk_packages(fer_bench.__path__, 'fer_bench.'):\n"
              "    if m.name != 'fer_bench.__main__': importlib.import_module(m.name)\n"
              "import fer_bench.runs.run, fer_bench.cli\nprint('imported')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


@pytest.fixture
def lambda_run(tmp_path):
    """A complete-looking run folder whose model holds a Lambda layer (arbitrary code)."""
    run_dir = tmp_path / "crafted"
    run_dir.mkdir()
    pixels = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(pixels)
    probs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(pixels, probs).save(run_dir / "best.keras")
    (run_dir / "metrics.json").write_text(json.dumps({"classes": ["happy", "sad"], "model": "scratch", "accuracy": 0.9}))
    RunFolder(run_dir).write_start_records({"data.json": {}, "environment.json": {},
                                            "config.json": {"model": "scratch", "results_format": RESULTS_FORMAT}})
    RunFolder(run_dir).mark_complete({})
    return run_dir


def test_lambda_layer_model_is_refused_by_predict_and_evaluate(lambda_run, small_folder, cli, tmp_path):
    from PIL import Image

    photo = tmp_path / "face.png"
    Image.new("L", (64, 64), 128).save(photo)
    for args in (("predict", photo, "--run", lambda_run), ("evaluate", lambda_run, "--data", small_folder)):
        code, out, err = cli(*args)
        assert code == 2 and "Lambda layer" in err and "Traceback" not in err + out, args


def test_lambda_layer_model_is_refused_by_the_app(lambda_run):
    done = subprocess.run([sys.executable, "-m", "fer_bench", "app", "--run", str(lambda_run), "--port", "8765"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Lambda layer" in done.stderr


def test_options_that_change_nothing_leave_the_id():
    from fer_bench.config import resolve_val_split

    def one_id(**options):
        return run_id(resolve_val_split(resolve(RunConfig(**options)), has_validation=False), FINGERPRINT)

    adam = {"recipe": "strong", "model": "vggnet"}
    assert one_id(**adam) == one_id(**adam, momentum=0.5)  # Adam(W) has no momentum option
    assert one_id(recipe="seed") != one_id(recipe="seed", momentum=0.5)  # SGD does
    assert one_id() == one_id(finetune_epochs=9, finetune_learning_rate=0.5)  # a scratch model never fine-tunes
    assert one_id(val_split="test") == one_id(val_split="test", val_fraction=0.3)  # nothing carved from train
    assert one_id() != one_id(val_fraction=0.3)


def test_weight_decay_spares_biases_and_batchnorm():
    """One AdamW step with zero gradients moves only what weight decay touches: the kernels."""
    from fer_bench.training.fit import TrainSettings, compile_for_training

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs)))
    compile_for_training(model, TrainSettings(optimizer="adamw", learning_rate=0.1, weight_decay=0.5), 1)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.optimizer.apply_gradients([(keras.ops.zeros_like(w), w) for w in model.trainable_weights])
    moved = {w.path: bool((w.numpy() != b).any()) for w, b in zip(model.trainable_weights, before)}
    assert [path for path, changed in moved.items() if changed] == [model.layers[1].kernel.path], moved


def test_a_run_folder_model_opens_with_plain_keras(tmp_path):
    """best.keras holds stock Keras layers only (no augmentation, no fer_bench layers): it loads and
    predicts in a process where fer_bench cannot be imported, as fer_bench's own loader predicts."""
    import numpy as np

    from fer_bench.models.saved import load_saved_model

    run_dir = execute(RunConfig(model="vggnet", width=0.25, image_size=32, recipe="strong", epochs=1,
                                augment="flip,shift,rotation,zoom,brightness,erasing"), output=tmp_path / "r")
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype("float32")
    np.save(tmp_path / "pixels.npy", pixels)
    script = ("import sys; sys.modules['fer_bench'] = None\n"  # importing fer_bench now fails
              "import keras, numpy as np\n"
              f"model = keras.models.load_model({str(run_dir / 'best.keras')!r})\n"
              f"x = np.load({str(tmp_path / 'pixels.npy')!r})\n"
              "calls = [model.predict(x, verbose=0), np.asarray(model(x)), np.asarray(model(x, training=True))]\n"
              f"np.save({str(tmp_path / 'plain.npy')!r}, np.stack(calls))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = load_saved_model(run_dir / "best.keras").predict(pixels, verbose=0)
    for plain in np.load(tmp_path / "plain.npy"):  # whatever `training` the caller passes (or none)
        np.testing.assert_allclose(plain, ours, atol=1e-2)

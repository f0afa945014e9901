"""Every mistake a user can make ends in one line on stderr and exit code 2, never a traceback."""

import pytest
from conftest import write_faces


def assert_one_line_error(result, fragment):
    code, _out, err = result
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


def test_missing_path(cli, tmp_path):
    assert_one_line_error(cli("run", "--data", tmp_path / "missing"), "data path does not exist")


def test_folder_without_layout(cli, tmp_path):
    (tmp_path / "random").mkdir()
    assert_one_line_error(cli("run", "--data", tmp_path / "random"), "no dataset layout found")


def test_unknown_class(cli, small_folder):
    assert_one_line_error(cli("run", "--data", small_folder, "--classes", "happy,smug"), "unknown class 'smug'")


def test_class_with_no_images(cli, tmp_path):
    write_faces(tmp_path, "train", "happy", "happy", 3)
    write_faces(tmp_path, "train", "sad", "sad", 3)
    write_faces(tmp_path, "test", "happy", "happy", 2)
    (tmp_path / "test" / "sad").mkdir()
    assert_one_line_error(cli("run", "--data", tmp_path), "'sad' has no images in the test split")


def test_unreadable_files_with_strict(cli, small_folder):
    (small_folder / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert_one_line_error(cli("run", "--data", small_folder, "--strict"), "1 unreadable images")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["--classes", "happy"], "at least two classes"),
        (["--image-size", "4"], "too small for scratch"),
        (["--weights", "imagenet"], "takes no --weights"),
        (["--val-split", "holdout"], "--val-split must be one of"),
    ],
)
def test_bad_options(cli, args, fragment):
    assert_one_line_error(cli("run", *args), fragment)


def test_models_lists_every_model_with_params_and_flops(cli):
    code, out, _ = cli("models")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and set(lines) == {"scratch", "vggnet", "minixception", "vgg16", "resnet50", "inceptionv3",
                                        "mobilenet", "mobilenetv2", "mobilefacenet"}
    assert "112px (min 32)" in lines["mobilefacenet"] and "0.467 GFLOPs/image" in lines["mobilefacenet"]
    assert "48px (min 8)" in lines["scratch"] and "width 0.5" in lines["vggnet"]
    assert "30.7 GFLOPs/image" in lines["vgg16"] and "7.71 GFLOPs/image" in lines["resnet50"]


def test_synth_writes_folder_layout_and_refuses_non_empty(cli, tmp_path):
    code, out, _ = cli("data", "synth", tmp_path / "s", "--train-per-class", "2", "--test-per-class", "1")
    assert code == 0 and "wrote 21 images" in out
    assert len(list((tmp_path / "s" / "train" / "surprise").glob("*.png"))) == 2
    assert_one_line_error(cli("data", "synth", tmp_path / "s"), "not empty")


@pytest.mark.parametrize("devices, fragment", [("0", "--devices must be at least 1"),
                                               ("two", "--devices must be a number or 'all', got 'two'")])
def test_bad_device_count(cli, tmp_path, devices, fragment):
    assert_one_line_error(cli("run", "--devices", devices, "--results", tmp_path / "results"), fragment)
    assert not (tmp_path / "results").exists()


def test_every_command_help_ends_with_an_example(cli):
    from fer_bench.cli import app, data_app

    commands = [[c.name or c.callback.__name__] for c in app.registered_commands]
    commands += [["data", c.name] for c in data_app.registered_commands]
    assert len(commands) >= 15
    for command in commands:
        code, out, _ = cli(*command, "--help")
        text = [line.strip(" │") for line in out.splitlines() if line.strip(" │")]
        examples = [line for line in text if line.startswith("Example: fer-bench ")]
        assert code == 0 and examples, (command, out[-800:])


def test_version_is_written_once():
    import tomllib
    from pathlib import Path

    import fer_bench

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert fer_bench.__version__ in (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", "-1"], "--seed must be a number in [0, 4.29497e+09]"),
        (["--seed", "99999999999"], "--seed must be a number in [0, 4.29497e+09]"),
        (["--momentum", "5", "--optimizer", "nesterov"], "--momentum must be a number in [0, 1), got 5.0"),
        (["--label-smoothing", "5"], "--label-smoothing must be a number in [0, 1)"),
        (["--lr", "inf"], "--learning-rate must be a number in (0, 10], got inf"),
        (["--image-size", "0"], "--image-size must be a number in [1, 1024], got 0"),
        (["--image-size", "3000"], "does not fit in memory"),
        (["--model", "mobilenet", "--variant", "finetune", "--finetune-epochs", "-2", "--weights", "none"],
         "--finetune-epochs must be a number in [1, 10000]"),
        (["--val-fraction", "0.001", "--val-split", "train"], "--val-fraction 0.001 cannot split"),
        (["--val-fraction", "0.9999", "--val-split", "train"], "--val-fraction 0.9999 cannot split"),
    ],
)
def test_out_of_bounds_options_are_one_line_and_leave_no_run_folder(cli, tmp_path, args, fragment):
    assert_one_line_error(cli("run", *args, "--results", tmp_path / "results"), fragment)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_data_that_cannot_make_a_run_is_one_line(cli, tmp_path, small_folder):
    one_class = tmp_path / "one"
    write_faces(one_class, "train", "happy", "happy", 6)
    write_faces(one_class, "test", "happy", "happy", 3)
    assert_one_line_error(cli("run", "--data", one_class, "--classes", "all"), "has one class (happy)")
    assert_one_line_error(cli("run", "--data", small_folder, "--also-train", f"{small_folder}:inf"),
                          "must be above 0 and at most 100")
    assert_one_line_error(cli("run", "--data", small_folder, "--also-train", f"{small_folder}:1e12"),
                          "must be above 0 and at most 100")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, _, err = cli("run", "--epochs", "1", "--results", a_file)
    assert code == 2 and "Traceback" not in err
    assert_one_line_error(cli("data", "synth", tmp_path / "s", "--train-per-class", "0"),
                          "--train-per-class must be a number in [1, 100000]")


def test_long_class_names_make_a_run_id_that_fits_a_file_name():
    from fer_bench.data.classes import classes_tag

    names = tuple(f"expression-{'x' * 40}-{k}" for k in range(6))
    assert classes_tag(names) == "6-classes" and classes_tag(("happy", "sad")) == "happy-sad"


def test_run_records_that_are_not_json_or_a_damaged_model_are_one_line(cli, tmp_path):
    from fer_bench.config import RunConfig
    from fer_bench.runs.run import execute

    run_dir = execute(RunConfig(epochs=1, seed=3), output=tmp_path / "results")
    photo = write_faces(tmp_path / "photos", "x", "happy", "happy", 1)[0]
    (run_dir / "best.keras").write_bytes((run_dir / "best.keras").read_bytes()[:500])  # truncated
    assert_one_line_error(cli("evaluate", run_dir), "it is not a Keras model file")
    (run_dir / "best.keras").unlink()
    assert_one_line_error(cli("evaluate", run_dir), "does not exist")
    (run_dir / "metrics.json").write_text("{oops")
    assert_one_line_error(cli("predict", photo, "--run", run_dir, "--detector", "none"),
                          "its metrics.json is not valid JSON")


def test_a_permission_problem_is_not_called_a_full_disk():
    import errno

    from fer_bench.files import storage_error

    denied = storage_error(PermissionError(errno.EACCES, "Permission denied"), "data/train", writing=False)
    assert "cannot read or write data/train: Permission denied" in str(denied) and "free some space" not in str(denied)
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), "results/x")
    assert "free some space" in str(full)

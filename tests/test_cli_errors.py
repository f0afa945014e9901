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

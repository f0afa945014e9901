"""The README cannot drift: every `fer-bench` command it shows is parsed by the real command line
(unknown options fail), and the quick ones run for real."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# run for real (in the checkout, path/to/fer2013 → a folder of synthetic faces); every other one is parsed
RUN_FOR_REAL = {
    "fer-bench models",
    "fer-bench experiment --list",
    "fer-bench predict tests/fixtures/astronaut.jpg",
    "fer-bench experiment original_attempt --data path/to/fer2013 --dry-run",
}


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, without its trailing comment."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                commands += [part.strip() for part in command.split("&&")]
    return commands


def test_the_readme_shows_the_main_commands():
    commands = readme_commands()
    assert commands[:3] == ['pip install -e ".[dev]"', "fer-bench run --model scratch", "python -m pytest -q"]
    assert RUN_FOR_REAL <= set(commands)
    assert len([c for c in commands if c.startswith("fer-bench ")]) >= 20


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("fer-bench ")])
def test_every_readme_command_parses(cli, command):
    args = shlex.split(command)[1:]
    code, out, err = cli(*args, "--help")
    assert code == 0, f"{command}: {err[-500:]}"


def test_the_quick_readme_commands_run(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    code, _, err = cli("data", "synth", tmp_path / "fer2013")
    assert code == 0, err
    outputs = {}
    for command in sorted(RUN_FOR_REAL):
        args = [str(tmp_path / "fer2013") if a == "path/to/fer2013" else a for a in shlex.split(command)[1:]]
        code, out, err = cli(*args)
        assert code == 0, f"{command}: {err[-800:]}"
        outputs[command] = out
    assert "happy" in outputs["fer-bench predict tests/fixtures/astronaut.jpg"]
    assert "original_attempt: 5 runs" in outputs["fer-bench experiment original_attempt --data path/to/fer2013 --dry-run"]
    assert "mobilenet" in outputs["fer-bench models"]

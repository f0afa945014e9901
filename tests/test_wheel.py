"""The built wheel is the whole product: installed outside the checkout it answers a photo with the
bundled model (MTCNN's weights and the model inside the wheel) and finds a shipped experiment by name."""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "tests" / "fixtures" / "astronaut.jpg"


@pytest.mark.slow
def test_the_wheel_alone_predicts_and_runs_a_shipped_experiment(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fer_bench-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the libraries come from this environment (a path line: its .pth files, such as an editable
    # fer_bench's, are not run); fer_bench itself only from the wheel
    (site / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"),
           "FER_BENCH_CACHE": str(tmp_path / "cache")}

    def fer_bench(*args):
        done = subprocess.run([env_dir / "bin" / "fer-bench", *map(str, args)], capture_output=True, text=True,
                              cwd=work, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run([python, "-c", "import fer_bench; print(fer_bench.__file__)"], capture_output=True,
                           text=True, cwd=work, env=env, check=True).stdout
    assert where.startswith(str(env_dir)), where  # not the checkout
    (answer,) = json.loads(fer_bench("predict", ASTRONAUT, "--json"))
    assert answer["label"] == "happy" and answer["model"].startswith("bundled:")
    listed = fer_bench("experiment", "--list")
    assert "original_attempt" in listed and "development" in listed
    planned = fer_bench("experiment", "original_attempt", "--dry-run")
    assert "original_attempt: 5 runs" in planned and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in planned

"""The Python API: the same registry, run and loading as the command line."""

import subprocess
import sys

import numpy as np

import fer_bench


def test_api_lists_builds_runs_and_loads(tmp_path):
    assert "mobilenet" in fer_bench.list_models() and fer_bench.list_models("*net*") == ["mobilefacenet", "mobilenet", "mobilenetv2", "resnet50", "vggnet"]
    built = fer_bench.create_model("scratch", 2, 48)
    assert built.full.output_shape[-1] == 2
    folder = fer_bench.run(fer_bench.RunConfig(model="scratch", epochs=2), output=tmp_path)
    loaded = fer_bench.load_run(folder)
    probs = loaded.probabilities(np.zeros((3, 48, 48), np.uint8))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_import_is_light_and_unknown_names_fail():
    done = subprocess.run([sys.executable, "-c", "import sys, fer_bench; print('tensorflow' in sys.modules)"],
                          capture_output=True, text=True)
    assert done.stdout.strip() == "False"
    try:
        fer_bench.nothing_here
    except AttributeError as error:
        assert "nothing_here" in str(error)
    else:
        raise AssertionError("an unknown name must raise AttributeError")

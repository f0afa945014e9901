"""Every registered model takes a training step at its default and minimum sizes without killing the
process. TensorFlow kernels can crash natively (oneDNN memory corruption on AVX-512 CPUs), so each
model trains in a subprocess: a crash is a failed test with its exit code, not a dead test run.
The same steps run again with oneDNN capped at AVX2 and at AVX-512 without bfloat16
(ONEDNN_MAX_CPU_ISA), so the kernels of users' other CPUs run here too."""

import os
import subprocess
import sys

import pytest

from fer_bench.models import list_models, model_info

# Builds the model at each size (transfer bases made trainable as a whole, as fine-tuning does), then
# takes two training steps on raw pixels in every precision the models run in.
STEP = """
import sys
import numpy as np
from fer_bench.models import create_model
from fer_bench.precision import precision_policy
name, precisions = sys.argv[1], sys.argv[3].split(",")
for size in map(int, sys.argv[2].split(",")):
    for precision in precisions:
        with precision_policy(precision):
            built = create_model(name, 7, size)
        if built.base is not None:
            built.base.trainable = True
        built.full.compile("sgd", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1)).astype("float32")
        built.full.fit(x, np.arange(8) % 7, batch_size=4, epochs=1, verbose=0)
        print(name, size, precision, "ok", flush=True)
"""

TRANSFER = [name for name in list_models() if model_info(name).transfer]
# oneDNN's instruction set -> the precisions trained under it (capped at AVX2, oneDNN has no bfloat16:
# fer_bench refuses it, tested in test_recipes)
CPUS = {"native": "float32,bfloat16", "AVX512_CORE": "float32,bfloat16", "AVX2": "float32"}


@pytest.mark.parametrize("cpu", [pytest.param(cpu, marks=pytest.mark.slow) if cpu == "AVX512_CORE" else cpu
                                 for cpu in CPUS])  # (AVX-512 without bfloat16: the slow suite)
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in TRANSFER else name for name in list_models()
])
def test_model_trains_at_default_and_minimum_size_without_crashing(name, cpu):
    info = model_info(name)
    sizes = f"{info.default_size},{info.min_size}"
    env = {key: value for key, value in os.environ.items() if key not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if cpu != "native":
        env["ONEDNN_MAX_CPU_ISA"] = cpu
    done = subprocess.run([sys.executable, "-c", STEP, name, sizes, CPUS[cpu]], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, f"{name} ({cpu}) exited with {done.returncode}:\n{done.stdout}\n{done.stderr[-2000:]}"
    assert done.stdout.count(" ok") == 2 * len(CPUS[cpu].split(","))

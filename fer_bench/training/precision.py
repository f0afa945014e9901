"""Numeric precision through Keras dtype policies: float32, or mixed bfloat16/float16 (variables in
float32, outputs' softmax in float32). `auto` picks bfloat16 only where the hardware runs it fast."""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_has_fast_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs with AVX512_BF16 or AMX (Linux flags); emulated bfloat16 elsewhere is several times slower."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_fast_bfloat16() -> bool:
    """True when the first visible GPU is NVIDIA compute capability 8.0 or newer (Ampere+)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return tuple(capability) >= (8, 0)


def resolve_precision(precision: str) -> str:
    """'auto' → 'bfloat16' where CPU or GPU support it natively, else 'float32'; others unchanged."""
    if precision != "auto":
        return precision
    return "bfloat16" if cpu_has_fast_bfloat16() or gpu_has_fast_bfloat16() else "float32"


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build models inside this block to get the precision's Keras dtype policy; restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

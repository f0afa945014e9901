"""Numeric precision through Keras dtype policies: float32, or mixed bfloat16/float16 (variables in
float32, outputs' softmax in float32). `auto` picks bfloat16 only where the hardware runs it fast."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import keras

from .errors import UserError

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# Instruction sets a user may cap oneDNN (TensorFlow's CPU kernels) at: below AVX512_CORE oneDNN has no
# bfloat16 convolution at all and TensorFlow aborts at the first one; AVX512_CORE(_VNNI) emulate it.
_ISA_WITHOUT_BFLOAT16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
_ISA_EMULATING_BFLOAT16 = ("AVX512_CORE", "AVX512_CORE_VNNI")


def _onednn_off(environ) -> bool:
    return environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false")


def _onednn_isa_cap(environ) -> tuple[str, str] | None:
    """(variable, instruction set) when the user caps oneDNN (ONEDNN_MAX_CPU_ISA, or its old name
    DNNL_MAX_CPU_ISA); None when uncapped or when oneDNN is off (TensorFlow's own kernels then)."""
    if _onednn_off(environ):
        return None
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = environ.get(variable, "").strip().upper()
        if value and value not in ("ALL", "DEFAULT"):
            return variable, value
    return None


def bfloat16_unavailable(environ=os.environ) -> str | None:
    """Why this process cannot compute in bfloat16, or None when it can."""
    cap = _onednn_isa_cap(environ)
    if cap and cap[1] in _ISA_WITHOUT_BFLOAT16:
        return (f"{cap[0]}={cap[1]} leaves oneDNN no bfloat16 kernels (TensorFlow would abort at its first "
                "convolution); unset it or set AVX512_CORE or higher")
    return None


def cpu_has_fast_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo"), environ=os.environ) -> bool:
    """True on CPUs with AVX512_BF16 or AMX (Linux flags) when oneDNN may use them; emulated bfloat16
    (other CPUs, oneDNN capped below them or switched off) is several times slower."""
    cap = _onednn_isa_cap(environ)
    if _onednn_off(environ) or (cap and cap[1] in _ISA_WITHOUT_BFLOAT16 + _ISA_EMULATING_BFLOAT16):
        return False
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
    """'auto' → 'bfloat16' where CPU or GPU support it natively, else 'float32'; others unchanged.
    UserError for 'bfloat16' where this process cannot run it."""
    if precision == "bfloat16" and (reason := bfloat16_unavailable()):
        raise UserError(f"--precision bfloat16: {reason}, or use --precision float32")
    if precision != "auto":
        return precision
    return "bfloat16" if cpu_has_fast_bfloat16() or gpu_has_fast_bfloat16() else "float32"


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build models inside this block to get the precision's Keras dtype policy; restored after.
    UserError for bfloat16 where this process cannot run it."""
    if precision == "bfloat16" and (reason := bfloat16_unavailable()):
        raise UserError(f"cannot compute in bfloat16: {reason}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

"""The process's peak resident memory, as the operating system counts it."""

from __future__ import annotations

import sys


def peak_resident_mb() -> float | None:
    """The largest resident memory this process has had so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

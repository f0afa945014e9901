"""The process's peak resident memory, as the operating system counts it."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_resident_mb() -> float | None:
    """The largest resident memory this process has had so far, in MiB (None where the OS does not say)."""
    status = Path("/proc/self/status")
    if status.exists():  # Linux: this program's own high-water mark (ru_maxrss would keep a forking parent's)
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

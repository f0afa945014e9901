"""Durations as people read them in progress lines and estimates."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """'1h05m' from an hour on, else '3m05s'."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

"""Measured durations of the session (cold boot, fast start, ...), written to timings.json.

Every pytest-xdist worker merges its own into the same file (under a lock); the session's
controller removes the last run's file first (``clear``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .locks import locked, write_atomically

_timings: dict[str, float] = {}


def record(name: str, seconds: float) -> None:
    _timings[name] = round(seconds, 3)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


def write(path: Path) -> None:
    """Merge this process's timings into ``path``."""
    if not _timings:
        return
    with locked(path.with_name(f".{path.name}.lock")):
        try:
            merged = json.loads(path.read_text())
        except (OSError, ValueError):
            merged = {}
        merged.update(_timings)
        write_atomically(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")

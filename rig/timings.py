"""Measured durations of the session (cold boot, fast start, ...), written to timings.json."""

from __future__ import annotations

import json
from pathlib import Path

_timings: dict[str, float] = {}


def record(name: str, seconds: float) -> None:
    _timings[name] = round(seconds, 3)


def write(path: Path) -> None:
    if _timings:
        path.write_text(json.dumps(_timings, indent=2, sort_keys=True) + "\n")

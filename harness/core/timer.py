"""The one timer: seconds since it started, on the monotonic clock (stages, builds, steps)."""

from __future__ import annotations

import time


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

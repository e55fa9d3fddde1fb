"""The guest's serial console, captured to a file by QEMU (`-chardev file`).

Waits look for a success pattern and fail early on known failure patterns, like
tests/functional's wait_for_console_pattern, but read the file QEMU writes, so the whole
console is always kept in the test directory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from .errors import GuestFailure, VMTimeout

FAILURE_PATTERNS = (r"Kernel panic", r"HARNESS-ERROR.*", r"BUG: ", r"Oops: ")
COUNTER_LINE = re.compile(r"^COUNTER (\d+)\n", re.M)


class Console:
    def __init__(self, path: Path, alive: Callable[[], bool] = lambda: True, directory=None):
        self.path = path
        self._alive = alive
        self._directory = directory

    def text(self, since: int = 0) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Current end of the console; pass as ``since`` to wait only for later output."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for(
        self,
        pattern: str,
        since: int = 0,
        timeout: float = 60.0,
        failures: tuple[str, ...] = FAILURE_PATTERNS,
    ) -> re.Match:
        rx = re.compile(pattern, re.M)
        fail = re.compile("|".join(failures), re.M) if failures else None
        deadline = time.monotonic() + timeout
        while True:
            text = self.text(since)
            if fail and (m := fail.search(text)):
                raise GuestFailure(
                    f"console shows {m.group(0)!r} while waiting for {pattern!r}", self._directory
                )
            if m := rx.search(text):
                return m
            if not self._alive():
                raise GuestFailure(
                    f"QEMU exited while waiting for {pattern!r} on the console", self._directory
                )
            if time.monotonic() > deadline:
                tail = text[-300:]
                raise VMTimeout(
                    f"no {pattern!r} on the console after {timeout}s; tail: {tail!r}",
                    self._directory,
                )
            time.sleep(0.05)

    def counters(self, since: int = 0) -> list[int]:
        """All complete (newline-terminated) `COUNTER n` lines printed since ``since``."""
        return [int(v) for v in COUNTER_LINE.findall(self.text(since))]

    def last_counter(self, since: int = 0) -> int | None:
        values = self.counters(since)
        return values[-1] if values else None

    def wait_counter(
        self, at_least: int | None = None, since: int = 0, timeout: float = 30.0
    ) -> int:
        """Wait for a complete counter line after ``since`` (>= ``at_least`` if given).

        Returns the first such counter when ``at_least`` is None, else the last one seen.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.wait_for(
                COUNTER_LINE.pattern, since=since, timeout=max(0.1, deadline - time.monotonic())
            )
            values = self.counters(since)
            if at_least is None:
                return values[0]
            if values[-1] >= at_least:
                return values[-1]
            if time.monotonic() > deadline:
                raise VMTimeout(
                    f"counter did not reach {at_least} in {timeout}s (last {values[-1]})",
                    self._directory,
                )
            time.sleep(0.1)

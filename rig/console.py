"""The guest's serial console, captured to a file by QEMU (`-chardev file`).

Waits look for a success pattern and fail early on known failure patterns, like
tests/functional's wait_for_console_pattern, but read the file QEMU writes, so the whole
console is always kept in the test directory. The file is read incrementally (only what
was appended), and a wait blocks until inotify says the file was written or QEMU exits.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from .errors import GuestFailure, VMTimeout
from .waiting import FileWatch, ProcessExited

FAILURE_PATTERNS = (r"Kernel panic", r"HARNESS-ERROR.*", r"BUG: ", r"Oops: ")
COUNTER_LINE = re.compile(r"^COUNTER (\d+)\n", re.M)


class Console:
    """The console file, read incrementally; waits block on inotify (the file was written)
    and, when ``exit_fd`` gives the pidfd of the QEMU writing it, on that process's exit.
    Without one (a QEMU libvirt runs), ``alive`` is checked once a second while waiting."""

    HEARTBEAT = 1.0  # seconds between ``alive`` checks when there is no pidfd to wait on

    def __init__(self, path: Path, alive: Callable[[], bool] = lambda: True, directory=None,
                 exit_fd: Callable[[], int | None] = lambda: None):
        self.path = path
        self._alive = alive
        self._directory = directory
        self._exit_fd = exit_fd
        self._data = bytearray()
        self._watch: FileWatch | None = None

    def _refresh(self) -> None:
        """Append what QEMU wrote since the last read (start over if the file was cut)."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < len(self._data):
                    self._data.clear()
                f.seek(len(self._data))
                self._data += f.read()
        except FileNotFoundError:
            self._data.clear()

    def text(self, since: int = 0) -> str:
        self._refresh()
        return self._data[since:].decode(errors="replace").replace("\r", "")

    def mark(self) -> int:
        """Current end of the console; pass as ``since`` to wait only for later output."""
        self._refresh()
        return len(self._data)

    def _wait_for_output(self, deadline: float) -> None:
        """Block until the file changes, QEMU exits (GuestFailure) or ``deadline``."""
        if self._watch is None:
            self._watch = FileWatch(self.path)
        exit_fd = self._exit_fd()
        step = max(0.0, deadline - time.monotonic())
        if exit_fd is None:
            step = min(step, self.HEARTBEAT)
        try:
            self._watch.wait(step, exit_fd)
        except ProcessExited:
            pass  # the caller looks at the output once more, then sees QEMU gone

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

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
            alive = self._alive()  # before reading: output written before an exit counts
            text = self.text(since)
            if fail and (m := fail.search(text)):
                raise GuestFailure(
                    f"console shows {m.group(0)!r} while waiting for {pattern!r}", self._directory
                )
            if m := rx.search(text):
                return m
            if not alive:
                raise GuestFailure(
                    f"QEMU exited while waiting for {pattern!r} on the console", self._directory
                )
            if time.monotonic() >= deadline:
                tail = text[-300:]
                raise VMTimeout(
                    f"no {pattern!r} on the console after {timeout}s; tail: {tail!r}",
                    self._directory,
                )
            self._wait_for_output(deadline)

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
        end = since
        while True:
            # wait for a counter line written after what was looked at last time
            self.wait_for(COUNTER_LINE.pattern, since=end,
                          timeout=max(0.1, deadline - time.monotonic()))
            end = self.mark()
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

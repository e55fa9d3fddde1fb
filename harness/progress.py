"""Progress of a long command as one line: ninja's ``[n/N]``, a test suite's count.

The CLI's printer (harness/cli.py) gives each stage a ``ProgressLine``; the stage reports to
it through its StageLog (``log.progress(done, total, text)``, harness/core/runner.py), so the
stages still print nothing themselves. What the line shows depends on where the output goes:

- a terminal (a TTY, and not ``CI=true``): one line, rewritten in place with ``\\r`` whenever
  its text changes, cut to the terminal's width so it never wraps; ``close()`` ends it;
- anything else (CI, a pipe, a file): a line at the start and each time another ``step``
  percent (10) is done, and one at the end — a dozen lines per command, never one per
  ninja edge or per test.

The full output of the command still goes to its stage log; this is only what the person
watching sees (``build.py -v`` echoes the whole output instead, and shows no progress line).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import TextIO

_TRUE = ("1", "true", "yes", "on")


def interactive(out: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``out`` is a terminal someone watches: a TTY, and not a CI run."""
    environ = os.environ if environ is None else environ
    if environ.get("CI", "").strip().lower() in _TRUE:
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class ProgressLine:
    """One command's progress, printed to ``out`` (see the module docstring)."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None,
                 step: int = 10, width: int | None = None, indent: str = "    "):
        self.out = out or sys.stdout
        self.tty = interactive(self.out) if tty is None else tty
        self.step = step
        self.indent = indent
        self._width = width
        self._shown = ""  # the text on the terminal line (tty)
        self._bucket: tuple[int, int] | None = None  # (total, step bucket) last printed
        self._last: tuple[int, int, str] | None = None  # the last update, for close()
        self._printed = ""  # the last line printed (not a tty)

    def update(self, done: int, total: int, text: str) -> None:
        if total <= 0:
            return
        self._last = (done, total, text)
        if self.tty:
            self._rewrite(text)
            return
        bucket = min(done, total) * 100 // total // self.step
        if self._bucket is not None:
            last_total, last_bucket = self._bucket
            # the same run: only a new step; a new total (ninja regenerated build.ninja
            # and started over) starts the count again
            if total == last_total and bucket <= last_bucket:
                return
        self._bucket = (total, bucket)
        self._print(text)

    def close(self) -> None:
        """Finish the line: a terminal keeps the last state and moves to the next line; in
        CI the last state is printed unless the last line printed was it."""
        if self._last is None:
            return
        text = self._last[2]
        if self.tty:
            if self._shown:
                self.out.write("\n")
                self.out.flush()
            self._shown = ""
        elif text != self._printed:
            self._print(text)  # where it stopped (a failed build, a partial run)
        # the next update starts a new command (stock after patched: the same total again)
        self._last, self._bucket, self._printed = None, None, ""

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- output ---------------------------------------------------------------------

    def _print(self, text: str) -> None:
        self._printed = text
        self.out.write(f"{self.indent}{text}\n")
        self.out.flush()

    def _rewrite(self, text: str) -> None:
        width = self._width or shutil.get_terminal_size((100, 24)).columns
        line = (self.indent + text)[: max(width - 1, 10)]
        if line == self._shown:
            return
        # \r to the line's start, the text, then erase what a longer text left behind
        self.out.write(f"\r{line}\x1b[K")
        self.out.flush()
        self._shown = line


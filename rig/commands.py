"""Running a command from the rig: an argument list, a timeout, one Result, one log style.

``run`` is the one subprocess wrapper of the rig's short-lived commands (qemu-img,
qemu-io, virsh, a peer's binaries in its chroot); a ``CommandLog`` is a test's log file
(stdlib logging through harness/core/logs.py), in which each command appears as
``$ argv``, its output (stderr after ``[stderr]``) and ``# exit N after S s``. Callers
decide what an exit code means; a timeout is a Result with ``returncode`` None.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.logs import LogFile
from harness.core.timer import Timer

_LOG = logging.getLogger("rig.commands")


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int | None  # None: timed out (and killed)
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class CommandLog(LogFile):
    """A test's command log (``path``); ``None``: commands are run but not logged."""

    def __init__(self, path: Path | str | None):
        super().__init__("rig.commands", path if path is not None else os.devnull)
        self.enabled = path is not None

    def write(self, text: str) -> None:
        if self.enabled:
            super().write(text)

    def note(self, text: str) -> None:
        if self.enabled:
            super().note(text)

    def run(self, argv: Sequence, *, env: Mapping[str, str] | None = None,
            timeout: float = 300, input: str | None = None,
            cwd: Path | str | None = None) -> Result:
        return run(argv, env=env, timeout=timeout, input=input, cwd=cwd, log=self)


def run(argv: Sequence, *, env: Mapping[str, str] | None = None, timeout: float = 300,
        input: str | None = None, cwd: Path | str | None = None,
        log: CommandLog | None = None) -> Result:
    """Run ``argv`` (``env`` replaces the environment when given); stdin is ``input`` or
    nothing. Logged to ``log`` when there is one."""
    argv = [str(a) for a in argv]
    if log:
        log.write(f"$ {shlex.join(argv)}")
    clock = Timer()
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              errors="replace", env=None if env is None else dict(env),
                              cwd=cwd, timeout=timeout, check=False,
                              stdin=None if input is not None else subprocess.DEVNULL)
        res = Result(argv, proc.returncode, proc.stdout, proc.stderr, clock.seconds)
    except subprocess.TimeoutExpired as exc:
        res = Result(argv, None, _text(exc.stdout), _text(exc.stderr), clock.seconds)
    end = (f"# TIMEOUT after {timeout}s" if res.timed_out else
           f"# exit {res.returncode} after {res.seconds:.2f}s")
    if log:
        log.write(res.stdout + (f"[stderr]\n{res.stderr}" if res.stderr else ""))
        log.write(end)
    else:  # no file of its own: pytest's log capture shows it with a failed test
        _LOG.info("$ %s\n%s", shlex.join(argv), end)
    return res

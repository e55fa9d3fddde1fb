"""Running commands: argument lists only, every command logged.

Each pipeline stage owns a ``StageLog``; every command it runs is written
to that log as a shlex-quoted line followed by its combined output, which
is flushed as it arrives so nothing is lost when a command fails. A stage
tells how far a long command is with ``log.progress(done, total, text)``:
the pipeline hands the log its observer's progress line (the CLI prints it,
harness/progress.py), or none.

Every command has a timeout (``DEFAULT_TIMEOUT`` unless the caller gives
one): a command that runs longer is hung, and its whole process group
(ninja's compilers, pytest's QEMUs) is killed and CommandTimeout raised.
The command runs in its own process group so that it can be killed as a
whole; Ctrl-C is forwarded to it (SIGINT, then SIGKILL after a grace
period) so nothing is left running when the harness stops.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from harness.core.errors import CommandFailed, CommandTimeout, EnvironmentProblem
from harness.core.logs import LogFile
from harness.core.timer import Timer

# Longer than anything the harness runs on a 2-core machine (a clean build of both trees
# takes about 40 minutes, the QEMU suites a few): past this a command is hung.
DEFAULT_TIMEOUT = 3 * 3600.0
INTERRUPT_GRACE = 20.0  # seconds a command gets to clean up after Ctrl-C


class Progress(Protocol):
    """Where a stage's progress goes (harness/progress.py's ProgressLine)."""

    def update(self, done: int, total: int, text: str) -> None: ...

    def close(self) -> None: ...


class StageLog(LogFile):
    """A stage's log file (stdlib logging, harness/core/logs.py): every command and its
    output; with ``echo`` the runner also shows command output on the terminal, and the
    stage's progress goes on to ``progress``."""

    def __init__(self, path: Path, echo: bool = False, progress: Progress | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__("harness.stage", path)
        self.echo = echo
        self._progress = progress

    def progress(self, done: int, total: int, text: str) -> None:
        """``done`` of ``total`` ('build patched: [57/243] 23%'): shown, never logged."""
        if self._progress is not None:
            self._progress.update(done, total, text)

    def progress_done(self) -> None:
        """The command that progressed ended: the next progress starts a new line."""
        if self._progress is not None:
            self._progress.close()

    def close(self) -> None:
        self.progress_done()  # nothing else stays open: each record appends to the file

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullLog(StageLog):
    """Discards everything (used by tests and quick queries)."""

    def __init__(self):  # noqa: D401 - no file
        LogFile.__init__(self, "harness.null", os.devnull)
        self.echo = False
        self._progress = None

    def write(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def which(tool: str, package: str | None = None) -> str:
    path = shutil.which(tool)
    if path is None:
        hint = f"apt-get install {package}" if package else f"install {tool}"
        raise EnvironmentProblem(f"required tool '{tool}' not found in PATH", hint=hint)
    return path


def run(
    argv: Sequence[str | os.PathLike],
    log: StageLog,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    on_line: Callable[[str], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess:
    """Run ``argv`` (never through a shell), logging command and output.
    ``env`` adds to the environment; a None value removes that variable. ``on_line`` sees
    each line of output as it arrives, after it is logged (the build reads ninja's status
    from it); ``pass_fds`` are file descriptors the command inherits.

    CommandFailed when it exits non-zero (unless ``check`` is false); CommandTimeout,
    whatever ``check`` says, when it ran longer than ``timeout`` seconds (None: no limit).
    """
    args = [os.fspath(a) for a in argv]
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)  # None: not inherited
        else:
            full_env[key] = value
    where = f" (in {cwd})" if cwd else ""
    log.write(f"$ {shlex.join(args)}{where}\n")
    clock = Timer()
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=full_env, text=True, errors="replace",
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem(
            f"cannot run '{args[0]}': not installed or not in PATH",
            hint="run `python3 build.py setup` to install the build dependencies",
        ) from exc
    timed_out = threading.Event()

    def on_timeout():
        timed_out.set()
        _signal_group(proc, signal.SIGKILL)

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    chunks = []
    try:
        if timer:
            timer.daemon = True
            timer.start()
        if input is not None:
            try:
                proc.stdin.write(input)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it exited without reading all of it: its exit code says why
        for line in proc.stdout:
            chunks.append(line)
            log.write(line)
            if log.echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if on_line is not None:
                on_line(line)
        rc = proc.wait()
    except BaseException:  # Ctrl-C (the terminal signals only our group), or any error here
        _stop(proc, log)
        raise
    finally:
        if timer:
            timer.cancel()
    output = "".join(chunks)
    seconds = clock.seconds
    if timed_out.is_set():
        log.write(f"# killed after {seconds:.1f}s: timeout {timeout:g}s\n")
        raise CommandTimeout(args, rc, output, log=str(log.path),
                             message=f"command timed out after {timeout:g}s and was "
                                     f"killed: {shlex.join(args)}")
    log.write(f"# exit {rc} after {seconds:.1f}s\n")
    result = subprocess.CompletedProcess(args, rc, output, "")
    if check and rc != 0:
        raise CommandFailed(args, rc, output, log=str(log.path))
    return result


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group the command leads (process_group=0 made it)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen, log: StageLog) -> None:
    """Interrupt the command's group, then kill what is left after the grace period."""
    _signal_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=INTERRUPT_GRACE)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
    log.write("# interrupted\n")

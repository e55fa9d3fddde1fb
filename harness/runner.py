"""Running commands: argument lists only, every command logged.

Each pipeline stage owns a ``StageLog``; every command it runs is written
to that log as a shlex-quoted line followed by its combined output, which
is flushed as it arrives so nothing is lost when a command fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CommandFailed, EnvironmentProblem


class StageLog:
    """A per-stage log file; optionally echoes command output to the terminal."""

    def __init__(self, path: Path, echo: bool = False):
        self.path = path
        self.echo = echo
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        self._fh.write(text)
        self._fh.flush()

    def note(self, text: str) -> None:
        self.write(f"# {text}\n")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullLog(StageLog):
    """Discards everything (used by tests and quick queries)."""

    def __init__(self):  # noqa: D401 - no file
        self.path = Path(os.devnull)
        self.echo = False

    def write(self, text: str) -> None:
        pass

    def close(self) -> None:
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
) -> subprocess.CompletedProcess:
    """Run ``argv`` (never through a shell), logging command and output.
    ``env`` adds to the environment; a None value removes that variable."""
    args = [os.fspath(a) for a in argv]
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)  # None: not inherited
        else:
            full_env[key] = value
    where = f" (in {cwd})" if cwd else ""
    log.write(f"$ {shlex.join(args)}{where}\n")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=full_env, text=True, errors="replace",
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem(
            f"cannot run '{args[0]}': not installed or not in PATH",
            hint="run `python3 build.py setup` to install the build dependencies",
        ) from exc
    if input is not None:
        try:
            proc.stdin.write(input)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it exited without reading all of it: its exit code says why
    chunks = []
    for line in proc.stdout:
        chunks.append(line)
        log.write(line)
        if log.echo:
            sys.stdout.write(line)
            sys.stdout.flush()
    rc = proc.wait()
    output = "".join(chunks)
    log.write(f"# exit {rc} after {time.monotonic() - start:.1f}s\n")
    result = subprocess.CompletedProcess(args, rc, output, "")
    if check and rc != 0:
        raise CommandFailed(args, rc, output, log=str(log.path))
    return result

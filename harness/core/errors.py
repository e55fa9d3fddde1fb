"""The harness's one exception hierarchy and the exit codes the CLI maps it to.

Every error carries the next step for the user (``hint``) and a distinct
exit code per class of failure, so CI and scripts can tell a missing tool
from a patch conflict from a broken build. Every entry point (build.py,
``python3 -m snaptree``, ``python3 -m images``, bench/run.py) ends
through ``fail()``, so one mapping holds for all of them:

    HarnessError
     +-- UsageError            2  the command line asks for something impossible
     +-- EnvironmentProblem    3  a tool, package or directory is missing or unusable
     |    +-- NotReady         3  an earlier stage's output is missing (tree, socket)
     |    |    +-- BuildMissing 3  a build that was never made (or is incomplete)
     |    +-- CommandFailed    3  a command failed where no stage expected it
     +-- BaselineError         4  the baseline cannot be fetched, verified, imported
     +-- PatchConflict         5  a patch does not apply, or the tree is not clean
     +-- BuildFailed           6  configure or ninja failed
     +-- TestsFailed           7  tests, iotests or checkpatch reported failures
"""

from __future__ import annotations

import shlex
import sys

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_BASELINE = 4
EXIT_PATCH = 5
EXIT_BUILD = 6
EXIT_TEST = 7


class HarnessError(Exception):
    """Base class: a message for people, a hint naming the next step."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, log: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        if self.log:
            lines.append(f"  log: {self.log}")
        if hint := self.next_step():
            lines.append(f"  next: {hint}")
        return "\n".join(lines)

    def next_step(self) -> str | None:
        return self.hint


class UsageError(HarnessError):
    """The command line asked for something that cannot be done."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(HarnessError):
    """A tool, package or directory the harness needs is missing or unusable."""

    exit_code = EXIT_ENVIRONMENT


class NotReady(EnvironmentProblem):
    """What an earlier stage makes is not there yet (the QEMU tree was not imported,
    no VM listens on a socket): the hint names the command that makes it."""


class BuildMissing(NotReady):
    """A build the command needs was never made (or lacks binaries): not a build that
    failed (BuildFailed), so CI can tell "forgot to build" from "does not compile"."""


class PeerError(EnvironmentProblem):
    """An older QEMU (a peer chroot, harness/stages/peers.py) cannot be built or run."""


class BaselineError(HarnessError):
    """The pinned baseline cannot be fetched, verified or imported."""

    exit_code = EXIT_BASELINE


class PatchConflict(HarnessError):
    """A patch of the series does not apply, or the work tree is not clean."""

    exit_code = EXIT_PATCH


class BuildFailed(HarnessError):
    """configure or ninja failed (a build that was never run is BuildMissing)."""

    exit_code = EXIT_BUILD


class TestsFailed(HarnessError):
    """A test run (pytest, iotests, checkpatch) reported failures."""

    exit_code = EXIT_TEST


class CommandFailed(EnvironmentProblem):
    """A subprocess exited non-zero; raised by the runner, re-raised as a
    more specific error by the stage that knows what it means. One no stage
    expected reaches the user as an environment problem whose hint names the
    log holding the command's output."""

    def __init__(self, argv, returncode: int, output: str = "", log: str | None = None,
                 message: str | None = None):
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.output = output
        super().__init__(
            message or f"command failed with exit code {returncode}: {shlex.join(self.argv)}",
            log=log,
        )

    def next_step(self) -> str | None:
        if self.hint:
            return self.hint
        if self.log and self.log != "/dev/null":
            return (f"read the command's output in {self.log}, fix what it reports, "
                    "then run the same build.py command again")
        return f"run it by hand to see why: {shlex.join(self.argv)}"


class CommandTimeout(CommandFailed):
    """A subprocess ran longer than its timeout and was killed."""


def exit_code(exc: BaseException) -> int:
    """The process exit code for ``exc`` (the README's table)."""
    if isinstance(exc, HarnessError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


def fail(exc: HarnessError, out=None) -> int:
    """Print ``exc`` for people (message, log, next step); return its exit code."""
    print(exc.render(), file=out or sys.stderr, flush=True)
    return exit_code(exc)

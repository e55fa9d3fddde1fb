"""The harness's one exception hierarchy and the exit codes the CLI maps it to.

Every error carries the next step for the user (``hint``) and a distinct
exit code per class of failure, so CI and scripts can tell a missing tool
from a patch conflict from a broken build.
"""

from __future__ import annotations

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
        if self.hint:
            lines.append(f"  next: {self.hint}")
        return "\n".join(lines)


class UsageError(HarnessError):
    """The command line asked for something that cannot be done."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(HarnessError):
    """A tool, package or directory the harness needs is missing or unusable."""

    exit_code = EXIT_ENVIRONMENT


class PeerError(EnvironmentProblem):
    """An older QEMU (a peer chroot, harness/peers.py) cannot be built or run."""


class BaselineError(HarnessError):
    """The pinned baseline cannot be fetched, verified or imported."""

    exit_code = EXIT_BASELINE


class PatchConflict(HarnessError):
    """A patch of the series does not apply, or the work tree is not clean."""

    exit_code = EXIT_PATCH


class BuildFailed(HarnessError):
    """configure or ninja failed, or a build the caller needs does not exist."""

    exit_code = EXIT_BUILD


class TestsFailed(HarnessError):
    """A test run (pytest, iotests, checkpatch) reported failures."""

    exit_code = EXIT_TEST


class CommandFailed(HarnessError):
    """A subprocess exited non-zero; raised by the runner, re-raised as a
    more specific error by the stage that knows what it means."""

    def __init__(self, argv, returncode: int, output: str = "", log: str | None = None):
        import shlex

        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(
            f"command failed with exit code {returncode}: {shlex.join(self.argv)}",
            log=log,
        )

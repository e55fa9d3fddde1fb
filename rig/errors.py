"""The rig's exception tree. Every error names what failed and where its logs are.

RigError
 +-- BuildMissing        a QEMU build (or a tool it needs) is not there: require.py skips
                         (or fails under --require-all), naming the command
 +-- VMError             something about one VM; carries the VM's directory
      +-- VMLaunchError  QEMU did not start (command line and log tail in the message)
      +-- VMTimeout      waiting for the VM (console pattern, migration, job) took too long
      +-- GuestFailure   a failure pattern (panic, HARNESS-ERROR) appeared on the console
 +-- FeatureAbsent       (also a LookupError) a series feature is not in this build: a
 |                       snapshot without UUID, a series iotest or qtest not in the tree
 +-- MonitorError        a monitor command failed
      +-- HMPError       HMP printed an error for a command (text in .output)
      +-- QMPCommandError  QMP returned an error (class and desc)
      +-- JobError       a QMP job concluded with an error
"""

from __future__ import annotations


class RigError(Exception):
    pass


class BuildMissing(RigError):
    pass


class FeatureAbsent(RigError, LookupError):
    """The expected failure of a series test on a build without the series (rig/features.py)."""


class VMError(RigError):
    def __init__(self, message: str, directory=None):
        if directory is not None:
            message = f"{message}\n(logs: {directory})"
        super().__init__(message)
        self.directory = directory


class VMLaunchError(VMError):
    pass


class VMTimeout(VMError):
    pass


class GuestFailure(VMError):
    pass


class MonitorError(RigError):
    pass


class HMPError(MonitorError):
    def __init__(self, command: str, output: str):
        super().__init__(f"HMP {command!r} failed:\n{output}")
        self.command = command
        self.output = output


class QMPCommandError(MonitorError):
    def __init__(self, command: str, arguments: dict | None, error: dict):
        self.command = command
        self.arguments = arguments
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"QMP {command} {arguments or {}} failed: {self.error_class}: {self.desc}")


class JobError(MonitorError):
    def __init__(self, job_id: str, error: str):
        super().__init__(f"job {job_id} failed: {error}")
        self.job_id = job_id
        self.error = error

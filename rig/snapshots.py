"""VM snapshot operations spelled for each monitor, so one test body covers HMP and QMP.

HMP: savevm / loadvm / delvm / info snapshots (pexpect on the readline monitor).
QMP: the snapshot-save / snapshot-load / snapshot-delete jobs, query-named-block-nodes.
Both run on the same VM; the monitor under test is the only one used for the operation.
"""

from __future__ import annotations

import itertools
import re

from .errors import HMPError, JobError
from .machine import DISK_NODE, VM

_job_ids = itertools.count(1)


class SnapshotOps:
    monitor = ""

    def __init__(self, vm: VM, devices: tuple[str, ...] = (DISK_NODE,), vmstate: str = DISK_NODE):
        self.vm = vm
        self.devices = list(devices)
        self.vmstate = vmstate

    def save(self, tag: str) -> None: ...
    def load(self, tag: str) -> None: ...
    def delete(self, tag: str) -> None: ...
    def tags(self) -> list[str]: ...
    def save_error(self, tag: str) -> str: ...
    def load_error(self, tag: str) -> str: ...
    def stop(self) -> None: ...
    def cont(self) -> None: ...


class HMPSnapshots(SnapshotOps):
    monitor = "hmp"

    def save(self, tag: str) -> None:
        self.vm.hmp.cmd(f"savevm {tag}", timeout=300)

    def load(self, tag: str) -> None:
        self.vm.hmp.cmd(f"loadvm {tag}", timeout=300)

    def delete(self, tag: str) -> None:
        self.vm.hmp.cmd(f"delvm {tag}")

    def tags(self) -> list[str]:
        """Tags of the loadable snapshots in `info snapshots` ("present on all disks")."""
        out = self.vm.hmp.cmd("info snapshots")
        tags: list[str] = []
        section = False
        for line in out.splitlines():
            if line.startswith("List of snapshots present on all disks"):
                section = True
            elif line.startswith("List of partial"):
                section = False
            elif section and (row := re.match(r"^(\d+|--)\s+(\S+)", line)):
                # a table row (ID, TAG, ...); headers, "None", blank lines and
                # the series' "Current snapshot: <uuid>" line are not rows
                tags.append(row.group(2))
        return tags

    def save_error(self, tag: str) -> str:
        return self.vm.hmp.cmd_error(f"savevm {tag}", timeout=300)

    def load_error(self, tag: str) -> str:
        return self.vm.hmp.cmd_error(f"loadvm {tag}", timeout=300)

    def stop(self) -> None:
        self.vm.hmp.cmd("stop")

    def cont(self) -> None:
        self.vm.hmp.cmd("cont")


class QMPSnapshots(SnapshotOps):
    monitor = "qmp"

    def _job(self, command: str, **args) -> None:
        self.vm.qmp.run_job(command, f"{command}-{next(_job_ids)}", timeout=300, **args)

    def save(self, tag: str) -> None:
        self._job("snapshot-save", tag=tag, vmstate=self.vmstate, devices=self.devices)

    def load(self, tag: str) -> None:
        self._job("snapshot-load", tag=tag, vmstate=self.vmstate, devices=self.devices)

    def delete(self, tag: str) -> None:
        self._job("snapshot-delete", tag=tag, devices=self.devices)

    def tags(self) -> list[str]:
        """Tags of the snapshots on the main disk node (query-named-block-nodes)."""
        for node in self.vm.qmp.cmd("query-named-block-nodes", flat=True):
            if node.get("node-name") == self.vmstate:
                return [s["name"] for s in node.get("image", {}).get("snapshots", [])]
        raise AssertionError(f"node {self.vmstate} not in query-named-block-nodes")

    @staticmethod
    def _job_error(run, what: str) -> str:
        """The error of a snapshot job that must fail."""
        try:
            run()
        except JobError as exc:
            return exc.error
        raise AssertionError(f"{what} succeeded; an error was expected")

    def save_error(self, tag: str) -> str:
        return self._job_error(lambda: self.save(tag), f"snapshot-save {tag}")

    def load_error(self, tag: str) -> str:
        return self._job_error(lambda: self.load(tag), f"snapshot-load {tag}")

    def stop(self) -> None:
        self.vm.qmp.cmd("stop")

    def cont(self) -> None:
        self.vm.qmp.cmd("cont")


def for_monitor(monitor: str, vm: VM, **kwargs) -> SnapshotOps:
    return {"hmp": HMPSnapshots, "qmp": QMPSnapshots}[monitor](vm, **kwargs)


__all__ = ["HMPSnapshots", "QMPSnapshots", "SnapshotOps", "for_monitor", "HMPError", "JobError"]

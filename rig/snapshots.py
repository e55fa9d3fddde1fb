"""VM snapshot operations spelled for each monitor, so one test body covers HMP and QMP.

HMP: savevm / loadvm / delvm / info snapshots (pexpect on the readline monitor).
QMP: the snapshot-save / snapshot-load / snapshot-delete jobs, query-named-block-nodes.
Both run on the same VM; the monitor under test is the only one used for the operation.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from .errors import HMPError, JobError
from .machine import DISK_NODE, VM

_job_ids = itertools.count(1)


@dataclasses.dataclass
class InfoSnapshots:
    """HMP `info snapshots`, parsed: both formats (stock; the series' UUID and PARENT_UUID
    columns, DEVICES in the partial table and the "Current snapshot:" line)."""

    text: str
    loadable: dict[str, dict]  # tag -> {"id"[, "uuid", "parent-uuid"]}
    partial: dict[str, dict]  # tag -> {"id"[, "uuid", "parent-uuid", "devices"]}
    current: str | None  # the UUID the "Current snapshot:" line names (None: "none")
    has_current_line: bool


def _none(value: str) -> str | None:
    return None if value == "--" else value


def parse_info_snapshots(text: str) -> InfoSnapshots:
    """Rows are ID, TAG, then columns taken from the right (VM_SIZE and DATE hold spaces)."""
    loadable: dict[str, dict] = {}
    partial: dict[str, dict] = {}
    table: dict[str, dict] | None = None
    uuids = False
    current, saw_current = None, False
    for line in text.splitlines():
        if line.startswith("List of snapshots present on all disks"):
            table = loadable
        elif line.startswith("List of partial"):
            table = partial
        elif m := re.match(r"^Current snapshot: (\S+)$", line):
            current = None if m.group(1) == "none" else m.group(1)
            saw_current, table = True, None
        elif line.startswith("ID "):
            uuids = "UUID" in line.split()
        elif table is not None and re.match(r"^(\d+|--)\s+\S+", line):
            # a table row; "None", blank lines and headers are not rows
            tok = line.split()
            row: dict = {"id": tok[0]}
            if uuids and table is partial:
                row.update({"uuid": _none(tok[-3]), "parent-uuid": _none(tok[-2]),
                            "devices": tok[-1].split(",")})
            elif uuids:
                row.update({"uuid": _none(tok[-2]), "parent-uuid": _none(tok[-1])})
            table[tok[1]] = row
    return InfoSnapshots(text, loadable, partial, current, saw_current)


def node_snapshots(vm: VM, node: str = DISK_NODE) -> dict[str, dict]:
    """{name: SnapshotInfo} of one block node, as query-named-block-nodes reports it (the
    one lookup of it the rig and the tests use)."""
    for n in vm.qmp.cmd("query-named-block-nodes", flat=True):
        if n.get("node-name") == node:
            return {s["name"]: s for s in (n.get("image") or {}).get("snapshots", [])}
    raise AssertionError(f"node {node} not in query-named-block-nodes")


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
        return list(parse_info_snapshots(self.vm.hmp.cmd("info snapshots")).loadable)

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
        return list(node_snapshots(self.vm, self.vmstate))

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

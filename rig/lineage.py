"""VM snapshot lineage helpers (series part 2): UUID operations per monitor, the views.

- ``ByUUID(monitor, vm, devices)``: load/delete by UUID and their expected errors, spelled
  for HMP (`loadvm <uuid>` / `delvm <uuid>`) or QMP (snapshot-load/-delete jobs with `uuid`).
- ``query(vm)``: query-vm-snapshots; ``by_name(data)``: {name: VMSnapshotInfo}.
- ``hmp_info(vm)``: HMP `info snapshots` parsed (loadable rows, partial rows, current).
- ``second_disk_args(path)``: -blockdev/-device for a second qcow2 disk (node disk1).
- ``assert_alive(vm)``: running, and the guest counter still advancing.
- ``record_tree(directory, label, data)``: keeps a tree the test saw for the report.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import snaptree

from .errors import JobError, QMPCommandError
from .machine import DISK_NODE, VM
from .snapshots import InfoSnapshots, node_snapshots, parse_info_snapshots

DISK1_NODE = "disk1"
DISK1_DEVICE = "vdisk1"
_ids = itertools.count(1)


def query(vm: VM, **args) -> dict:
    """query-vm-snapshots, with each snapshot's ``devices`` as node names (in order) and
    ``device-ids`` {node name: that device's snapshot id}: lineage v2 returns a
    VMSnapshotDevice {node-name, id} per device, and that shape is checked here."""
    data = vm.qmp.cmd("query-vm-snapshots", **args)
    for s in data["snapshots"]:
        devs = s["devices"]
        assert all(isinstance(d, dict) and set(d) == {"node-name", "id"} for d in devs), devs
        s["device-ids"] = {d["node-name"]: d["id"] for d in devs}
        s["devices"] = [d["node-name"] for d in devs]
    return data


def by_name(data: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in data["snapshots"]:
        assert s["name"] not in out, f"two VM snapshots named {s['name']}: {data}"
        out[s["name"]] = s
    return out


def assert_device_ids(vm: VM, data: dict) -> None:
    """Each device of each snapshot in ``data`` (from query()) holds that snapshot, with
    the id and UUID query-named-block-nodes reports for it on that node."""
    nodes: dict[str, dict[str, dict]] = {}
    for s in data["snapshots"]:
        for node, ident in s["device-ids"].items():
            if node not in nodes:
                nodes[node] = node_snapshots(vm, node)
            on_node = nodes[node].get(s["name"])
            assert on_node is not None, f"{s['name']} is not on {node}: {nodes[node]}"
            assert (on_node["id"], on_node.get("uuid")) == (ident, s.get("uuid")), (s, on_node)


def second_disk_args(path, node: str = DISK1_NODE, device: str = DISK1_DEVICE) -> tuple:
    """Command line for a second qcow2 disk, attached like machine.VM attaches the first."""
    return (
        "-blockdev",
        f"driver=file,filename={path},node-name={node}-file",
        "-blockdev",
        f"driver=qcow2,file={node}-file,node-name={node}",
        "-device",
        f"virtio-blk-pci,drive={node},id={device}",
    )


def assert_alive(vm: VM) -> None:
    status = vm.qmp.cmd("query-status")["status"]
    assert status == "running", f"VM is {status} after a refused command"
    before = vm.console.last_counter()
    n = vm.console.wait_counter(since=vm.console.mark(), timeout=15)
    assert before is None or n > before, f"guest counter not advancing ({before} -> {n})"


def jobs(vm: VM) -> list[dict]:
    return vm.qmp.cmd("query-jobs")


def record_tree(directory: Path, label: str, data: dict) -> None:
    """Keep a snapshot tree the test saw: ``tree-<label>.json`` (the query-vm-snapshots data)
    and ``tree-<label>.txt`` (its text form) in the test's directory. The report
    (harness/stages/report.py) shows each one's text form with a picture of it beside."""
    assert re.fullmatch(r"[a-z0-9-]+", label), label
    (directory / f"tree-{label}.json").write_text(json.dumps(data, indent=2) + "\n")
    (directory / f"tree-{label}.txt").write_text(snaptree.render(data))


# -- HMP info snapshots -----------------------------------------------------------------


def hmp_info(vm: VM) -> InfoSnapshots:
    """HMP `info snapshots` of a VM with the series (rig/snapshots.parse_info_snapshots):
    it must end with the "Current snapshot:" line."""
    info = parse_info_snapshots(vm.hmp.cmd("info snapshots"))
    assert info.has_current_line, \
        f"no 'Current snapshot:' line in info snapshots:\n{info.text}"
    return info


# -- by UUID, per monitor ---------------------------------------------------------------


class ByUUID:
    """Load / delete by UUID (or any string for the error paths) over one monitor."""

    def __init__(self, monitor: str, vm: VM, devices: tuple[str, ...] = (DISK_NODE,),
                 vmstate: str = DISK_NODE):
        self.monitor = monitor
        self.vm = vm
        self.devices = list(devices)
        self.vmstate = vmstate

    def _job(self, command: str, **args) -> None:
        if command == "snapshot-load":
            args["vmstate"] = self.vmstate
        self.vm.qmp.run_job(command, f"{command}-{next(_ids)}", timeout=300,
                            devices=self.devices, **args)

    def load(self, uuid: str) -> None:
        if self.monitor == "hmp":
            self.vm.hmp.cmd(f"loadvm {uuid}", timeout=300)
        else:
            self._job("snapshot-load", uuid=uuid)

    def delete(self, uuid: str) -> None:
        if self.monitor == "hmp":
            self.vm.hmp.cmd(f"delvm {uuid}", timeout=300)
        else:
            self._job("snapshot-delete", uuid=uuid)

    def _error(self, hmp_cmd: str, command: str, args: dict) -> str:
        if self.monitor == "hmp":
            return self.vm.hmp.cmd_error(f"{hmp_cmd} {args['uuid']}", timeout=300)
        return self.qmp_error(command, **args)

    def load_error(self, uuid: str) -> str:
        return self._error("loadvm", "snapshot-load", {"uuid": uuid})

    def delete_error(self, uuid: str) -> str:
        return self._error("delvm", "snapshot-delete", {"uuid": uuid})

    def qmp_error(self, command: str, **args) -> str:
        """A QMP snapshot job with arbitrary tag/uuid arguments that must fail."""
        try:
            self._job(command, **args)
        except QMPCommandError as exc:
            return exc.desc
        except JobError as exc:
            return exc.error
        raise AssertionError(f"{command} {args} succeeded; an error was expected")

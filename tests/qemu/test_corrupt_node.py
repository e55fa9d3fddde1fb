"""A qcow2 node that was marked corrupt, under the management commands a client such as
libvirt sends (both builds: no series feature is needed; the fixes are stable patches).

On a fatal corruption qcow2 drops the node's driver: every request then fails with
-ENOMEDIUM. Each command here must fail with an error or succeed; QEMU must keep running,
delete the node and quit cleanly. 10.2.2 segfaults in bdrv_reopen_queue_child() on
blockdev-reopen (fixed by 'block: Do not crash reopening a node without a driver')."""

from __future__ import annotations

import subprocess

import pytest

from rig import qcow2
from rig.errors import QMPCommandError
from rig.machine import MachineProfile
from rig.qmp import QMP

# Commands on the node (or all nodes); each either returns or is refused. The jobs are
# refused before they start (the node has no medium); snapshot-save is a job that fails.
COMMANDS = (
    ("query-named-block-nodes", {"flat": True}),
    ("query-block", {}),
    ("query-blockstats", {"query-nodes": True}),
    ("x-debug-query-block-graph", {}),
    ("block-dirty-bitmap-add", {"node": "n0", "name": "b0"}),
    ("block-dirty-bitmap-add", {"node": "n0", "name": "b1", "persistent": True}),
    ("block_resize", {"node-name": "n0", "size": 2 << 20}),
    ("blockdev-snapshot-internal-sync", {"device": "n0", "name": "x"}),
    ("block-stream", {"job-id": "j0", "device": "n0"}),
    ("block-commit", {"job-id": "j1", "device": "n0"}),
    ("blockdev-backup", {"job-id": "j2", "device": "n0", "target": "f0", "sync": "full"}),
    ("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "n0", "file": "f0",
                                      "read-only": True}]}),
    ("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "n0", "file": "f0",
                                      "read-only": False}]}),
)


def _corrupt_image(build, path) -> None:
    """A qcow2 image whose first L2 entry points at the active L1 table: the next write of
    the first cluster trips the metadata overlap check, a fatal corruption."""
    subprocess.run([str(build.img), "create", "-q", "-f", "qcow2", str(path), "1M"],
                   check=True, timeout=60)
    subprocess.run([str(build.io), "-f", "qcow2", "-c", "write -q -P 0x11 0 128k", str(path)],
                   check=True, timeout=60)
    qcow2.point_first_l2_entry_at_active_l1(path)


def test_management_commands_on_a_node_marked_corrupt(build, vm_factory, test_dir, request):
    if build.name != "patched":
        request.applymarker(pytest.mark.xfail(
            reason="upstream: blockdev-reopen of a node without a driver segfaults 10.2.2",
            strict=True))
    image = test_dir / "corrupt.qcow2"
    _corrupt_image(build, image)
    vm = vm_factory("corrupt", fast=False, profile=MachineProfile(nics=()),
                    extra_args=("-S",))
    qmp: QMP = vm.qmp
    qmp.cmd("blockdev-add", driver="qcow2", **{"node-name": "n0"},
            file={"driver": "file", "node-name": "f0", "filename": str(image)})
    qmp.hmp('qemu-io n0 "write -P 0x22 0 512"')  # (qemu-io prints on QEMU's stdout)
    ev = qmp.wait_event(QMP.event("BLOCK_IMAGE_CORRUPTED"), timeout=10,
                        what="BLOCK_IMAGE_CORRUPTED")
    assert ev["data"]["fatal"] is True and ev["data"]["node-name"] == "n0", ev

    answers = []
    for name, args in COMMANDS:
        try:
            qmp.cmd(name, **args)
            answers.append(f"{name}: ok")
        except QMPCommandError as exc:
            answers.append(f"{name}: {exc.desc}")
        assert qmp.cmd("query-status")["status"] == "prelaunch", answers
    reopen = [a for a in answers if a.startswith("blockdev-reopen")]
    assert reopen == ["blockdev-reopen: Cannot reopen 'n0': the node was made unusable by a "
                      "fatal error"] * 2, answers

    qmp.cmd("blockdev-del", **{"node-name": "n0"})
    assert "n0" not in {n["node-name"] for n in qmp.cmd("query-named-block-nodes", flat=True)}
    assert vm.shutdown() == 0, f"QEMU did not quit cleanly: {answers}"

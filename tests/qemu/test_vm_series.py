"""Features of the patch series (SPEC.md §2-3), on a real guest, over HMP and QMP.

Marked `series` (all features): a strict xfail on a build whose probe lacks one
(rig/features.py), must pass on patched.
"""

from __future__ import annotations

import re
import uuid as uuidlib

import pytest

from rig.errors import JobError, QMPCommandError
from rig.lineage import query
from rig.machine import DEFAULT_PROFILE, DISK_NODE
from rig.snapshots import node_snapshots

pytestmark = pytest.mark.series

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _vm_snapshots(vm) -> tuple[str | None, dict[str, dict]]:
    ret = query(vm)
    return ret.get("current"), {s["name"]: s for s in ret["snapshots"]}


def test_snapshots_get_uuid_and_parent(vm, snapshots):
    """A new snapshot gets a fresh v4 UUID; the next one records it as parent; current follows."""
    snapshots.save("s1")
    snapshots.save("s2")
    node = node_snapshots(vm)
    u1, u2 = node["s1"]["uuid"], node["s2"]["uuid"]
    assert UUID_RE.match(u1) and UUID_RE.match(u2) and u1 != u2
    assert "parent-uuid" not in node["s1"], "the first snapshot is a root"
    assert node["s2"]["parent-uuid"] == u1

    current, vms = _vm_snapshots(vm)
    assert current == u2
    assert vms["s1"]["uuid"] == u1 and vms["s1"]["devices"] == [DISK_NODE]
    assert vms["s1"]["device-ids"] == {DISK_NODE: node["s1"]["id"]}
    assert vms["s2"]["parent-uuid"] == u1


def test_load_and_delete_by_uuid(vm, snapshots, monitor):
    """loadvm/snapshot-load by UUID restores RAM and disk; delete by UUID removes it."""
    con = vm.console
    con.wait_counter()
    snapshots.stop()
    c_saved, d_saved = con.last_counter(), vm.disk_counter()
    snapshots.save("by-uuid")
    u = node_snapshots(vm)["by-uuid"]["uuid"]
    snapshots.cont()
    c_after = con.wait_counter(at_least=c_saved + 3)
    snapshots.stop()
    mark = con.mark()
    if monitor == "hmp":
        vm.hmp.cmd(f"loadvm {u}", timeout=300)
    else:
        vm.qmp.run_job("snapshot-load", "load-uuid", uuid=u, vmstate=DISK_NODE, devices=[DISK_NODE])
    assert vm.disk_counter() == d_saved
    snapshots.cont()
    n = con.wait_counter(since=mark)
    assert c_saved < n <= c_saved + 2 and n < c_after
    assert vm.qmp.cmd("query-vm-snapshots").get("current") == u

    if monitor == "hmp":
        vm.hmp.cmd(f"delvm {u}")
    else:
        vm.qmp.run_job("snapshot-delete", "delete-uuid", uuid=u, devices=[DISK_NODE])
    assert "by-uuid" not in node_snapshots(vm)


def test_unknown_or_malformed_uuid_changes_nothing(vm, snapshots, monitor):
    snapshots.save("keep")
    keep = node_snapshots(vm)["keep"]["uuid"]
    assert UUID_RE.match(keep)
    unknown, malformed = str(uuidlib.uuid4()), "12345678-not-a-uuid"
    # what QMP says about each (the uuid argument is parsed; HMP takes it as a tag then)
    qmp_says = {unknown: f"Snapshot '{unknown}' does not exist",
                malformed: f"'{malformed}' is not a valid UUID"}
    for bad in (unknown, malformed):
        if monitor == "hmp":
            # A well-formed UUID no snapshot has is an error for loadvm and delvm; any
            # other unknown string is an unknown tag, as for the QMP jobs: loadvm fails,
            # delvm changes nothing (upstream behaviour; SPEC §3: HMP and QMP agree).
            if bad == unknown:
                for cmd in ("loadvm", "delvm"):
                    err = vm.hmp.cmd_error(f"{cmd} {bad}")
                    assert f"No snapshot with UUID '{bad}'" in err, err
            else:
                err = vm.hmp.cmd_error(f"loadvm {bad}")
                assert bad in err and "does not exist" in err, err
                out = vm.hmp.cmd(f"delvm {bad}")
                assert "rror" not in out, out
        else:
            for cmd in ("snapshot-load", "snapshot-delete"):
                args = {"uuid": bad, "devices": [DISK_NODE]}
                if cmd == "snapshot-load":
                    args["vmstate"] = DISK_NODE
                with pytest.raises((QMPCommandError, JobError)) as exc:
                    vm.qmp.run_job(cmd, f"{cmd}-bad", **args)
                text = exc.value.desc if isinstance(exc.value, QMPCommandError) \
                    else exc.value.error
                assert qmp_says[bad] in text, (cmd, bad, text)
        assert vm.qmp.cmd("query-status")["status"] == "running"
    assert list(node_snapshots(vm)) == ["keep"]
    assert node_snapshots(vm)["keep"]["uuid"] == keep
    mark = vm.console.mark()
    vm.console.wait_counter(since=mark)


def test_snapshot_load_needs_exactly_one_of_tag_and_uuid(vm):
    vm.qmp.run_job("snapshot-save", "save-one", tag="one", vmstate=DISK_NODE, devices=[DISK_NODE])
    u = node_snapshots(vm)["one"]["uuid"]
    for args in ({}, {"tag": "one", "uuid": u}):
        with pytest.raises((QMPCommandError, JobError)):
            vm.qmp.run_job(
                "snapshot-load", "load-bad", vmstate=DISK_NODE, devices=[DISK_NODE], **args
            )


def test_info_snapshots_shows_uuids(vm):
    vm.hmp.cmd("savevm a")
    vm.hmp.cmd("savevm b")
    node = node_snapshots(vm)
    out = vm.hmp.cmd("info snapshots")
    assert node["a"]["uuid"] in out and node["b"]["uuid"] in out


def test_query_netdevs(vm, monitor):
    """query-netdevs lists the -netdev backends with type and peer, and follows add/del."""
    nets = {n["id"]: n for n in vm.qmp.cmd("query-netdevs")}
    for nic in DEFAULT_PROFILE.nics:
        assert nets[nic.netdev_id]["type"] == "user"
        assert nets[nic.netdev_id]["peer-id"] == nic.device_id
    if monitor == "hmp":
        vm.hmp.cmd("netdev_add user,id=hot1,restrict=on")
    else:
        vm.qmp.cmd("netdev_add", type="user", id="hot1", restrict=True)
    nets = {n["id"]: n for n in vm.qmp.cmd("query-netdevs")}
    assert nets["hot1"]["type"] == "user" and "peer-id" not in nets["hot1"]
    vm.qmp.cmd("netdev_del", id="hot1")
    assert "hot1" not in {n["id"] for n in vm.qmp.cmd("query-netdevs")}

"""VM snapshot lineage (series part 2, SPEC.md §2-§3) on real guests, over HMP and QMP.

Each test runs once per monitor: the operation under test (save/load/delete, by tag or UUID)
goes through that monitor; query-vm-snapshots (QMP) and `info snapshots` (HMP) are both
checked where the test looks at the lineage. Marked `series`: a strict xfail on a build
without the series (rig/features.py).

Not repeated here (test_vm_series.py has them): a fresh v4 UUID per snapshot, one
load+delete by UUID of a lone snapshot, load needing exactly one of tag/uuid with a valid tag.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import uuid as uuidlib
from pathlib import Path

import pytest

import snaptree
from rig.lineage import (
    DISK1_NODE,
    ByUUID,
    assert_alive,
    assert_device_ids,
    by_name,
    hmp_info,
    jobs,
    node_snapshots,
    query,
    record_tree,
    second_disk_args,
)
from rig.machine import DISK_NODE
from rig.snapshots import for_monitor

pytestmark = pytest.mark.series("snapshot-uuid", "query-vm-snapshots")

NIL = "00000000-0000-0000-0000-000000000000"
# UUID-shaped but not a UUID (a 'g'): a typo, not a tag anyone means
MALFORMED = "0e6a3f5c-9d5e-4c0b-8f5e-2f4b8e1c7a1g"
REPO = Path(__file__).resolve().parents[2]


def _uuids(data: dict) -> dict[str, str]:
    return {name: s["uuid"] for name, s in by_name(data).items()}


def _parents(data: dict) -> dict[str, str | None]:
    return {name: s.get("parent-uuid") for name, s in by_name(data).items()}


def _shape(data: dict) -> list[tuple[int, str]]:
    return [(d, n.snap["name"]) for d, n in snaptree.build(data).walk()]


def _assert_hmp_agrees(vm, data: dict) -> None:
    """HMP info snapshots shows the same UUIDs, parents, partial set and current."""
    info = hmp_info(vm)
    want = {s["name"]: s for s in data["snapshots"] if not s["partial"]}
    assert {n: (r["uuid"], r["parent-uuid"]) for n, r in info.loadable.items()} == {
        n: (s.get("uuid"), s.get("parent-uuid")) for n, s in want.items()
    }, info.text
    part = {s["name"]: s for s in data["snapshots"] if s["partial"]}
    assert {n: r["devices"] for n, r in info.partial.items()} == {
        n: s["devices"] for n, s in part.items()
    }, info.text
    assert info.current == data.get("current"), info.text
    assert_device_ids(vm, data)


def test_lineage_load_by_uuid_and_restart(vm_factory, monitor):
    """s1, s2 (parent s1), load s1 by UUID (RAM and disk rewind), s3 (parent s1); a new
    QEMU on the same disk continues the tree: s4's parent is s3, the persisted current.

    The restart is a cold boot (fast=False): the fast start's -incoming would replace RAM
    with an unrelated guest's; the lineage lives in the image either way, but a cold boot
    is what "restart QEMU" means and also proves nothing comes from the migration stream.
    """
    vm = vm_factory("first")
    ops, uops, con = for_monitor(monitor, vm), ByUUID(monitor, vm), vm.console

    ops.stop()
    c1, d1 = con.last_counter(), vm.disk_counter()
    ops.save("s1")
    ops.cont()
    c_later = con.wait_counter(at_least=c1 + 3)
    ops.save("s2")  # saved while running
    data = query(vm)
    u = _uuids(data)
    assert _parents(data) == {"s1": None, "s2": u["s1"]}
    assert data["current"] == u["s2"]

    ops.stop()
    assert vm.disk_counter() > d1
    mark = con.mark()
    uops.load(u["s1"])
    assert vm.disk_counter() == d1, "load by UUID restores the disk of s1, not s2"
    assert vm.qmp.cmd("query-status")["status"] == "paused", "the load keeps the run state"
    ops.cont()
    n = con.wait_counter(since=mark)
    assert c1 < n <= c1 + 2 and n < c_later, f"counter {n} after load (s1 at {c1}): RAM"
    assert query(vm)["current"] == u["s1"]

    ops.save("s3")
    data = query(vm)
    u = _uuids(data)
    assert _parents(data) == {"s1": None, "s2": u["s1"], "s3": u["s1"]}
    assert data["current"] == u["s3"]
    assert all(s["devices"] == [DISK_NODE] and not s["partial"] for s in data["snapshots"])
    _assert_hmp_agrees(vm, data)
    vm.shutdown()

    vm2 = vm_factory("second", fast=False, disk=vm.disk)
    vm2.console.wait_counter(timeout=120)
    assert query(vm2) == data, "the tree and the current snapshot survive the restart"
    for_monitor(monitor, vm2).save("s4")
    data = query(vm2)
    u4 = _uuids(data)
    assert {k: v for k, v in u4.items() if k != "s4"} == u
    assert _parents(data)["s4"] == u["s3"] and data["current"] == u4["s4"]
    _assert_hmp_agrees(vm2, data)
    assert _shape(data) == [(0, "s1"), (1, "s2"), (1, "s3"), (2, "s4")]
    record_tree(vm2.workdir, "after-restart", data)


def test_two_disks_one_uuid_and_partial_refused(vm_factory, make_disk, monitor):
    """One save puts one UUID on both disks; a snapshot on one disk only is partial, and
    loading it (by UUID or tag) is refused naming the disk that lacks it; nothing changes."""
    second = make_disk("second.qcow2")
    vm = vm_factory(extra_args=second_disk_args(second))
    devices = (DISK_NODE, DISK1_NODE)
    ops = for_monitor(monitor, vm, devices=devices)
    uops = ByUUID(monitor, vm, devices=devices)

    ops.save("both")
    both = by_name(query(vm))["both"]
    assert both["devices"] == [DISK_NODE, DISK1_NODE] and both["partial"] is False
    on0, on1 = node_snapshots(vm, DISK_NODE)["both"], node_snapshots(vm, DISK1_NODE)["both"]
    assert on0["uuid"] == on1["uuid"] == both["uuid"]
    assert query(vm)["current"] == both["uuid"]

    # A VM snapshot of disk0 only (snapshot-save with a device subset, as the QAPI example)
    vm.qmp.run_job("snapshot-save", "save-part", tag="part", vmstate=DISK_NODE,
                   devices=[DISK_NODE])
    data = query(vm)
    part = by_name(data)["part"]
    assert part["partial"] is True and part["devices"] == [DISK_NODE]
    assert part["parent-uuid"] == both["uuid"]
    # The VM's current is the vmstate device's (disk0), although disk1's differs: lineage
    # v2 follows the device that holds the VM state
    assert data["current"] == part["uuid"], "the vmstate disk's current is the VM's"
    assert "part" not in node_snapshots(vm, DISK1_NODE)
    _assert_hmp_agrees(vm, data)
    record_tree(vm.workdir, "partial-on-disk0", data)

    err = uops.load_error(part["uuid"])
    assert part["uuid"] in err and f"does not exist on device '{DISK1_NODE}'" in err, err
    err = ops.load_error("part")
    assert "part" in err and "does not exist" in err, err
    assert_alive(vm)
    assert query(vm) == data and jobs(vm) == []

    # The disks disagree on the current snapshot: the VM snapshot's parent is the vmstate
    # disk's current (part); a single-device snapshot does not cut the VM's lineage
    ops.save("x")
    x = by_name(query(vm))["x"]
    assert x.get("parent-uuid") == part["uuid"] and x["devices"] == [DISK_NODE, DISK1_NODE]
    # each image records its own current snapshot as x's parent there
    assert node_snapshots(vm, DISK_NODE)["x"]["parent-uuid"] == part["uuid"]
    assert node_snapshots(vm, DISK1_NODE)["x"]["parent-uuid"] == both["uuid"]

    mark = vm.console.mark()
    uops.load(both["uuid"])
    vm.console.wait_counter(since=mark)
    assert query(vm)["current"] == both["uuid"], "a load makes both disks agree again"
    uops.delete(part["uuid"])  # a partial snapshot is deleted by UUID
    data = query(vm)
    assert [s["name"] for s in data["snapshots"]] == ["both", "x"]
    assert not any(s["partial"] for s in data["snapshots"])
    # x was part's child on disk0: it is both's child there now, as on disk1
    assert node_snapshots(vm, DISK_NODE)["x"]["parent-uuid"] == both["uuid"]
    assert by_name(data)["x"]["parent-uuid"] == both["uuid"]
    _assert_hmp_agrees(vm, data)
    record_tree(vm.workdir, "partial-deleted", data)


def test_delete_reparents_children_and_moves_current(vm, monitor):
    """r -> a -> b: deleting the current snapshot a makes its parent r current and its child
    b a child of r (SPEC §1: no dangling parents from QEMU's own operations), in the image
    too; the next save descends from the new current."""
    ops, uops = for_monitor(monitor, vm), ByUUID(monitor, vm)
    for tag in ("r", "a", "b"):
        ops.save(tag)
    u = _uuids(query(vm))
    assert _parents(query(vm)) == {"r": None, "a": u["r"], "b": u["a"]}
    uops.load(u["a"])
    assert query(vm)["current"] == u["a"]
    uops.delete(u["a"])
    data = query(vm)
    assert data["current"] == u["r"], "the deleted current snapshot's parent is current"
    assert _parents(data) == {"r": None, "b": u["r"]}, "b was not reparented to r"
    assert _uuids(data) == {"r": u["r"], "b": u["b"]}
    on_disk = node_snapshots(vm, DISK_NODE)
    assert on_disk["b"]["parent-uuid"] == u["r"] and "parent-uuid" not in on_disk["r"]
    _assert_hmp_agrees(vm, data)
    tree = snaptree.build(data)
    assert [(d, n.snap["name"], n.dangling) for d, n in tree.walk()] == [
        (0, "r", False), (1, "b", False)]
    record_tree(vm.workdir, "current-deleted", data)
    assert_alive(vm)

    ops.save("c")
    data = query(vm)
    assert _parents(data)["c"] == u["r"] and data["current"] == _uuids(data)["c"]
    _assert_hmp_agrees(vm, data)

    uops.delete(u["r"])  # a root with children: they become roots
    data = query(vm)
    assert _parents(data) == {"b": None, "c": None}
    assert data["current"] == _uuids(data)["c"], "deleting another snapshot moved current"
    _assert_hmp_agrees(vm, data)
    record_tree(vm.workdir, "root-deleted", data)


def test_tag_that_is_another_snapshots_uuid_is_a_tag(vm, monitor):
    """SPEC §2-3, a tag is always the tag: saving with a tag equal to k1's UUID creates a new
    snapshot and replaces nothing; loading and deleting by that tag act on the snapshot with
    that tag; once no snapshot has the tag, the string is k1's UUID again (HMP loadvm takes
    it as such; QMP is asked with 'uuid')."""
    ops, uops, con = for_monitor(monitor, vm), ByUUID(monitor, vm), vm.console
    ops.stop()
    c1, d1 = con.last_counter(), vm.disk_counter()
    ops.save("k1")
    u1 = _uuids(query(vm))["k1"]
    ops.cont()
    con.wait_counter(since=con.mark())
    con.wait_counter(since=con.mark())
    ops.stop()
    d2 = vm.disk_counter()
    assert d2 != d1, "the guest did not write between the two saves"

    ops.save(u1)
    data = query(vm)
    tagged = by_name(data).get(u1)
    assert tagged is not None and [s["name"] for s in data["snapshots"]] == ["k1", u1], data
    assert by_name(data)["k1"]["uuid"] == u1, "saving with k1's UUID as tag replaced k1"
    assert tagged["uuid"] != u1 and tagged["parent-uuid"] == u1
    assert data["current"] == tagged["uuid"]
    _assert_hmp_agrees(vm, data)
    record_tree(vm.workdir, "tag-is-a-uuid", data)

    ops.load("k1")
    assert vm.disk_counter() == d1
    ops.load(u1)  # the tag
    assert vm.disk_counter() == d2, f"load of the tag {u1} loaded k1 (its UUID)"
    assert query(vm)["current"] == tagged["uuid"]

    ops.delete(u1)  # the tag
    data = query(vm)
    assert [(s["name"], s["uuid"]) for s in data["snapshots"]] == [("k1", u1)], (
        "deleting the tag deleted k1")
    assert data["current"] == u1, "the deleted current snapshot's parent is current"

    uops.load(u1)  # no snapshot has that tag now: it is k1's UUID
    assert vm.disk_counter() == d1
    assert query(vm)["current"] == u1
    mark = con.mark()
    ops.cont()
    n = con.wait_counter(since=mark)
    assert c1 < n <= c1 + 2, f"counter {n} after loading k1 (saved at {c1}): RAM not k1's"


def test_hmp_savevm_replacing_current_keeps_lineage(vm):
    """savevm with the tag of the current snapshot replaces it: the new one gets a new UUID
    and the replaced one's parent (HMP only: snapshot-save refuses an existing tag)."""
    vm.hmp.cmd("savevm a")
    vm.hmp.cmd("savevm b")
    old = _uuids(query(vm))
    vm.hmp.cmd("savevm b")
    data = query(vm)
    new = _uuids(data)
    assert list(new) == ["a", "b"] and new["a"] == old["a"] and new["b"] != old["b"]
    assert _parents(data) == {"a": None, "b": old["a"]} and data["current"] == new["b"]
    _assert_hmp_agrees(vm, data)


def test_bad_input_changes_nothing(vm, monitor):
    """Unknown, nil and malformed UUIDs, both tag and uuid, neither: a clear error each time,
    the VM keeps running, the snapshot list (and current) is identical before and after."""
    ops, uops = for_monitor(monitor, vm), ByUUID(monitor, vm)
    ops.save("k1")
    ops.save("k2")
    before, info_before = query(vm), hmp_info(vm).text
    unknown = str(uuidlib.uuid4())

    def unchanged():
        assert query(vm) == before
        assert jobs(vm) == []
        assert vm.qmp.cmd("query-status")["status"] == "running"

    if monitor == "hmp":
        for cmd in ("loadvm", "delvm"):
            for bad in (unknown, NIL):
                err = vm.hmp.cmd_error(f"{cmd} {bad}")
                assert f"No snapshot with UUID '{bad}'" in err, err
                unchanged()
            out = vm.hmp.cmd_unchecked(cmd)  # neither tag nor UUID
            assert f"{cmd}: string expected" in out, out
            unchanged()
        err = vm.hmp.cmd_error(f"loadvm {MALFORMED}")
        assert MALFORMED in err and "does not exist" in err, err
        unchanged()
    else:
        k1 = before["snapshots"][0]["uuid"]
        for cmd in ("snapshot-load", "snapshot-delete"):
            cases = [
                ({"uuid": unknown}, f"Snapshot '{unknown}' does not exist"),
                ({"uuid": MALFORMED}, f"'{MALFORMED}' is not a valid UUID"),
                ({"uuid": "k1"}, "'k1' is not a valid UUID"),
                ({"uuid": NIL}, "The nil UUID does not identify a snapshot"),
                ({"uuid": k1, "tag": "k1"}, "Exactly one of 'tag' and 'uuid' must be given"),
                ({}, "Exactly one of 'tag' and 'uuid' must be given"),
            ]
            for args, message in cases:
                err = uops.qmp_error(cmd, **args)
                assert message in err, (cmd, args, err)
                unchanged()
    assert_alive(vm)
    assert query(vm) == before
    assert hmp_info(vm).text == info_before


def test_hmp_delvm_unknown_tag_and_unknown_uuid(vm):
    """SPEC §3: a string no snapshot has as its tag and that is not a UUID is an unknown
    tag, and HMP and QMP agree on it: `delvm` and `snapshot-delete tag=` both succeed
    without changing anything (upstream behaviour). A well-formed UUID that no snapshot
    has is an error, and changes nothing either."""
    vm.hmp.cmd("savevm k")
    before = query(vm)
    out = vm.hmp.cmd(f"delvm {MALFORMED}")
    assert "rror" not in out, out
    assert query(vm) == before
    vm.qmp.run_job("snapshot-delete", "del-unknown-tag", tag=MALFORMED, devices=[DISK_NODE])
    assert query(vm) == before
    unknown = str(uuidlib.uuid4())
    err = vm.hmp.cmd_error(f"delvm {unknown}")
    assert unknown in err and "No snapshot with UUID" in err, err
    assert query(vm) == before
    # loading an unknown tag is an error on both monitors
    err = vm.hmp.cmd_error(f"loadvm {MALFORMED}")
    assert f"Snapshot '{MALFORMED}' does not exist" in err, err
    err = ByUUID("qmp", vm).qmp_error("snapshot-load", tag=MALFORMED)
    assert MALFORMED in err and "does not exist" in err, err
    assert query(vm) == before and jobs(vm) == []
    assert_alive(vm)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_raw_disk_refuses_before_writing(vm, monitor, make_disk, build):
    """With a raw disk attached, save, load by UUID and delete by UUID are refused before
    any device is written: the qcow2 file (snapshot table, current-snapshot extension) is
    byte-identical and the lineage unchanged. (A save with a raw disk on a fresh image is
    upstream behaviour, covered in test_vm_snapshots.py.)"""
    ops, uops = for_monitor(monitor, vm), ByUUID(monitor, vm)
    ops.save("base")
    before = query(vm)
    base = before["current"]
    assert base == by_name(before)["base"]["uuid"]

    raw = make_disk("extra.raw", fmt="raw", size="16M")
    vm.qmp.cmd("blockdev-add", driver="raw", **{"node-name": "raw0"},
               file={"driver": "file", "filename": str(raw)})
    vm.qmp.cmd("device_add", driver="virtio-blk-pci", drive="raw0", id="vdisk1")
    if monitor == "qmp":
        ops.devices = uops.devices = [DISK_NODE, "raw0"]

    ops.stop()  # flushed; nothing writes the images while stopped
    qcow2_before, raw_before = _sha256(vm.disk), _sha256(raw)
    for err in (ops.save_error("refused"), uops.load_error(base), uops.delete_error(base)):
        assert "raw0" in err and "does not support snapshots" in err, err
    assert _sha256(vm.disk) == qcow2_before, "a refused command must not write the qcow2"
    assert _sha256(raw) == raw_before
    assert query(vm) == before and jobs(vm) == []
    ops.cont()
    assert_alive(vm)

    vm.shutdown()
    image = snaptree.from_image(build.img, vm.disk)
    assert [(s["name"], s["uuid"]) for s in image["snapshots"]] == [("base", base)]
    assert image.get("current") == base


def test_tree_view_of_running_vm_and_image(vm_factory, build):
    """harness/snaptree renders the tree of a running VM (its own QMP socket) and of the
    image after QEMU quit, the current snapshot marked; build.py tree does the same."""
    sockdir = Path(tempfile.mkdtemp(prefix="qh-tree-", dir="/tmp"))
    sock = sockdir / "qmp"
    try:
        vm = vm_factory(extra_args=(
            "-chardev", f"socket,id=qmptree,path={sock},server=on,wait=off",
            "-mon", "chardev=qmptree,mode=control"))
        ops, uops = for_monitor("qmp", vm), ByUUID("qmp", vm)
        ops.save("a")
        ops.save("b")
        u = _uuids(query(vm))
        uops.load(u["a"])
        ops.save("c")
        data = query(vm)
        u = _uuids(data)

        live = snaptree.from_qmp_socket(sock)
        assert live == vm.qmp.cmd("query-vm-snapshots")
        assert [s["uuid"] for s in live["snapshots"]] == [s["uuid"] for s in data["snapshots"]]
        text = snaptree.render(live)
        assert text.splitlines()[:3] == [
            f"a  {u['a']}",
            f"|-- b  {u['b']}",
            f"`-- c  {u['c']} *",
        ], text
        record_tree(vm.workdir, "vm", live)

        uops.delete(u["a"])
        live = snaptree.from_qmp_socket(sock)
        vm.shutdown()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)

    image = snaptree.from_image(build.img, vm.disk)
    assert image["current"] == live["current"] == u["c"]
    assert [(s["name"], s["uuid"], s.get("parent-uuid")) for s in image["snapshots"]] == [
        (s["name"], s["uuid"], s.get("parent-uuid")) for s in live["snapshots"]]
    text = snaptree.render(image)
    # a was a root: deleting it made its children roots (nothing dangles)
    assert text.splitlines() == [f"b  {u['b']}", f"c  {u['c']} *", "* = current snapshot"]
    record_tree(vm.workdir, "image", image)

    cli = subprocess.run(
        [sys.executable, "-m", "snaptree", "--image", str(vm.disk),
         "--qemu-img", str(build.img)],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert cli.returncode == 0 and cli.stdout == text, cli.stderr
    for extra in ((), ("--json",)):
        out = subprocess.run(
            [sys.executable, str(REPO / "build.py"), "tree", "--image", str(vm.disk),
             "--qemu-img", str(build.img), *extra],
            cwd=REPO, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout == text if not extra else json.loads(out.stdout) == image

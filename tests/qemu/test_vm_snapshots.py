"""Upstream VM snapshot behaviour on a real guest, over HMP and over QMP.

HMP: savevm / loadvm / delvm by name.  QMP: the snapshot-save/-load/-delete jobs.
The guest's counter proves what a load restored: RAM (the console counter continues from the
saved value) and disk (sector 0 holds the value written before the save).
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from rig.machine import DISK_NODE


def _status(vm) -> str:
    return vm.qmp.cmd("query-status")["status"]


def test_save_load_delete_restores_ram_and_disk(vm, snapshots):
    con = vm.console
    c0 = con.wait_counter()
    con.wait_counter(at_least=c0 + 2)

    snapshots.stop()
    c_saved = con.last_counter()
    d_saved = vm.disk_counter()
    assert d_saved in (c_saved, c_saved + 1), f"disk {d_saved} vs console {c_saved}"
    snapshots.save("snap1")
    assert snapshots.tags() == ["snap1"]
    assert _status(vm) == "paused", "saving a stopped VM leaves it stopped"

    snapshots.cont()
    c_after = con.wait_counter(at_least=c_saved + 3)
    snapshots.stop()
    d_after = vm.disk_counter()
    assert d_after > d_saved

    mark = con.mark()
    snapshots.load("snap1")
    assert vm.disk_counter() == d_saved, "loading the snapshot restores the disk"
    snapshots.cont()
    n = con.wait_counter(since=mark)
    assert c_saved < n <= c_saved + 2 and n < c_after, (
        f"after load the counter printed {n}; saved at {c_saved}, was at {c_after}: "
        "RAM not restored"
    )

    snapshots.delete("snap1")
    assert snapshots.tags() == []
    # a failed load changes nothing: not the disk, not RAM (the guest continues from where
    # it was stopped, not from an older state)
    snapshots.stop()
    c_stopped, d_stopped = con.last_counter(), vm.disk_counter()
    assert c_stopped >= n
    err = snapshots.load_error("snap1")
    assert "snap1" in err and "does not exist" in err
    assert vm.disk_counter() == d_stopped, "a failed load wrote the disk"
    mark2 = con.mark()
    if _status(vm) != "running":
        snapshots.cont()
    m = con.wait_counter(since=mark2)
    assert c_stopped < m <= c_stopped + 2, (
        f"after a failed load the counter printed {m}; it was stopped at {c_stopped}"
    )


def test_two_snapshots_load_the_older(vm, snapshots):
    """Loading the older of two snapshots restores that one, not the newest."""
    con = vm.console
    con.wait_counter()
    snapshots.stop()
    c_a, d_a = con.last_counter(), vm.disk_counter()
    snapshots.save("a")
    snapshots.cont()
    con.wait_counter(at_least=c_a + 2)
    snapshots.stop()
    c_b, d_b = con.last_counter(), vm.disk_counter()
    snapshots.save("b")
    assert sorted(snapshots.tags()) == ["a", "b"]
    assert d_b > d_a
    snapshots.load("a")
    assert vm.disk_counter() == d_a
    mark = con.mark()
    snapshots.cont()
    n = con.wait_counter(since=mark)
    assert c_a < n <= c_a + 2 and n <= c_b, f"counter {n} after loading a (saved {c_a}, b {c_b})"
    snapshots.delete("a")
    snapshots.delete("b")
    assert snapshots.tags() == []


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_refused_with_raw_disk(vm, snapshots, monitor, make_disk, build):
    """A writable raw disk cannot hold a snapshot: the save is refused and writes nothing."""
    raw = make_disk("extra.raw", fmt="raw", size="16M")
    vm.qmp.cmd(
        "blockdev-add",
        driver="raw",
        **{"node-name": "raw0"},
        file={"driver": "file", "filename": str(raw)},
    )
    vm.qmp.cmd("device_add", driver="virtio-blk-pci", drive="raw0", id="vdisk1")
    if monitor == "qmp":
        snapshots.devices = [DISK_NODE, "raw0"]

    snapshots.stop()  # flushes; nothing writes the images while stopped
    c_stopped = vm.console.last_counter()
    qcow2_before, raw_before = _sha256(vm.disk), _sha256(raw)
    err = snapshots.save_error("refused")
    assert "raw0" in err and "does not support snapshots" in err, err
    assert snapshots.tags() == []
    assert _sha256(vm.disk) == qcow2_before, "a refused savevm must not write the qcow2 image"
    assert _sha256(raw) == raw_before

    mark = vm.console.mark()
    if _status(vm) != "running":
        snapshots.cont()
    c = vm.console.wait_counter(since=mark)
    assert c_stopped < c <= c_stopped + 2, (
        f"after the refused save the guest printed {c}; it was stopped at {c_stopped}"
    )
    vm.shutdown()
    info = subprocess.run(
        [str(build.img), "info", "--output=json", str(vm.disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "snapshots" not in json.loads(info.stdout), info.stdout


@pytest.mark.parametrize("tag", ["snap-x"])
def test_delete_removes_from_image(vm, snapshots, build, tag):
    """A deleted snapshot is gone from the image file too (qemu-img snapshot -l after quit)."""
    vm.console.wait_counter()
    snapshots.save(tag)
    snapshots.save(tag + "2")
    snapshots.delete(tag)
    assert snapshots.tags() == [tag + "2"]
    vm.shutdown()
    out = subprocess.run(
        [str(build.img), "snapshot", "-l", str(vm.disk)], capture_output=True, text=True, check=True
    ).stdout
    assert f" {tag}2 " in out and f" {tag} " not in out, out

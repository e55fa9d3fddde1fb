"""The image every write path starts from, and the write paths, as data.

The pre-operation image (made by the patched build, so its snapshots carry UUIDs, parents
and a valid current-snapshot record): 4 MiB, a pattern per snapshot so that each one reads
differently, and data in the active layer.

    write 0x11 [0, 1M)      snapshot s1  (root)
    write 0x22 [1M, 2M)     snapshot s2  (parent s1)
    write 0x33 [512K, 1.5M) snapshot s3  (parent s2; current)
    write 0x44 [2M, 3M)     active

The write paths run on it through qemu-img with --image-opts, so that the same command
can be put on blklogwrites (the crash-state explorer) or blkdebug (fault injection); the
VM paths run the same operations in qemu-system (lib/vmops.py).
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from rig import qcow2

from .invariants import Change, OpKind
from .observe import Runner, Tool

SIZE = 4 << 20
STEPS = (
    ("write", 0x11, 0, 1 << 20), ("snap", "s1"),
    ("write", 0x22, 1 << 20, 1 << 20), ("snap", "s2"),
    ("write", 0x33, 512 << 10, 1 << 20), ("snap", "s3"),
    ("write", 0x44, 2 << 20, 1 << 20),
)


@dataclass(frozen=True)
class WritePath:
    name: str
    args: tuple[str, ...]  # qemu-img arguments before --image-opts OPTIONS
    change: Change
    # "leak": a leaked cluster, so that check -r all repairs; "vm-snapshot": a snapshot
    # with VM state, vm0 (vmops.prepare_vm_snapshot)
    prep: str | None = None
    # run in qemu-system instead of qemu-img: ("hmp", LINE) / ("job", COMMAND, ARGS) steps
    vm: tuple = ()
    disks: int = 1  # a VM path's qcow2 disks (disk0, disk1): each starts as a copy of one

    def argv(self, tool: Tool, opts: str) -> list[str]:
        return [tool.img, *self.args, "--image-opts", opts]


PATHS = (
    WritePath("snapshot-c", ("snapshot", "-c", "new"), Change(OpKind.CREATE, "new")),
    WritePath("snapshot-a", ("snapshot", "-a", "s1"), Change(OpKind.APPLY, "s1")),
    WritePath("snapshot-d-middle", ("snapshot", "-d", "s2"), Change(OpKind.DELETE, "s2")),
    WritePath("snapshot-d-current", ("snapshot", "-d", "s3"), Change(OpKind.DELETE, "s3")),
    WritePath("check-r-all", ("check", "-r", "all"), Change(OpKind.CHECK), prep="leak"),
)
# The same operations through qemu-system (HMP and QMP, lib/vmops.py: a running VM whose
# CPU halts). The saves and loads start from the base with a VM snapshot vm0 (saved in the
# VM, then a write to the active layer: prep "vm-snapshot"), so that a load has a snapshot
# with VM state to load and a visible effect, and a save's crash states something to fall
# back to (loadvm vm0 when vm1 is absent).
_DISK0 = {"devices": ["disk0"]}
VM_PATHS = (
    WritePath("hmp-savevm", (), Change(OpKind.CREATE, "vm1"), prep="vm-snapshot",
              vm=(("hmp", "savevm vm1"),)),
    WritePath("hmp-loadvm", (), Change(OpKind.APPLY, "vm0"), prep="vm-snapshot",
              vm=(("hmp", "loadvm vm0"),)),
    WritePath("hmp-delvm", (), Change(OpKind.DELETE, "s2"), vm=(("hmp", "delvm s2"),)),
    WritePath("qmp-snapshot-save", (), Change(OpKind.CREATE, "vm1"), prep="vm-snapshot",
              vm=(("job", "snapshot-save", {"tag": "vm1", "vmstate": "disk0", **_DISK0}),)),
    WritePath("qmp-snapshot-load", (), Change(OpKind.APPLY, "vm0"), prep="vm-snapshot",
              vm=(("job", "snapshot-load", {"tag": "vm0", "vmstate": "disk0", **_DISK0}),)),
    WritePath("qmp-snapshot-delete", (), Change(OpKind.DELETE, "s3"),
              vm=(("job", "snapshot-delete", {"tag": "s3", **_DISK0}),)),
)
# The same with two qcow2 disks, each a copy of the pre-operation image (so the snapshots
# s1-s3 have the same UUIDs on both, as a VM snapshot's do; vm0 is saved on both): HMP acts
# on every disk, the jobs list both. vm1's VM state goes to disk0.
_DISKS = {"devices": ["disk0", "disk1"]}
VM_PATHS_2D = (
    WritePath("hmp-savevm-2disks", (), Change(OpKind.CREATE, "vm1"), prep="vm-snapshot",
              vm=(("hmp", "savevm vm1"),), disks=2),
    WritePath("hmp-loadvm-2disks", (), Change(OpKind.APPLY, "vm0"), prep="vm-snapshot",
              vm=(("hmp", "loadvm vm0"),), disks=2),
    WritePath("hmp-delvm-2disks", (), Change(OpKind.DELETE, "s2"), vm=(("hmp", "delvm s2"),),
              disks=2),
    WritePath("qmp-snapshot-save-2disks", (), Change(OpKind.CREATE, "vm1"), prep="vm-snapshot",
              vm=(("job", "snapshot-save", {"tag": "vm1", "vmstate": "disk0", **_DISKS}),),
              disks=2),
    WritePath("qmp-snapshot-load-2disks", (), Change(OpKind.APPLY, "vm0"), prep="vm-snapshot",
              vm=(("job", "snapshot-load", {"tag": "vm0", "vmstate": "disk0", **_DISKS}),),
              disks=2),
    WritePath("qmp-snapshot-delete-2disks", (), Change(OpKind.DELETE, "s3"),
              vm=(("job", "snapshot-delete", {"tag": "s3", **_DISKS}),), disks=2),
)
BY_NAME = {p.name: p for p in PATHS + VM_PATHS + VM_PATHS_2D}


class SetupError(RuntimeError):
    """The patched build could not make the pre-operation image."""


def make_base(run: Runner, tool: Tool, path: Path, cluster_size: int = 65536) -> Path:
    path.unlink(missing_ok=True)
    _ok(run.run([tool.img, "create", "-q", "-f", "qcow2", "-o",
                 f"cluster_size={cluster_size}", str(path), str(SIZE)]))
    for step in STEPS:
        if step[0] == "write":
            _, pattern, off, length = step
            _ok(run.run([tool.io, "-f", "qcow2", "-c",
                         f"write -P {pattern:#x} {off} {length}", str(path)]))
        else:
            _ok(run.run([tool.img, "snapshot", "-c", step[1], str(path)]))
    return path


def prepare(path: Path, prep: str | None, dest: Path, *, system: str | None = None,
            io: str | None = None) -> Path:
    """``dest``: a copy of ``path`` as the path starts from (``prep``); a VM snapshot needs
    ``system`` (qemu-system) and ``io`` (qemu-io). Each call makes a new vm0 (a new UUID):
    prepare once, and observe and run the path on the same copy."""
    shutil.copyfile(path, dest)
    if prep == "leak":
        leak_cluster(dest)
    elif prep == "vm-snapshot":
        from .vmops import prepare_vm_snapshot
        prepare_vm_snapshot(system, io, dest, dest.parent)
    elif prep is not None:
        raise ValueError(f"unknown prep {prep!r}")
    return dest


def prepare_disks(path: Path, prep: str | None, dests: list[Path], *, system: str,
                  io: str) -> list[Path]:
    """``dests``: copies of ``path``, one per disk of a VM path, as the path starts from;
    a VM snapshot (``prep`` "vm-snapshot") is saved once on all of them."""
    for d in dests:
        shutil.copyfile(path, d)
    if prep == "vm-snapshot":
        from .vmops import prepare_vm_snapshot
        prepare_vm_snapshot(system, io, dests[0], dests[0].parent, more=tuple(dests[1:]))
    elif prep is not None:
        raise ValueError(f"prep {prep!r} is for one disk")
    return dests


def _ok(res):
    if res.returncode != 0:
        raise SetupError(f"exit {res.returncode}: {' '.join(res.argv)}\n{res.output[-1500:]}")
    return res


def refcount_entry(path: Path, cluster: int) -> tuple[int, int]:
    """(file offset of cluster ``cluster``'s refcount entry, refcount bits); the refcount
    block must exist. Read from the header per docs/interop/qcow2.rst."""
    data = path.read_bytes()
    img = qcow2.read(path)
    (rt_offset,) = struct.unpack_from(">Q", data, 48)
    order = struct.unpack_from(">I", data, 96)[0] if img.version >= 3 else 4
    bits = 1 << order
    per_block = img.cluster_size * 8 // bits
    (block,) = struct.unpack_from(">Q", data, rt_offset + 8 * (cluster // per_block))
    block &= ~0x1FF
    if not block:
        raise SetupError(f"no refcount block for cluster {cluster}")
    return block + (cluster % per_block) * bits // 8, bits


def leak_cluster(path: Path) -> int:
    """Give a free cluster a refcount of 1 (a leak, which `check -r leaks/all` repairs):
    the first one inside the file with refcount 0, else one more cluster at its end (check
    looks at clusters inside the file only); returns its index."""
    img = qcow2.read(path)
    clusters = -(-path.stat().st_size // img.cluster_size)
    data = path.read_bytes()
    for cluster in range(1, clusters + 1):
        off, bits = refcount_entry(path, cluster)
        assert bits == 16, "the scenario uses 16-bit refcounts"
        if struct.unpack_from(">H", data, off)[0] == 0:
            break
    if cluster == clusters:  # none free inside: grow the file by the leaked cluster
        with open(path, "r+b") as fh:
            fh.truncate((clusters + 1) * img.cluster_size)
    qcow2.patch_bytes(path, off, struct.pack(">H", 1))
    return cluster


def blklogwrites_opts(image: Path, log: Path) -> str:
    return (f"driver=qcow2,file.driver=blklogwrites,file.file.filename={image},"
            f"file.log.filename={log},file.log-sector-size=512,"
            "file.log-super-update-interval=1")


def blkdebug_opts(image: Path, rules: Path) -> str:
    return (f"driver=qcow2,file.driver=blkdebug,file.config={rules},"
            f"file.image.filename={image}")

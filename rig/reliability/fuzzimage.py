"""Snapshot tables and current-snapshot records as data, written into a template image.

A ``TableSpec`` is what the fuzzer (test_fuzz.py, hypothesis) generates, structure-aware:
the entries (L1 pointer and size, id and name, dates, vm state size, extra data with the
UUID and parent fields of SPEC.md §1 at their offsets, padding or cut short), how the
header points at the table (in place in the template's table clusters so that refcounts
stay right, appended at the end of the file, or at a bogus offset; nb_snapshots right or
off), and the current-snapshot record (none, one or two, 32 bytes or another length,
naming one of the entries, nil or a stranger, with a matching or a stale table pointer).

``write(spec, template, dest)`` makes the image; ``OPS`` are the qemu-img commands each
image goes through, every one on its own copy.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rig import qcow2

ENTRY = qcow2.ENTRY_HEADER  # l1 offset, l1 size, id len, name len, date s, ns, clock, vm, extra


@dataclass(frozen=True)
class EntrySpec:
    l1: str = "own"  # own (a template snapshot's L1), active, zero, unaligned, far
    l1_size: int | None = None  # None: the template's
    ident: bytes = b"1"
    name: bytes = b"s1"
    date_sec: int = 0
    date_nsec: int = 0
    vm_clock: int = 0
    vm_state_size: int = 0
    extra_size: int = 56  # extra_data_size written in the entry
    vm_state_large: int = 0
    disk_size: int | None = None  # None: the template's virtual size
    icount: int = 0
    uuid: str = "fresh"  # fresh, nil, dup:<i>
    parent: str = "nil"  # nil, entry:<i>, self, stranger
    tail: bytes = b""  # extra data past the known fields (kept as read)


@dataclass(frozen=True)
class RecordSpec:
    names: str = "entry:0"  # entry:<i>, nil, stranger
    offset_matches: bool = True
    count_matches: bool = True
    reserved: bytes = bytes(4)
    length: int = 32  # of the extension's data (32 is the record)
    copies: int = 1


@dataclass(frozen=True)
class TableSpec:
    entries: tuple[EntrySpec, ...] = ()
    placement: str = "in_place"  # in_place, append, bogus
    bogus_offset: int = 0
    nb_delta: int = 0  # nb_snapshots written = len(entries) + nb_delta (clamped to u32)
    record: RecordSpec | None = None
    seed: int = 0  # for the UUIDs (fresh, stranger): the image is a function of the spec

    def to_json(self) -> dict:
        def conv(x):
            if isinstance(x, bytes):
                return {"hex": x.hex()}
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [conv(v) for v in x]
            return x
        return conv(asdict(self))


@dataclass
class Template:
    path: Path
    image: qcow2.Image
    l1_offsets: list[tuple[int, int]] = field(default_factory=list)  # (offset, size)
    active_l1: tuple[int, int] = (0, 0)
    table_room: int = 0  # bytes of the template's table clusters


def load_template(path: Path) -> Template:
    img = qcow2.read(path)
    data = path.read_bytes()
    l1s = [struct.unpack_from(">QI", s.header, 0) for s in img.snapshots]
    active = struct.unpack_from(">IQ", data, 36)  # l1_size, l1_table_offset
    room = -(-img.snapshots_size // img.cluster_size) * img.cluster_size
    return Template(path, img, [(o, n) for o, n in l1s], (active[1], active[0]), room)


def _uuids(spec: TableSpec) -> list[uuidlib.UUID]:
    import random
    rnd = random.Random(spec.seed)
    return [uuidlib.UUID(int=rnd.getrandbits(128), version=4) for _ in spec.entries]


def _pick(ref: str, uuids: list[uuidlib.UUID], own: int | None, stranger: uuidlib.UUID):
    if ref == "nil":
        return qcow2.NIL
    if ref == "self" and own is not None:
        return uuids[own]
    if ref == "stranger":
        return stranger
    if ref.startswith(("entry:", "dup:")):
        i = int(ref.split(":")[1])
        return uuids[i % len(uuids)] if uuids else qcow2.NIL
    return uuids[own] if own is not None else qcow2.NIL


def entry_bytes(e: EntrySpec, i: int, tpl: Template, uuids, stranger) -> bytes:
    own_off, own_size = tpl.l1_offsets[i % len(tpl.l1_offsets)] if tpl.l1_offsets else (0, 0)
    l1_off = {"own": own_off, "active": tpl.active_l1[0], "zero": 0,
              "unaligned": own_off + 8, "far": 1 << 50}.get(e.l1, own_off)
    l1_size = own_size if e.l1_size is None else e.l1_size
    u = _pick(e.uuid, uuids, i, stranger)
    parent = _pick(e.parent, uuids, i, stranger)
    known = struct.pack(">QQQ", e.vm_state_large,
                        tpl.image.size if e.disk_size is None else e.disk_size, e.icount)
    known += u.bytes + parent.bytes
    extra = (known + e.tail)[: e.extra_size].ljust(e.extra_size, b"\0")
    head = ENTRY.pack(l1_off, l1_size & 0xFFFFFFFF, len(e.ident), len(e.name),
                      e.date_sec & 0xFFFFFFFF, e.date_nsec & 0xFFFFFFFF,
                      e.vm_clock & (2**64 - 1), e.vm_state_size & 0xFFFFFFFF, e.extra_size)
    raw = head + extra + e.ident + e.name
    return raw + b"\0" * (-len(raw) % 8)


def write(spec: TableSpec, tpl: Template, dest: Path) -> Path:
    """The image of ``spec``: a copy of the template with the table and record replaced."""
    data = bytearray(tpl.path.read_bytes())
    uuids = _uuids(spec)
    stranger = uuidlib.UUID(int=(spec.seed * 7919 + 1) % 2**128, version=4)
    table = b"".join(entry_bytes(e, i, tpl, uuids, stranger) for i, e in enumerate(spec.entries))
    csize = tpl.image.cluster_size
    offset = tpl.image.snapshots_offset
    placement = spec.placement
    if placement == "in_place" and (len(table) > tpl.table_room or not offset):
        placement = "append"
    if placement == "in_place":
        data[offset : offset + tpl.table_room] = table.ljust(tpl.table_room, b"\0")
    elif placement == "append":
        offset = -(-len(data) // csize) * csize
        data.extend(bytes(offset - len(data)))
        data.extend(table + bytes(-len(table) % csize))
    else:
        offset = spec.bogus_offset
    nb = max(0, min(len(spec.entries) + spec.nb_delta, 2**32 - 1))
    # the record first, while the reader can still read the template's table
    dest.write_bytes(tpl.path.read_bytes())
    if spec.record is not None:
        r = spec.record
        # (a mismatch wraps around: the fields are u64 and u32)
        rec = qcow2.CurrentRecord(_pick(r.names, uuids, None, stranger),
                                  offset if r.offset_matches else (offset + csize) % 2**64,
                                  nb if r.count_matches else (nb + 1) % 2**32,
                                  r.reserved[:4].ljust(4, b"\0"))
        raw = rec.pack()
        raw = raw[: r.length] if r.length <= len(raw) else raw.ljust(r.length, b"\xa5")
        try:
            qcow2.set_extensions(dest, qcow2.EXT_CURRENT_SNAPSHOT, [raw] * r.copies)
        except AssertionError:
            pass  # no room in cluster 0: the image keeps the template's record
        data[: csize] = dest.read_bytes()[: csize]
    struct.pack_into(">IQ", data, 60, nb, offset)
    dest.write_bytes(bytes(data))
    return dest


# What every generated image goes through: (label, qemu-img arguments before the image,
# whether it writes). Each runs on its own copy.
OPS = (
    ("info", ("info", "-f", "qcow2", "--output=json"), False),
    ("check", ("check", "-f", "qcow2"), False),
    ("snapshot -l", ("snapshot", "-l"), False),
    ("check -r all", ("check", "-r", "all", "-f", "qcow2"), True),
    ("snapshot -c", ("snapshot", "-c", "fuzz"), True),
    ("snapshot -a", ("snapshot", "-a", "{first}"), True),
    ("snapshot -d", ("snapshot", "-d", "{first}"), True),
)


def first_name(spec: TableSpec) -> str:
    """What -a/-d select: the first entry's name when it is text, else id 1."""
    if spec.entries:
        try:
            name = spec.entries[0].name.decode()
            if name and name.isprintable() and not name.startswith("-"):
                return name
        except UnicodeDecodeError:
            pass
    return "1"


def make_template(run, tool, path: Path) -> Path:
    """1 MiB, 4 KiB clusters (tables span clusters; images stay small), two snapshots."""
    path.unlink(missing_ok=True)
    steps = [[tool.img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(path),
              "1M"],
             [tool.io, "-f", "qcow2", "-c", "write -P 0x11 0 64k", str(path)],
             [tool.img, "snapshot", "-c", "s1", str(path)],
             [tool.io, "-f", "qcow2", "-c", "write -P 0x22 32k 64k", str(path)],
             [tool.img, "snapshot", "-c", "s2", str(path)]]
    for argv in steps:
        res = run.run(argv)
        if res.returncode != 0:
            raise RuntimeError(f"template: exit {res.returncode}: {res.first_lines()}")
    return path

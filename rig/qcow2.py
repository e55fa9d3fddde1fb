"""A small, independent qcow2 reader for byte-level assertions.

Deliberately not QEMU's code (nor tests/qemu-iotests/qcow2.py): the tests
compare what QEMU reports about an image with what is on disk, read here
from the qcow2 specification (docs/interop/qcow2.rst, as the series extends it)
and SPEC.md §1.

The "current snapshot" is a 32-byte header extension (0x43534e50) without a feature bit:
{snapshot UUID, snapshots_offset BE64, nb_snapshots BE32, 4 reserved bytes}. A reader trusts
it only if it is the one extension of that type, exactly 32 bytes long, its copy of the
table pointer equals the header's (an older writer that creates or deletes a snapshot moves
the table, so its record goes stale), and its UUID, not nil, names a snapshot in the table
(``Image.current_record()`` says which of these holds, ``Image.current`` is the UUID of a
valid record). A nil UUID means "no current snapshot"; QEMU keeps the extension then.

Also has a few in-place writers for same-size corruptions (duplicate UUIDs,
parent cycles, wrong extension lengths) used by the bad-input tests, and two
that rewrite a whole structure where it already is: the snapshot table
(write_snapshot_table: any extra_data_size, as long as the new table fits in
the clusters the old one occupies, so refcounts stay right) and the header
extension area (write_extensions: within cluster 0, no backing file), with which
set_current_record() / set_current_records() craft records (the record first, where
QEMU writes it).
"""

from __future__ import annotations

import enum
import struct
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from pathlib import Path

MAGIC = b"QFI\xfb"
EXT_END = 0x00000000
NIL = uuidlib.UUID(int=0)

# Snapshot extra data (SPEC.md §1), offsets relative to the extra data.
EXTRA_VM_STATE_SIZE_LARGE = 0
EXTRA_DISK_SIZE = 8
EXTRA_ICOUNT = 16
EXTRA_UUID = 24
EXTRA_PARENT = 40
UUID_LEN = 16

# The series' "current snapshot" header extension (SPEC.md §1): the 32-byte record below,
# guarded by no feature bit.
EXT_CURRENT_SNAPSHOT = 0x43534E50
AUTOCLEAR_BITMAPS = 1 << 0
SECTOR = 512  # QEMU updates the record in place with one write inside one sector
# {snapshot UUID, snapshots_offset BE64, nb_snapshots BE32, reserved 4 bytes zero}
CURRENT_RECORD = struct.Struct(">16sQI4s")
ENTRY_HEADER = struct.Struct(">QIHHIIQII")  # fixed 40 bytes of a snapshot table entry


@dataclass
class Extension:
    magic: int
    offset: int  # of the 8-byte type/length header in the file
    data: bytes


@dataclass
class Snapshot:
    offset: int  # of the table entry in the file
    id: str
    name: str
    vm_state_size: int
    extra_data_size: int
    extra: bytes
    header: bytes = b""  # the raw 40-byte entry header (read() fills it in)

    def _uuid_at(self, off: int) -> uuidlib.UUID | None:
        """The UUID field at ``off`` if extra data covers it entirely, else None."""
        if self.extra_data_size < off + UUID_LEN:
            return None
        return uuidlib.UUID(bytes=self.extra[off : off + UUID_LEN])

    @property
    def uuid(self) -> uuidlib.UUID | None:
        u = self._uuid_at(EXTRA_UUID)
        return None if u is None or u == NIL else u

    @property
    def parent(self) -> uuidlib.UUID | None:
        u = self._uuid_at(EXTRA_PARENT)
        return None if u is None or u == NIL else u

    @property
    def extra_offset(self) -> int:
        return self.offset + 40

    def with_extra(self, extra: bytes) -> Snapshot:
        """A copy with other extra data (and extra_data_size = its length)."""
        return replace(self, extra=bytes(extra), extra_data_size=len(extra))

    def entry_bytes(self) -> bytes:
        """The table entry as written to disk (padded to a multiple of 8)."""
        assert len(self.header) == ENTRY_HEADER.size, "entry without raw header"
        ident, name = self.id.encode(), self.name.encode()
        fields = list(ENTRY_HEADER.unpack(self.header))
        fields[2], fields[3], fields[8] = len(ident), len(name), len(self.extra)
        raw = ENTRY_HEADER.pack(*fields) + self.extra + ident + name
        return raw + b"\0" * (-len(raw) % 8)


class RecordState(enum.Enum):
    """What a reader of the current snapshot record makes of the header extension."""

    ABSENT = "absent"  # no extension: no current snapshot known
    MALFORMED = "malformed"  # not exactly 32 bytes, or more than one extension
    NONE = "none"  # nil UUID: no current snapshot
    STALE = "stale"  # snapshots_offset / nb_snapshots differ from the header's
    UNKNOWN = "unknown"  # the pointer matches, but no snapshot in the table has the UUID
    VALID = "valid"


@dataclass(frozen=True)
class CurrentRecord:
    uuid: uuidlib.UUID
    snapshots_offset: int
    nb_snapshots: int
    reserved: bytes = bytes(4)

    @classmethod
    def unpack(cls, data: bytes) -> CurrentRecord:
        raw, offset, nb, reserved = CURRENT_RECORD.unpack(data)
        return cls(uuidlib.UUID(bytes=raw), offset, nb, reserved)

    def pack(self) -> bytes:
        return CURRENT_RECORD.pack(
            self.uuid.bytes, self.snapshots_offset, self.nb_snapshots, self.reserved
        )


@dataclass(frozen=True)
class CurrentView:
    state: RecordState
    record: CurrentRecord | None = None

    @property
    def uuid(self) -> uuidlib.UUID | None:
        """The current snapshot, when the record is valid."""
        return self.record.uuid if self.state is RecordState.VALID and self.record else None


@dataclass
class Image:
    path: Path
    version: int
    cluster_bits: int
    size: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    header_length: int = 72
    snapshots_size: int = 0  # bytes of the snapshot table (entries, padded)
    backing_file_offset: int = 0
    extensions: list[Extension] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def extension(self, magic: int) -> list[Extension]:
        return [e for e in self.extensions if e.magic == magic]

    def by_name(self, name: str) -> Snapshot:
        found = [s for s in self.snapshots if s.name == name]
        assert len(found) == 1, f"{len(found)} snapshots named {name!r} in {self.path}"
        return found[0]

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def current(self) -> uuidlib.UUID | None:
        """The current snapshot: the UUID of a valid record (current_record()), else None."""
        return self.current_record().uuid

    def record_extension(self) -> Extension | None:
        """The one current snapshot extension, or None (absent, or more than one)."""
        exts = self.extension(EXT_CURRENT_SNAPSHOT)
        return exts[0] if len(exts) == 1 else None

    def current_record(self) -> CurrentView:
        """The record: valid only if it is the one 32-byte extension, its pointer
        equals the header's snapshots_offset and nb_snapshots, and its UUID is not nil and
        names a snapshot in the table. The reserved bytes are reported, not judged."""
        exts = self.extension(EXT_CURRENT_SNAPSHOT)
        if not exts:
            return CurrentView(RecordState.ABSENT)
        if len(exts) != 1 or len(exts[0].data) != CURRENT_RECORD.size:
            return CurrentView(RecordState.MALFORMED)
        rec = CurrentRecord.unpack(exts[0].data)
        if rec.uuid == NIL:
            return CurrentView(RecordState.NONE, rec)
        if (rec.snapshots_offset, rec.nb_snapshots) != (self.snapshots_offset, self.nb_snapshots):
            return CurrentView(RecordState.STALE, rec)
        if rec.uuid not in {s.uuid for s in self.snapshots}:
            return CurrentView(RecordState.UNKNOWN, rec)
        return CurrentView(RecordState.VALID, rec)


def read(path: Path) -> Image:
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a qcow2 image")
    (version,) = struct.unpack_from(">I", data, 4)
    (backing_file_offset,) = struct.unpack_from(">Q", data, 8)
    cluster_bits, size = struct.unpack_from(">IQ", data, 20)
    nb_snapshots, snapshots_offset = struct.unpack_from(">IQ", data, 60)
    img = Image(Path(path), version, cluster_bits, size, nb_snapshots, snapshots_offset)
    img.backing_file_offset = backing_file_offset
    if version >= 3:
        img.incompatible, img.compatible, img.autoclear = struct.unpack_from(">QQQ", data, 72)
        (img.header_length,) = struct.unpack_from(">I", data, 100)
    off = img.header_length
    cluster = 1 << cluster_bits
    while off + 8 <= cluster:
        magic, length = struct.unpack_from(">II", data, off)
        if magic == EXT_END:
            break
        img.extensions.append(Extension(magic, off, data[off + 8 : off + 8 + length]))
        off += 8 + (length + 7) // 8 * 8
    off = snapshots_offset
    for _ in range(nb_snapshots):
        start = off
        header = data[off : off + ENTRY_HEADER.size]
        (
            _l1_off,
            _l1_size,
            id_size,
            name_size,
            _dsec,
            _dnsec,
            _clock,
            vm_state_size,
            extra_size,
        ) = struct.unpack_from(">QIHHIIQII", data, off)
        off += 40
        extra = data[off : off + extra_size]
        off += extra_size
        ident = data[off : off + id_size].decode()
        off += id_size
        name = data[off : off + name_size].decode()
        off += name_size
        off = (off + 7) // 8 * 8
        img.snapshots.append(Snapshot(start, ident, name, vm_state_size, extra_size, extra, header))
    img.snapshots_size = off - snapshots_offset if nb_snapshots else 0
    return img


def patch_bytes(path: Path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(new)


def point_first_l2_entry_at_active_l1(path: Path) -> None:
    """Corrupt ``path`` (as iotest 060 does): its first L2 entry := the active L1 table's
    cluster, COPIED, so the next write of guest cluster 0 trips qcow2's metadata overlap
    check, a fatal corruption. Guest cluster 0 must be allocated."""
    data = path.read_bytes()
    l1_offset, = struct.unpack_from(">Q", data, 40)
    l2_offset, = struct.unpack_from(">Q", data, l1_offset)
    patch_bytes(path, l2_offset & 0x00FFFFFFFFFFFE00, struct.pack(">Q", (1 << 63) | l1_offset))


def set_uuid_field(path: Path, snap: Snapshot, field_offset: int, value: uuidlib.UUID) -> None:
    """Overwrite one UUID field of a snapshot entry in place (it must exist)."""
    assert snap.extra_data_size >= field_offset + UUID_LEN, "field not covered"
    patch_bytes(path, snap.extra_offset + field_offset, value.bytes)


def set_autoclear(path: Path, bits: int) -> None:
    """Overwrite the autoclear feature bits (v3)."""
    patch_bytes(path, 88, struct.pack(">Q", bits))


def set_extension_length(path: Path, ext: Extension, length: int) -> None:
    patch_bytes(path, ext.offset + 4, struct.pack(">I", length))


def set_nb_snapshots(path: Path, nb: int) -> None:
    patch_bytes(path, 60, struct.pack(">I", nb))


def write_snapshot_table(path: Path, snapshots: list[Snapshot]) -> None:
    """Rewrite the snapshot table in place with these entries (e.g. made by
    Snapshot.with_extra). The new table must fit in the clusters the old one
    occupies, so that the refcounts on disk stay right and only what the test
    changed is wrong with the image; the rest of those clusters is zeroed."""
    img = read(path)
    assert img.nb_snapshots > 0, "the image must have a snapshot table to rewrite"
    room = -(-img.snapshots_size // img.cluster_size) * img.cluster_size
    table = b"".join(s.entry_bytes() for s in snapshots)
    assert len(table) <= room, f"new table of {len(table)} bytes does not fit in {room}"
    patch_bytes(path, img.snapshots_offset, table + b"\0" * (room - len(table)))
    set_nb_snapshots(path, len(snapshots))


def write_extensions(path: Path, extensions: list[tuple[int, bytes]]) -> None:
    """Rewrite the header extension area (no backing file; v2 images have it right after
    the 72-byte header) with these (magic, data) extensions, in this order, followed by the
    end marker."""
    img = read(path)
    assert img.backing_file_offset == 0, "an image without backing file"
    area = b""
    for magic, data in extensions:
        area += struct.pack(">II", magic, len(data)) + data + b"\0" * (-len(data) % 8)
    area += struct.pack(">II", EXT_END, 0)
    end = img.cluster_size
    assert img.header_length + len(area) <= end, "extensions do not fit in cluster 0"
    patch_bytes(path, img.header_length, area + b"\0" * (end - img.header_length - len(area)))


def with_identity(snap: Snapshot, u: uuidlib.UUID, parent: uuidlib.UUID | None) -> Snapshot:
    """A copy of ``snap`` whose extra data carries UUID and parent (SPEC.md §1), grown to
    cover them; bytes before and after the two fields are kept."""
    extra = bytearray(snap.extra.ljust(EXTRA_PARENT + UUID_LEN, b"\0"))
    extra[EXTRA_UUID : EXTRA_UUID + UUID_LEN] = u.bytes
    extra[EXTRA_PARENT : EXTRA_PARENT + UUID_LEN] = (parent or NIL).bytes
    return snap.with_extra(bytes(extra))


def set_current_record(
    path: Path,
    u: uuidlib.UUID | None,
    *,
    snapshots_offset: int | None = None,
    nb_snapshots: int | None = None,
    reserved: bytes = bytes(4),
) -> CurrentRecord:
    """Write a 32-byte record naming ``u`` (None: nil) as the first header extension, for
    the table the header points at now unless told otherwise (a stale record); any other
    current snapshot extension is replaced."""
    img = read(path)
    rec = CurrentRecord(
        u or NIL,
        img.snapshots_offset if snapshots_offset is None else snapshots_offset,
        img.nb_snapshots if nb_snapshots is None else nb_snapshots,
        reserved,
    )
    set_current_records(path, [rec.pack()])
    return rec


def set_current_records(path: Path, datas: list[bytes]) -> None:
    """Replace every current snapshot extension by one per item of ``datas`` (any length;
    none: remove it), put first as QEMU does; the other extensions are kept after them."""
    img = read(path)
    keep = [(e.magic, e.data) for e in img.extensions if e.magic != EXT_CURRENT_SNAPSHOT]
    write_extensions(path, [(EXT_CURRENT_SNAPSHOT, d) for d in datas] + keep)


def set_extensions(path: Path, magic: int, datas: list[bytes]) -> None:
    """Replace every extension of type ``magic`` by one per item of ``datas``
    (none: remove it), keeping the others (e.g. the feature name table)."""
    img = read(path)
    keep = [(e.magic, e.data) for e in img.extensions if e.magic != magic]
    write_extensions(path, keep + [(magic, d) for d in datas])

"""A small, independent qcow2 reader for byte-level assertions.

Deliberately not QEMU's code (nor tests/qemu-iotests/qcow2.py): the tests
compare what QEMU reports about an image with what is on disk, read here
from the qcow2 specification (docs/interop/qcow2.txt) and SPEC.md §1.

Also has a few in-place writers for same-size corruptions (duplicate UUIDs,
parent cycles, wrong extension lengths) used by the bad-input tests.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field
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


@dataclass
class Extension:
    magic: int
    offset: int          # of the 8-byte type/length header in the file
    data: bytes


@dataclass
class Snapshot:
    offset: int          # of the table entry in the file
    id: str
    name: str
    vm_state_size: int
    extra_data_size: int
    extra: bytes

    def _uuid_at(self, off: int) -> uuidlib.UUID | None:
        """The UUID field at ``off`` if extra data covers it entirely, else None."""
        if self.extra_data_size < off + UUID_LEN:
            return None
        return uuidlib.UUID(bytes=self.extra[off:off + UUID_LEN])

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
    extensions: list[Extension] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def extension(self, magic: int) -> list[Extension]:
        return [e for e in self.extensions if e.magic == magic]

    def by_name(self, name: str) -> Snapshot:
        found = [s for s in self.snapshots if s.name == name]
        assert len(found) == 1, f"{len(found)} snapshots named {name!r} in {self.path}"
        return found[0]


def read(path: Path) -> Image:
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a qcow2 image")
    (version,) = struct.unpack_from(">I", data, 4)
    cluster_bits, size = struct.unpack_from(">IQ", data, 20)
    nb_snapshots, snapshots_offset = struct.unpack_from(">IQ", data, 60)
    img = Image(Path(path), version, cluster_bits, size, nb_snapshots, snapshots_offset)
    if version >= 3:
        img.incompatible, img.compatible, img.autoclear = struct.unpack_from(">QQQ", data, 72)
        (img.header_length,) = struct.unpack_from(">I", data, 100)
    off = img.header_length
    cluster = 1 << cluster_bits
    while off + 8 <= cluster:
        magic, length = struct.unpack_from(">II", data, off)
        if magic == EXT_END:
            break
        img.extensions.append(Extension(magic, off, data[off + 8:off + 8 + length]))
        off += 8 + (length + 7) // 8 * 8
    off = snapshots_offset
    for _ in range(nb_snapshots):
        start = off
        (_l1_off, _l1_size, id_size, name_size, _dsec, _dnsec, _clock, vm_state_size,
         extra_size) = struct.unpack_from(">QIHHIIQII", data, off)
        off += 40
        extra = data[off:off + extra_size]
        off += extra_size
        ident = data[off:off + id_size].decode()
        off += id_size
        name = data[off:off + name_size].decode()
        off += name_size
        off = (off + 7) // 8 * 8
        img.snapshots.append(Snapshot(start, ident, name, vm_state_size, extra_size, extra))
    return img


def patch_bytes(path: Path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(new)


def set_uuid_field(path: Path, snap: Snapshot, field_offset: int,
                   value: uuidlib.UUID) -> None:
    """Overwrite one UUID field of a snapshot entry in place (it must exist)."""
    assert snap.extra_data_size >= field_offset + UUID_LEN, "field not covered"
    patch_bytes(path, snap.extra_offset + field_offset, value.bytes)


def set_autoclear(path: Path, bits: int) -> None:
    patch_bytes(path, 88, struct.pack(">Q", bits))


def set_extension_length(path: Path, ext: Extension, length: int) -> None:
    patch_bytes(path, ext.offset + 4, struct.pack(">I", length))

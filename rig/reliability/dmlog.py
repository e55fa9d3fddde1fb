"""dm-log-writes logs, as QEMU's blklogwrites driver writes them.

The format is Linux's drivers/md/dm-log-writes.c, copied by block/blklogwrites.c (all fields
little-endian):

  sector 0       super block {u64 magic, u64 version, u64 nr_entries, u32 sectorsize}
  sector 1...    entries, each one sector {u64 sector, u64 nr_sectors, u64 flags,
                 u64 data_len} padded with zeroes, followed by its data:
                   a write           nr_sectors sectors of data (a write-zeroes request is
                                     logged as a write of zeroes)
                   a flush           nothing (QEMU: sector 0, nr_sectors 0, flag FLUSH)
                   a discard         nothing (nr_sectors says how much was discarded)
                   a mark (Linux)    data_len bytes of text, padded to a sector

`sector` and `nr_sectors` count log sectors (`sectorsize` bytes, 512 here), also for the
image. QEMU sets FLUSH on flush requests only and never sets FUA (a FUA write is logged
as a plain write); Linux may also log a write with FLUSH (a pre-flush) or FUA. The super
block's nr_entries is updated on every flush and every log-super-update-interval entries,
so a log of a finished qemu-img run (which flushes on close) is complete.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = 0x6A736677736872
VERSION = 1
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
KNOWN_FLAGS = FLUSH | FUA | DISCARD | MARK


class LogError(ValueError):
    """The log is not a dm-log-writes log, or is cut short."""


@dataclass(frozen=True)
class Entry:
    index: int  # position in the log, from 0
    offset: int  # byte offset in the logged device (the image file)
    length: int  # bytes (written, or discarded)
    flags: int
    data: bytes = b""  # a write's data; a mark's text
    # where this entry's header sector is in the log file (for error messages)
    log_offset: int = 0

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & FLUSH)

    @property
    def is_fua(self) -> bool:
        return bool(self.flags & FUA)

    @property
    def is_discard(self) -> bool:
        return bool(self.flags & DISCARD)

    @property
    def is_mark(self) -> bool:
        return bool(self.flags & MARK)

    @property
    def is_write(self) -> bool:
        """Carries data for the device (a flush with data is a pre-flush write)."""
        return not (self.is_discard or self.is_mark) and self.length > 0

    @property
    def kind(self) -> str:
        if self.is_mark:
            return "mark"
        if self.is_discard:
            return "discard"
        if self.is_write:
            return "write" + ("+flush" if self.is_flush else "") + ("+fua" if self.is_fua else "")
        return "flush" if self.is_flush else "empty"

    def describe(self) -> str:
        if self.kind in ("flush", "empty"):
            return f"#{self.index} {self.kind}"
        if self.is_mark:
            return f"#{self.index} mark {self.data.decode(errors='replace')!r}"
        return f"#{self.index} {self.kind} {self.offset:#x}+{self.length:#x}"


@dataclass(frozen=True)
class Log:
    sectorsize: int
    entries: tuple[Entry, ...]

    def counts(self) -> dict[str, int]:
        out = {"writes": 0, "flushes": 0, "fua": 0, "discards": 0, "marks": 0}
        for e in self.entries:
            out["writes"] += e.is_write
            out["flushes"] += e.is_flush
            out["fua"] += e.is_fua
            out["discards"] += e.is_discard
            out["marks"] += e.is_mark
        return out


def _sectors(nbytes: int, sectorsize: int) -> int:
    return -(-nbytes // sectorsize)


def parse(raw: bytes) -> Log:
    """The entries of a dm-log-writes log (LogError if it is not one, or is cut short)."""
    if len(raw) < SUPER.size:
        raise LogError(f"log of {len(raw)} bytes has no super block")
    magic, version, nr_entries, ss = SUPER.unpack_from(raw, 0)
    if magic != MAGIC:
        raise LogError(f"bad magic {magic:#x} (want {MAGIC:#x})")
    if version != VERSION:
        raise LogError(f"unsupported log version {version}")
    if ss < ENTRY.size or ss & (ss - 1):
        raise LogError(f"bad sector size {ss}")
    entries = []
    pos = ss  # entries start at sector 1
    for index in range(nr_entries):
        if pos + ENTRY.size > len(raw):
            raise LogError(f"entry {index} at log offset {pos:#x} is past the end "
                           f"({len(raw)} bytes, {nr_entries} entries announced)")
        sector, nr_sectors, flags, data_len = ENTRY.unpack_from(raw, pos)
        if flags & ~KNOWN_FLAGS:
            raise LogError(f"entry {index}: unknown flags {flags:#x}")
        header_at = pos
        pos += ss
        data = b""
        if flags & MARK or data_len:
            size = data_len
            data = raw[pos : pos + size]
            pos += _sectors(size, ss) * ss
        elif not flags & DISCARD:
            size = nr_sectors * ss
            data = raw[pos : pos + size]
            if len(data) != size:
                raise LogError(f"entry {index}: {size} bytes of data announced, "
                               f"{len(data)} in the log")
            pos += size
        entries.append(Entry(index, sector * ss, nr_sectors * ss, flags, data, header_at))
    return Log(ss, tuple(entries))


def parse_file(path) -> Log:
    with open(path, "rb") as fh:
        return parse(fh.read())


# -- synthetic logs (the unit tests; also documents the format once more) -------------------


@dataclass(frozen=True)
class Op:
    """One request for ``build``: kind "write" (data at offset), "flush", "discard", "mark"."""

    kind: str
    offset: int = 0
    data: bytes = b""
    length: int = 0  # for a discard
    fua: bool = False
    preflush: bool = False


def build(ops: Iterable[Op], sectorsize: int = 512) -> bytes:
    """A log as blklogwrites (or dm-log-writes, for FUA/pre-flush/marks) would write it."""
    body = b""
    n = 0
    for op in ops:
        n += 1
        if op.kind == "write":
            assert op.offset % sectorsize == 0 and len(op.data) % sectorsize == 0
            flags = (FUA if op.fua else 0) | (FLUSH if op.preflush else 0)
            head = ENTRY.pack(op.offset // sectorsize, len(op.data) // sectorsize, flags, 0)
            payload = op.data
        elif op.kind == "flush":
            head, payload = ENTRY.pack(0, 0, FLUSH, 0), b""
        elif op.kind == "discard":
            head = ENTRY.pack(op.offset // sectorsize, op.length // sectorsize, DISCARD, 0)
            payload = b""
        elif op.kind == "mark":
            head = ENTRY.pack(0, 0, MARK, len(op.data))
            payload = op.data + b"\0" * (-len(op.data) % sectorsize)
        else:
            raise ValueError(op.kind)
        body += head.ljust(sectorsize, b"\0") + payload
    sup = SUPER.pack(MAGIC, VERSION, n, sectorsize).ljust(sectorsize, b"\0")
    return sup + body

"""Crash states of a logged operation: what the image file may hold after a power failure.

Model (the one of CrashMonkey and ALICE, at the block layer): the log lists the requests
to the image file in completion order. A flush makes every write that completed before it
durable; a FUA write is durable on completion. A crash at a point in the log leaves every
durable write, plus any subset of the writes completed since the last flush (the
"volatile" writes of the current flush epoch): the device may have written them in any
order, or not at all (FUA writes, which QEMU never logs, count as durable from the end
of their epoch on). Writes are atomic per sector (512 bytes); a multi-sector write may
be torn at a sector boundary. Discards of volatile ranges are either done (the range reads
zeroes, as file-posix punches holes) or not.

The explored set (``Bound``), for every flush epoch:
- the in-order prefix at every write boundary (a crash with nothing reordered);
- every subset of the epoch's volatile writes when it has at most ``exhaustive_upto`` of
  them (2**8 = 256 subsets): complete under the model, and qcow2 epochs are small, because
  qcow2 orders its metadata with flushes (qcow2_cache dependencies, bdrv_pwrite_sync);
- for larger epochs, at the epoch's end every subset with at most ``max_omitted_end`` (2)
  writes missing, and at every crash point inside it the prefix with any
  ``max_omitted_inside`` (1) earlier write missing. A crash-consistency bug within one
  epoch is a write that persisted while a write it depends on did not: one omission at
  every crash point finds every missing single dependency, two at the end the pairs (a
  table and the header pointing at it lost, the refcount update kept). That is O(n**2)
  states for an epoch of n writes instead of 2**n;
- with ``torn``, each multi-sector write cut after its first sector and before its last
  one (the in-order prefix before it).
States that give the same bytes are checked once (the caller dedupes by content).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from .dmlog import Log


@dataclass(frozen=True)
class Bound:
    exhaustive_upto: int = 8
    max_omitted_end: int = 2
    max_omitted_inside: int = 1
    torn: bool = True

    def describe(self) -> str:
        return (f"every in-order prefix; all subsets of epochs with <= {self.exhaustive_upto} "
                f"unflushed writes; larger epochs: <= {self.max_omitted_end} omitted at the "
                f"epoch end, <= {self.max_omitted_inside} inside"
                + ("; torn multi-sector writes (first sector / all but the last)"
                   if self.torn else ""))


@dataclass(frozen=True)
class CrashState:
    boundary: int  # the entries [0, boundary) were issued before the crash
    omitted: frozenset[int] = field(default_factory=frozenset)  # issued, not persisted
    torn: tuple[int, int] | None = None  # (entry index, bytes of it that persisted)
    kind: str = "prefix"  # "prefix", "reorder" or "torn"

    def label(self) -> str:
        text = f"crash before #{self.boundary}" if self.boundary else "crash before any write"
        if self.omitted:
            text += " without " + ",".join(f"#{i}" for i in sorted(self.omitted))
        if self.torn:
            text += f", #{self.torn[0]} torn after {self.torn[1]} bytes"
        return text

    def to_json(self) -> dict:
        return {"boundary": self.boundary, "omitted": sorted(self.omitted),
                "torn": list(self.torn) if self.torn else None, "kind": self.kind}


@dataclass(frozen=True)
class Epoch:
    """The writes (and discards) completed since the last flush, up to ``end`` (the index
    of the flush that ends it, or the log's length)."""

    start: int
    end: int
    volatile: tuple[int, ...]  # entry indexes, in order (FUA writes are durable: not here)


def epochs(log: Log) -> list[Epoch]:
    out, volatile, start = [], [], 0
    for e in log.entries:
        if e.is_flush:  # a flush (or a pre-flush write): what completed before is durable
            out.append(Epoch(start, e.index, tuple(volatile)))
            volatile, start = [], e.index
        if (e.is_write or e.is_discard) and not e.is_fua:
            volatile.append(e.index)
    out.append(Epoch(start, len(log.entries), tuple(volatile)))
    return out


def _subsets(items: tuple[int, ...], max_size: int) -> Iterator[frozenset[int]]:
    for k in range(1, min(max_size, len(items)) + 1):
        for combo in itertools.combinations(items, k):
            yield frozenset(combo)


def states(log: Log, bound: Bound = Bound()) -> Iterator[CrashState]:
    """The crash states of ``log`` under ``bound``, without logical duplicates (two states
    may still give the same bytes: a later write covering an omitted one)."""
    seen: set[tuple] = set()

    def emit(st: CrashState) -> Iterator[CrashState]:
        # omitting writes at or past the boundary means nothing
        st = CrashState(st.boundary, frozenset(i for i in st.omitted if i < st.boundary),
                        st.torn, st.kind)
        key = (st.boundary, st.omitted, st.torn)
        if key not in seen:
            seen.add(key)
            yield st

    entries = log.entries
    yield from emit(CrashState(0))
    for e in entries:
        if e.is_write or e.is_discard:
            yield from emit(CrashState(e.index + 1))
            if bound.torn and e.is_write and e.length > log.sectorsize:
                for keep in dict.fromkeys((log.sectorsize, e.length - log.sectorsize)):
                    yield from emit(CrashState(e.index + 1, torn=(e.index, keep), kind="torn"))
    for ep in epochs(log):
        vol = ep.volatile
        if not vol:
            continue
        # the crash point at the end of the epoch: everything in it issued, not yet flushed
        end = max(vol) + 1
        if len(vol) <= bound.exhaustive_upto:
            omitted_sets = _subsets(vol, len(vol))
        else:
            omitted_sets = _subsets(vol, bound.max_omitted_end)
            for k in range(2, len(vol) + 1):  # inside: after the k-th volatile write
                for omit in _subsets(vol[: k - 1], bound.max_omitted_inside):
                    yield from emit(CrashState(vol[k - 1] + 1, omit, kind="reorder"))
        for omit in omitted_sets:
            yield from emit(CrashState(end, omit, kind="reorder"))


def last_write_end(log: Log) -> int:
    """The boundary just after the log's last write or discard (0 if none): from there on,
    every state with nothing omitted or torn is the image the operation left."""
    ends = [e.index + 1 for e in log.entries if e.is_write or e.is_discard]
    return ends[-1] if ends else 0


def image_bytes(base: bytes, log: Log, state: CrashState) -> bytes:
    """The image file after ``state``: ``base`` (the image before the operation) with the
    persisted writes applied in log order (a later write to the same bytes wins)."""
    buf = bytearray(base)
    for e in log.entries[: state.boundary]:
        if e.index in state.omitted or not (e.is_write or e.is_discard):
            continue
        if e.is_discard:
            end = min(e.offset + e.length, len(buf))
            if end > e.offset:
                buf[e.offset : end] = bytes(end - e.offset)
            continue
        data = e.data
        if state.torn and state.torn[0] == e.index:
            data = data[: state.torn[1]]
        end = e.offset + len(data)
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        buf[e.offset : end] = data
    return bytes(buf)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

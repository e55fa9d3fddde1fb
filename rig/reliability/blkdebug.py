"""blkdebug rule files: an I/O error at the N-th write or flush of the image file, or at
the N-th occurrence of a qcow2 event (block/blkdebug.c, docs in qapi/block-core.json).

blkdebug has one state variable, so one fault per run: set-state rules count the
occurrences of the event (state 1, 2, ... N), and an inject-error rule that is active in
state N fails the request that follows the event, once. The write events are `pwritev`
and `pwritev_zero` (both count, as blklogwrites logs both as writes); flushes are
`flush_to_disk`. The request a qcow2 event (l1_update, refblock_update, ...) is followed by
is the metadata write it announces.
"""

from __future__ import annotations

from dataclasses import dataclass

WRITE_EVENTS = ("pwritev", "pwritev_zero")
FLUSH_EVENTS = ("flush_to_disk",)
QCOW2_EVENTS = ("l1_update", "l2_update", "l2_alloc_write", "refblock_update",
                "refblock_update_part", "refblock_alloc", "cluster_alloc", "cluster_free")
ERRNO_NAMES = {5: "EIO", 28: "ENOSPC"}


@dataclass(frozen=True)
class Fault:
    kind: str  # "write", "flush" or "event"
    index: int  # which occurrence, from 1
    errno: int
    event: str | None = None  # for kind "event"

    def label(self) -> str:
        what = {"write": "write", "flush": "flush"}.get(self.kind, self.event)
        return f"{ERRNO_NAMES.get(self.errno, self.errno)} at {what} #{self.index}"

    def events(self) -> tuple[str, ...]:
        if self.kind == "write":
            return WRITE_EVENTS
        if self.kind == "flush":
            return FLUSH_EVENTS
        return (self.event,)

    def iotype(self, event: str) -> str | None:
        return {"pwritev": "write", "pwritev_zero": "write-zeroes",
                "flush_to_disk": "flush"}.get(event)


def _section(kind: str, **fields) -> str:
    body = "".join(f'{k.replace("_", "-") if k != "new_state" else k} = "{v}"\n'
                   for k, v in fields.items() if v is not None)
    return f"[{kind}]\n{body}\n"


def rules(fault: Fault) -> str:
    """The blkdebug config file (its `config` option) for ``fault``."""
    out = []
    for event in fault.events():
        for state in range(1, fault.index):
            out.append(_section("set-state", event=event, state=state, new_state=state + 1))
        out.append(_section("inject-error", event=event, state=fault.index,
                            errno=fault.errno, once="on", immediately="on",
                            iotype=fault.iotype(event)))
    return "".join(out)

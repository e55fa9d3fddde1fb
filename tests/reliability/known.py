"""Bugs the reliability suite found that are not fixed yet, in one place.

A failure of a test that every one of its problems matches a known bug of the same write
path makes the test a strict xfail naming the bug (so CI stays meaningful while the fix is
pending), and a known bug that no longer shows fails the test: remove it here once fixed.
Each bug has a stand-alone reproducer under tests/reliability/bugs/ (BUGS.md there says
what happens, why, and the fix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownBug:
    id: str
    title: str
    origin: str  # "upstream" (the stock build has it too) or "series"
    parts: tuple[str, ...]  # where it shows: "crash:<path>", "faults:<path>", "fuzz", "kill"
    pattern: str  # matched (re.search) against each problem text
    reproducer: str  # under tests/reliability/bugs/

    def matches(self, part: str, problem: str) -> bool:
        return part in self.parts and re.search(self.pattern, problem) is not None


KNOWN: tuple[KnownBug, ...] = (
    KnownBug(
        "REL-1",
        "qcow2_snapshot_goto() writes the snapshot's L1 table with stale OFLAG_COPIED flags: "
        "a crash (or an error) before the flags are fixed lets the next guest write change "
        "the applied snapshot",
        "upstream",
        ("crash:snapshot-a", "faults:snapshot-a"),
        r"OFLAG_COPIED L2 cluster: .*refcount=2|changed when the guest wrote|"
        r"check after the guest wrote",
        "rel-1-snapshot-apply-copied.sh",
    ),
    KnownBug(
        "REL-2",
        "qemu-img snapshot -a reports failure after the snapshot's L1 table is on disk: an "
        "error while dropping the old table's refcounts fails the command, yet the active "
        "layer already reads the snapshot",
        "upstream",
        ("faults:snapshot-a",),
        r"reported failure \(exit \d+\) after it took effect",
        "rel-2-3-failure-after-commit.sh",
    ),
    KnownBug(
        "REL-3",
        "qemu-img snapshot -d reports failure after the snapshot table without the snapshot "
        "is on disk: an error while freeing its clusters fails the command, yet the "
        "snapshot is gone (only clusters leak)",
        "upstream",
        ("faults:snapshot-d-middle", "faults:snapshot-d-current"),
        r"reported failure \(exit \d+\) after it took effect",
        "rel-2-3-failure-after-commit.sh",
    ),
    KnownBug(
        "REL-4",
        "qemu-img snapshot -a/-d abort on a snapshot whose L1 table offset is the active L1 "
        "table's but whose L1 size differs: assert(l1_size == s->l1_size) in "
        "qcow2_update_snapshot_refcount() (a crafted image kills qemu-img/QEMU)",
        "upstream",
        ("fuzz",),
        r"Assertion .l1_size == s->l1_size. failed",
        "rel-4-l1-size-assert.sh",
    ),
    KnownBug(
        "REL-5",
        "qemu-img check -r leaks/all leaks the snapshot table it read when it repaired "
        "something: the second check pass (\"Double checking the fixed image\") reads the "
        "table again into s->snapshots without freeing the first copy",
        "upstream",
        ("fuzz",),
        r"LeakSanitizer.* in qcow2_check_read_snapshot_table",
        "rel-5-check-repair-leak.sh",
    ),
    KnownBug(
        "REL-6",
        "once qcow2 marks an image corrupt it drops its driver (bs->drv = NULL), so closing "
        "the node never runs qcow2_close(): the whole qcow2 state leaks (LeakSanitizer on "
        "any command that hits a fatal corruption)",
        "upstream",
        ("fuzz",),
        r"LeakSanitizer.*after qcow2 marked the image corrupt",
        "rel-6-corrupt-leak.sh",
    ),
)


def classify(part: str, problems: list[str]) -> set[str] | None:
    """The ids of the known bugs that explain every problem, or None if one is new."""
    ids = set()
    for p in problems:
        hit = [b.id for b in KNOWN if b.matches(part, p)]
        if not hit:
            return None
        ids.update(hit)
    return ids


def expected(part: str) -> list[KnownBug]:
    return [b for b in KNOWN if part in b.parts]

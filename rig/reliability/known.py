"""Bugs the reliability suite found, in one place: KNOWN (not fixed yet), FIXED (fixed by a
stable-fixes patch; their reproducers are regression tests).

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
    # under tests/reliability/bugs/: sh SCRIPT QEMU_IMG QEMU_IO, exit 1 = shows (a script
    # that needs qemu-system-x86_64 takes the one beside QEMU_IMG)
    reproducer: str
    asan: bool = False  # the reproducer needs the ASan build

    def matches(self, part: str, problem: str) -> bool:
        return part in self.parts and re.search(self.pattern, problem) is not None


# Open bugs: none (the stable-fixes series fixes every bug found).
KNOWN: tuple[KnownBug, ...] = ()


def classify(part: str, problems: list[str], bugs=None) -> set[str] | None:
    """The ids of the bugs (``bugs``, default KNOWN) that explain every problem, or None if
    one is new."""
    ids = set()
    for p in problems:
        hit = [b.id for b in (KNOWN if bugs is None else bugs) if b.matches(part, p)]
        if not hit:
            return None
        ids.update(hit)
    return ids


def expected(part: str) -> list[KnownBug]:
    return [b for b in KNOWN if part in b.parts]


@dataclass(frozen=True)
class FixedBug:
    """A bug the suite found that a patch of the stable-fixes series fixes. Its reproducer
    stays as a regression test (exit 0 on the patched build, 1 on stock, which has it), and
    a stock test whose every problem is a fixed upstream bug is an xfail naming it (the full
    run runs stock to tell upstream's failures from the series')."""

    id: str
    parts: tuple[str, ...]  # where it shows on stock, as KnownBug.parts
    pattern: str  # as KnownBug.pattern
    reproducer: str  # under tests/reliability/bugs/, as KnownBug.reproducer
    fixed_by: str  # the patch's subject
    asan: bool = False  # shows only under LeakSanitizer: checked on the patched ASan build

    def matches(self, part: str, problem: str) -> bool:
        return part in self.parts and re.search(self.pattern, problem) is not None


_LOADS = ("faults:hmp-loadvm", "faults:qmp-snapshot-load")
_AFTER_COMMIT = r"reported failure \(exit \d+\) after it took effect"
FIXED: tuple[FixedBug, ...] = (
    FixedBug("REL-1", ("crash:snapshot-a", "faults:snapshot-a", *_LOADS),
             r"OFLAG_COPIED L2 cluster: .*refcount=2|changed when the guest wrote|"
             r"check after the guest wrote",
             "rel-1-snapshot-apply-copied.sh",
             "qcow2: Clear OFLAG_COPIED in a snapshot's L1 table before applying it"),
    FixedBug("REL-2", ("faults:snapshot-a", *_LOADS), _AFTER_COMMIT,
             "rel-2-3-failure-after-commit.sh",
             "qcow2: Do not fail snapshot apply or delete after they took effect"),
    FixedBug("REL-3", ("faults:snapshot-d-middle", "faults:snapshot-d-current",
                       "faults:hmp-delvm", "faults:qmp-snapshot-delete"), _AFTER_COMMIT,
             "rel-2-3-failure-after-commit.sh",
             "qcow2: Do not fail snapshot apply or delete after they took effect"),
    FixedBug("REL-4", ("fuzz",), r"Assertion .l1_size == s->l1_size. failed",
             "rel-4-l1-size-assert.sh",
             "qcow2: Do not apply or free snapshots whose L1 table is the active one"),
    FixedBug("REL-5", ("fuzz",), r"LeakSanitizer.* in qcow2_check_read_snapshot_table",
             "rel-5-check-repair-leak.sh",
             "qcow2: Do not leak the snapshot table when check reads it again", asan=True),
    FixedBug("REL-6", ("fuzz",), r"LeakSanitizer.*after qcow2 marked the image corrupt",
             "rel-6-corrupt-leak.sh",
             "qcow2: Free the state of an image that was marked corrupt", asan=True),
    # found by the block-maintainer review of REL-6's fix, not by a part of the suite
    FixedBug("REL-9", (), r"(?!)", "rel-9-reopen-corrupt-node.sh",
             "block: Do not crash reopening a node without a driver"),
    FixedBug("REL-7", ("faults:hmp-savevm", "faults:qmp-snapshot-save"),
             r"reported success but did not take effect|snapshot-save: Operation not permitted",
             "rel-7-8-savevm-vmstate-flush.sh",
             "migration/savevm: Report a failure to flush the VM state"),
    FixedBug("REL-8", ("faults:hmp-savevm", "faults:qmp-snapshot-save"),
             r"bdrv_close_all: Assertion",
             "rel-7-8-savevm-vmstate-flush.sh",
             "migration/savevm: Do not leak the VM state channel"),
)


def classify_fixed(part: str, problems: list[str]) -> set[str] | None:
    """The ids of the fixed (upstream) bugs that explain every problem, or None."""
    return classify(part, problems, FIXED)


def reproducers() -> dict[str, list[FixedBug]]:
    """Each fixed bug's reproducer once, with the bugs it shows."""
    out: dict[str, list[FixedBug]] = {}
    for b in FIXED:
        out.setdefault(b.reproducer, []).append(b)
    return out

"""What must hold of an image after a crash, a failed request or a killed QEMU.

Pure functions: ``verify(before, change, observed)`` gets the image before the operation,
the operation, and what the tools and the independent reader saw afterwards, and returns
the problems (an empty list: the state is fine). Nothing here runs QEMU, so the rules are
unit-tested on synthetic data (tests/unit/test_reliability.py).

The rules (SPEC.md §1):
- every QEMU opens it: the patched qemu-img and Debian's 7.2 (an older deployed peer);
- `qemu-img check` finds no corruption (leaked clusters are allowed: exit 0 or 3), for
  both; a final state (the operation ran to its end) has no leaks either;
- every snapshot that existed before is still listed, with the same UUID and parent, and
  reads back the same data (the operation's own target excepted: a deleted snapshot may be
  gone, and then its children's parent is its parent); qemu-img lists what the reader lists;
- the active layer reads what it read before (snapshot -a: before, or the applied one);
- a new snapshot is absent or complete: a fresh UUID, the old current snapshot as parent,
  the data the active layer had;
- the current-snapshot record names the old current snapshot before the operation
  committed, the new one after it (or the old one where only an undetectable window
  exists: snapshot -a between the L1 write and the record), or is detected invalid
  (absent, stale, malformed, nil); it never has a matching table pointer with a UUID that
  is not in the table;
- with the operation's exit code known (fault injection): success means it committed, and
  a failure means it did not ("never reports failure after it committed");
- a VM path (``runstate``): after the operation the VM runs, except after a failed load
  (loadvm, snapshot-load), which QEMU 10.2.2 leaves in `restore-vm` once it may have
  changed devices (migration/savevm.c); after a load that succeeded, guest RAM holds what
  the loaded snapshot saved.
"""

from __future__ import annotations

import enum
import uuid as uuidlib
from dataclasses import dataclass, field

# qemu-img check exit codes
CHECK_CLEAN, CHECK_FAILED, CHECK_CORRUPT, CHECK_LEAKS = 0, 1, 2, 3
CHECK_OK = (CHECK_CLEAN, CHECK_LEAKS)


class OpKind(enum.Enum):
    CREATE = "create"  # qemu-img snapshot -c / savevm / snapshot-save: target is the new name
    APPLY = "apply"  # qemu-img snapshot -a / loadvm: target is the applied snapshot
    DELETE = "delete"  # qemu-img snapshot -d / delvm / snapshot-delete
    CHECK = "check"  # qemu-img check -r all: target None


@dataclass(frozen=True)
class Snap:
    id: str
    name: str
    uuid: uuidlib.UUID | None
    parent: uuidlib.UUID | None
    data: str | None = None  # sha256 of the guest data it reads (None: not read)
    vm_state_size: int = 0


@dataclass(frozen=True)
class ImageView:
    """An image as the independent reader sees it, plus the data the tools read."""

    snapshots: tuple[Snap, ...]
    active: str | None  # sha256 of the active layer's data
    record: str  # qcow2.RecordState value: absent, malformed, none, stale, unknown, valid
    current: uuidlib.UUID | None = None  # the record's UUID when valid

    def by_name(self, name: str) -> Snap | None:
        found = [s for s in self.snapshots if s.name == name]
        return found[0] if len(found) == 1 else None

    def names(self) -> list[str]:
        return [s.name for s in self.snapshots]


@dataclass(frozen=True)
class Change:
    kind: OpKind
    target: str | None = None

    def describe(self) -> str:
        return f"{self.kind.value} {self.target}" if self.target else self.kind.value


@dataclass(frozen=True)
class CheckOutcome:
    """One `qemu-img check` (no repair): its exit code (0 clean, 1 check failed, 2
    corruptions, 3 leaks only), a summary, and the ERROR lines that put data at risk
    (observe.classify_check; the rest are counted in ``harmless``)."""

    code: int
    summary: str = ""
    danger: list[str] = field(default_factory=list)
    harmless: int = 0

    @property
    def ok(self) -> bool:
        """No data at risk: clean, leaks, or only harmless flag mismatches."""
        return self.code in CHECK_OK or (self.code == CHECK_CORRUPT and not self.danger)


@dataclass
class Observed:
    view: ImageView | None  # None: the reader could not make sense of the image
    reader_error: str | None = None
    opens: dict[str, str | None] = field(default_factory=dict)  # tool -> None or the error
    checks: dict[str, CheckOutcome] = field(default_factory=dict)  # tool -> its check
    listed: dict[str, list[str]] = field(default_factory=dict)  # tool -> names it lists
    read_errors: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)  # commands that timed out or crashed
    # writing to the active layer of a copy changed a snapshot (observe.probe_write)
    probe_errors: list[str] = field(default_factory=list)


def _u(u: uuidlib.UUID | None) -> str:
    return str(u) if u else "none"


def committed(before: ImageView, change: Change, view: ImageView) -> bool:
    """Whether the operation's effect is visible in ``view``."""
    if change.kind is OpKind.CREATE:
        return view.by_name(change.target) is not None
    if change.kind is OpKind.DELETE:
        return view.by_name(change.target) is None
    if change.kind is OpKind.APPLY:
        target = before.by_name(change.target)
        return target is not None and view.active == target.data
    return False  # a repair has no single visible effect; see verify(reported=...)


def expected_current(before: ImageView, change: Change, view: ImageView) -> set:
    """The UUIDs a valid record may name in ``view``, and the one it should name when the
    operation has committed (the first of the tuple, None: no current snapshot)."""
    old = before.current
    if change.kind is OpKind.CHECK:
        return {old}
    done = committed(before, change, view)
    if not done:
        return {old}
    if change.kind is OpKind.CREATE:
        return {view.by_name(change.target).uuid}
    if change.kind is OpKind.APPLY:
        # between the L1 write and the record update the old record is still valid: a
        # crash there costs the next snapshot its parent, undetectably (documented)
        return {before.by_name(change.target).uuid, old}
    target = before.by_name(change.target)
    if old is not None and target is not None and old == target.uuid:
        return {target.parent}
    return {old}


def verify(before: ImageView, change: Change, obs: Observed, *, final: bool = False,
           reported: int | None = None, identity: bool = True) -> list[str]:
    """The problems of one observed state (see the module docstring). ``final``: the
    operation ran to its end (the whole log); ``reported``: its exit code, when known;
    ``identity``: the operation ran on a build with the series (without it, new snapshots
    get no UUID, deleting one reparents nothing, and the record is not updated: only the
    safety rules apply, existing UUIDs and parents must still be kept)."""
    problems = [f"hang or crash: {h}" for h in obs.hangs]
    for tool, err in obs.opens.items():
        if err is not None:
            problems.append(f"{tool} cannot open it: {err}")
    for tool, chk in obs.checks.items():
        if not chk.ok:
            lines = chk.danger or [chk.summary]
            more = f" (+{len(lines) - 2} more)" if len(lines) > 2 else ""
            problems.append(f"{tool} check: exit {chk.code}: " + " / ".join(lines[:2]) + more)
        elif final and chk.code != CHECK_CLEAN and change.kind is not OpKind.CHECK:
            problems.append(f"{tool} check after the complete operation: exit {chk.code}: "
                            f"{chk.summary}")
    problems += [f"read error: {e}" for e in obs.read_errors]
    problems += [f"data at risk: {e}" for e in obs.probe_errors]
    view = obs.view
    if view is None:
        return problems + [f"the reader cannot read the image: {obs.reader_error}"]
    for tool, names in obs.listed.items():
        if sorted(names) != sorted(view.names()):
            problems.append(f"{tool} lists {sorted(names)}, the table holds "
                            f"{sorted(view.names())}")

    target = before.by_name(change.target) if change.target else None
    gone_ok = change.kind is OpKind.DELETE
    target_gone = change.kind is OpKind.DELETE and view.by_name(change.target) is None
    for old in before.snapshots:
        now = view.by_name(old.name)
        if now is None:
            if not (gone_ok and old.name == change.target):
                problems.append(f"snapshot {old.name} ({_u(old.uuid)}) is gone")
            continue
        if now.uuid != old.uuid:
            problems.append(f"snapshot {old.name}: UUID {_u(now.uuid)}, was {_u(old.uuid)}")
        want_parent = old.parent
        if target_gone and target is not None and old.parent == target.uuid \
                and target.uuid is not None:
            want_parent = target.parent  # reparented to the deleted snapshot's parent
        if now.parent != want_parent and (identity or now.parent != old.parent):
            problems.append(f"snapshot {old.name}: parent {_u(now.parent)}, expected "
                            f"{_u(want_parent)}")
        if old.data is not None and now.data != old.data:
            problems.append(f"snapshot {old.name}: its data changed")
        if now.vm_state_size != old.vm_state_size:
            problems.append(f"snapshot {old.name}: VM state size {now.vm_state_size}, was "
                            f"{old.vm_state_size}")

    known = set(before.names()) | ({change.target} if change.kind is OpKind.CREATE else set())
    for extra in sorted(set(view.names()) - known):
        problems.append(f"unexpected snapshot {extra}")
    dupes = {s.uuid for s in view.snapshots if s.uuid and
             sum(t.uuid == s.uuid for t in view.snapshots) > 1}
    if dupes:
        problems.append("duplicate UUIDs: " + ", ".join(sorted(map(str, dupes))))

    if change.kind is OpKind.CREATE and identity:
        new = view.by_name(change.target)
        if new is not None:
            if new.uuid is None:
                problems.append(f"new snapshot {new.name} has no UUID")
            elif new.uuid in {s.uuid for s in before.snapshots}:
                problems.append(f"new snapshot {new.name} reuses UUID {new.uuid}")
            if new.parent != before.current:
                problems.append(f"new snapshot {new.name}: parent {_u(new.parent)}, expected "
                                f"{_u(before.current)}")
            if before.active is not None and new.data != before.active:
                problems.append(f"new snapshot {new.name} does not hold the active data")

    allowed_active = {before.active}
    if change.kind is OpKind.APPLY and target is not None:
        allowed_active.add(target.data)
    if before.active is not None and view.active not in allowed_active:
        problems.append("the active layer's data changed" if change.kind is not OpKind.APPLY
                        else "the active layer reads neither its old data nor the snapshot's")

    if change.kind is OpKind.CREATE and not identity:
        new = view.by_name(change.target)
        if new is not None and before.active is not None and new.data != before.active:
            problems.append(f"new snapshot {new.name} does not hold the active data")

    if not identity:
        pass
    elif view.record == "unknown":
        problems.append("the current-snapshot record matches the table pointer but names a "
                        "UUID that is not in the table")
    elif view.record == "valid":
        allowed = expected_current(before, change, view)
        if view.current not in allowed:
            problems.append(f"current snapshot {_u(view.current)}, allowed "
                            f"{', '.join(sorted(map(_u, allowed)))}")

    done = committed(before, change, view)
    if final:
        if change.kind is not OpKind.CHECK and not done:
            problems.append("the complete operation did not take effect")
        if change.kind is not OpKind.CHECK and identity:
            want = _final_current(before, change, view)
            if (view.record == "valid" and view.current != want) or \
                    (view.record != "valid" and want is not None):
                problems.append(f"after the complete operation the record is {view.record} "
                                f"({_u(view.current)}), expected valid {_u(want)}")
    if reported is not None and change.kind is not OpKind.CHECK:
        if reported == 0 and not done:
            problems.append("reported success but did not take effect")
        if reported != 0 and done:
            problems.append(f"reported failure (exit {reported}) after it took effect")
    if reported == 0 and change.kind is OpKind.CHECK:
        for tool, chk in obs.checks.items():
            if chk.code != CHECK_CLEAN:
                problems.append(f"check -r all reported success, {tool} check then: exit "
                                f"{chk.code}: {chk.summary}")
    return problems


def _final_current(before: ImageView, change: Change, view: ImageView) -> uuidlib.UUID | None:
    if change.kind is OpKind.CREATE:
        new = view.by_name(change.target)
        return new.uuid if new else None
    if change.kind is OpKind.APPLY:
        return before.by_name(change.target).uuid
    target = before.by_name(change.target)
    if target is not None and before.current == target.uuid:
        return target.parent
    return before.current


def runstate(change: Change, reported: int | None, status: str | None,
             ram: str | None = None, want_ram: str | None = None,
             resumed: str | None = None) -> list[str]:
    """The problems of a VM after an operation: ``status`` from query-status (None: QEMU
    did not answer), ``reported`` the operation's exit code (0 done, else failed); for a
    load, ``ram`` names whose RAM the guest holds and ``want_ram`` whose the loaded
    snapshot saved. A failed load may leave the VM in restore-vm: QEMU 10.2.2 stops the VM
    before it loads (`Note that execution of the guest CPUs will be stopped`, qapi
    snapshot-load) and resumes it only when the load succeeded, as the device state may be
    half loaded (nothing documents the state after a failure); then `cont` must resume it
    (``resumed``: the status after it). Every other operation resumes a VM that was
    running, success or not."""
    if status is None:
        return ["QEMU did not answer query-status after the operation"]
    allowed = {"running"}
    if change.kind is OpKind.APPLY and reported != 0:
        allowed.add("restore-vm")
    problems = []
    if status == "restore-vm" and status in allowed and resumed != "running":
        problems.append(f"the failed load left the VM in restore-vm and cont did not resume "
                        f"it ({resumed or 'no answer'})")
    if status not in allowed:
        problems.append(f"the VM is {status} after the operation "
                        f"({'failed' if reported else 'succeeded'}), expected "
                        f"{' or '.join(sorted(allowed))}")
    if change.kind is OpKind.APPLY and reported == 0 and want_ram is not None \
            and ram != want_ram:
        problems.append(f"after the load guest RAM holds {ram or 'unknown data'}, the "
                        f"snapshot saved {want_ram}'s")
    return problems

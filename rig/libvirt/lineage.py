"""Snapshot trees by name, from the image and from libvirt, and how they differ.

A ``Tree`` is what both sides can say: each snapshot's parent (None: a root) and the current
snapshot. libvirt names snapshots; the image names them by tag and links them by UUID
(SPEC.md §1), so ``from_image`` maps the qcow2 table's UUIDs to tags and the current record
(valid only when its snapshots_offset/nb_snapshots match the header) to a tag. ``Model`` is
the scenario's own expectation (SPEC.md §1 lineage, as libvirt keeps its trees: a new
snapshot's parent is the current one; revert makes the target current; delete makes the
children children of the deleted one's parent and, when it was current, its parent current).
``compare`` names every difference precisely; an empty list means the trees match.

Pure: no libvirt, no QEMU (tests/unit/test_libvirt_lineage.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rig import qcow2

ROOT = "none (a root)"


@dataclass(frozen=True)
class Tree:
    parents: Mapping[str, str | None]
    current: str | None
    # why ``current`` is None or a parent is unknown, as the reader saw it (image: the
    # record's state; libvirt: its views disagreeing with each other)
    notes: tuple[str, ...] = ()

    def children(self, name: str | None) -> list[str]:
        return sorted(n for n, p in self.parents.items() if p == name)

    def render(self) -> str:
        """One line per snapshot, indented under its parent; the current one marked '*'."""
        lines: list[str] = []

        def walk(name: str, depth: int, seen: frozenset) -> None:
            mark = " *" if name == self.current else ""
            lines.append(f"{'  ' * depth}{name}{mark}")
            if name in seen:  # a cycle: say so once, do not recurse forever
                lines.append(f"{'  ' * (depth + 1)}(cycle)")
                return
            for child in self.children(name):
                walk(child, depth + 1, seen | {name})

        roots = [n for n, p in self.parents.items() if p is None or p not in self.parents]
        for name in sorted(roots):
            walk(name, 0, frozenset())
        placed = {ln.strip().removesuffix(" *") for ln in lines}
        for name in sorted(set(self.parents) - placed):  # only reachable through a cycle
            walk(name, 0, frozenset())
        if not self.parents:
            lines.append("(no snapshots)")
        if self.current is None:
            lines.append("current: none")
        return "\n".join(lines + [f"({n})" for n in self.notes])


def from_image(image: qcow2.Image) -> Tree:
    """The tree the image holds: parents by UUID mapped to tags, and the current record."""
    notes = []
    by_uuid: dict = {}
    if without := [sn.name for sn in image.snapshots if sn.uuid is None]:
        notes.append(f"image: no UUID on {', '.join(without)}")
    for sn in image.snapshots:
        if sn.uuid is None:
            continue
        if sn.uuid in by_uuid:
            notes.append(f"image: {sn.name} and {by_uuid[sn.uuid]} share UUID {sn.uuid}")
        else:
            by_uuid[sn.uuid] = sn.name
    parents: dict[str, str | None] = {}
    for sn in image.snapshots:
        if sn.name in parents:
            notes.append(f"image: two snapshots have the tag {sn.name}")
        if sn.parent is None:
            parents[sn.name] = None
        elif sn.parent in by_uuid:
            parents[sn.name] = by_uuid[sn.parent]
        else:
            parents[sn.name] = f"?{sn.parent}"
            notes.append(f"image: the parent of {sn.name}, {sn.parent}, is in no snapshot")
    view = image.current_record()
    current = by_uuid.get(view.uuid) if view.uuid is not None else None
    fine = (qcow2.RecordState.VALID, qcow2.RecordState.NONE)
    if view.state not in fine and (image.snapshots or view.state is not
                                   qcow2.RecordState.ABSENT):
        notes.append(f"image: current-snapshot record {describe_record(image, view)}")
    return Tree(parents, current, tuple(notes))


def describe_record(image: qcow2.Image, view: qcow2.CurrentView) -> str:
    rec = view.record
    if view.state is qcow2.RecordState.STALE and rec is not None:
        return (f"stale: written for table {rec.snapshots_offset:#x}/{rec.nb_snapshots}, "
                f"header has {image.snapshots_offset:#x}/{image.nb_snapshots}")
    if view.state is qcow2.RecordState.UNKNOWN and rec is not None:
        return f"names {rec.uuid}, which no snapshot has"
    return view.state.value


@dataclass
class Model:
    """The expected tree, step by step."""

    parents: dict[str, str | None] = field(default_factory=dict)
    current: str | None = None

    def create(self, name: str) -> None:
        if name in self.parents:
            raise ValueError(f"snapshot {name} exists already")
        self.parents[name] = self.current
        self.current = name

    def revert(self, name: str) -> None:
        self._need(name)
        self.current = name

    def delete(self, name: str) -> None:
        self._need(name)
        parent = self.parents.pop(name)
        for child, p in self.parents.items():
            if p == name:
                self.parents[child] = parent
        if self.current == name:
            self.current = parent

    def _need(self, name: str) -> None:
        if name not in self.parents:
            raise ValueError(f"no snapshot {name}")

    def tree(self) -> Tree:
        return Tree(dict(self.parents), self.current)


def _p(parent: str | None) -> str:
    return ROOT if parent is None else parent


def compare(image: Tree, libvirt: Tree, expected: Tree | None = None) -> list[str]:
    """Every difference between the image's tree and libvirt's (and, when given, what the
    scenario expects of both), one sentence each; [] when they match."""
    problems = []
    names = sorted(set(image.parents) | set(libvirt.parents)
                   | set(expected.parents if expected else ()))
    for name in names:
        where = {"the image": image.parents, "libvirt": libvirt.parents}
        missing = [w for w, tree in where.items() if name not in tree]
        expect = ""
        if expected is not None:
            expect = (f"; the scenario expects parent {_p(expected.parents[name])}"
                      if name in expected.parents else "; the scenario deleted it")
        if missing:
            present = [w for w in where if w not in missing]
            if present:
                problems.append(f"{name}: in {present[0]} (parent "
                                f"{_p(where[present[0]][name])}) but not in "
                                f"{missing[0]}{expect}")
            elif expected is not None:
                problems.append(f"{name}: in neither the image nor libvirt, but the "
                                f"scenario expects it (parent {_p(expected.parents[name])})")
            continue
        ip, lp = image.parents[name], libvirt.parents[name]
        if ip != lp:
            problems.append(f"{name}: parent in the image {_p(ip)}, in libvirt {_p(lp)}"
                            + expect)
        elif expected is not None and name in expected.parents and expected.parents[name] != ip:
            problems.append(f"{name}: parent {_p(ip)} in both the image and libvirt{expect}")
        elif expected is not None and name not in expected.parents:
            problems.append(f"{name}: in both the image and libvirt{expect}")
    expect = ""
    if expected is not None:
        expect = f"; the scenario expects {expected.current or 'none'}"
    if image.current != libvirt.current:
        note = "".join(f" ({n})" for n in image.notes if "record" in n)
        problems.append(f"current: the image's is {image.current or 'none'}{note}, "
                        f"libvirt's {libvirt.current or 'none'}{expect}")
    elif expected is not None and expected.current != image.current:
        problems.append(f"current: {image.current or 'none'} in both the image and "
                        f"libvirt{expect}")
    problems += [n for n in image.notes + libvirt.notes
                 if not (n.startswith("image: current-snapshot record")
                         and image.current != libvirt.current)]
    return problems

"""The writer's image and the survey afterwards, read by the independent qcow2 reader
(rig/qcow2.py) and, for guest data, by the writer's qemu-img convert."""

from __future__ import annotations

import shutil
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.digest import sha256_file
from rig import qcow2
from rig.peers import matrix as mx
from rig.peers.tools import Commands, Tools

Identity = dict[str, tuple[uuidlib.UUID, uuidlib.UUID | None]]  # name -> (uuid, parent)


@dataclass(frozen=True)
class Base:
    """A template image made by the writer: model BASE, with identity (real or injected)."""

    path: Path
    design: mx.Design
    identity: Identity
    synthetic: bool  # the identity was written by rig/qcow2.py, not by QEMU

    def describe(self) -> str:
        how = "injected per SPEC.md §1" if self.synthetic else "written by the build"
        return f"{self.design.value} ({how})"


def apply_steps(cmds: Commands, t: Tools, path: Path, steps: tuple[mx.Step, ...]) -> None:
    for step in steps:
        if isinstance(step, mx.Write):
            what = f"-P {step.pattern:#x}" if step.pattern is not None else "-z"
            cmds.run(t, "io", "-f", "qcow2", "-c", f"write {what} {step.offset} {mx.CHUNK}", path)
        elif isinstance(step, mx.Snap):
            cmds.run(t, "img", "snapshot", "-c", step.name, path)
        elif isinstance(step, mx.Apply):
            cmds.run(t, "img", "snapshot", "-a", step.name, path)
        elif isinstance(step, mx.Delete):
            cmds.run(t, "img", "snapshot", "-d", step.name, path)
        else:
            raise TypeError(step)


def identity_on_disk(image: qcow2.Image) -> Identity:
    return {sn.name: (sn.uuid, sn.parent) for sn in image.snapshots if sn.uuid is not None}


def detect_design(image: qcow2.Image) -> mx.Design:
    exts = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)
    if any(len(e.data) == qcow2.CURRENT_RECORD.size for e in exts):
        return mx.Design.RECORD32
    if image.autoclear & mx.AUTOCLEAR16_BIT or exts:
        return mx.Design.AUTOCLEAR16
    return mx.Design.NONE


def inject_identity(path: Path, design: mx.Design, state: mx.State = mx.BASE_STATE) -> Identity:
    """Give the writer's snapshots fresh v4 UUIDs and the model's parents in their extra
    data, and the current snapshot in the layout of ``design`` (what the series writes)."""
    image = qcow2.read(path)
    ids = {name: uuidlib.uuid4() for name in state.parents}
    identity = {n: (ids[n], ids[p] if p else None) for n, p in state.parents.items()}
    qcow2.write_snapshot_table(
        path, [qcow2.with_identity(sn, *identity[sn.name]) for sn in image.snapshots]
    )
    current = ids[state.current] if state.current else None
    if design is mx.Design.RECORD32:
        qcow2.set_current_record(path, current)
    elif design is mx.Design.AUTOCLEAR16:
        qcow2.set_extensions(path, qcow2.EXT_CURRENT_SNAPSHOT, [(current or qcow2.NIL).bytes])
        qcow2.set_autoclear(path, image.autoclear | mx.AUTOCLEAR16_BIT)
    return identity


def make_base(cmds: Commands, writer: Tools, directory: Path, design: mx.Design) -> Base:
    """The writer makes the model's image; a writer without the series gets the identity
    injected in ``design``, the patched build's own is read back (its design detected)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "base.qcow2"
    path.unlink(missing_ok=True)
    cmds.run(writer, "img", "create", "-q", "-f", "qcow2", path, str(mx.SIZE))
    apply_steps(cmds, writer, path, mx.BASE)
    if writer.series:
        image = qcow2.read(path)
        return Base(path, detect_design(image), identity_on_disk(image), synthetic=False)
    return Base(path, design, inject_identity(path, design), synthetic=True)


def prepare(cmds: Commands, writer: Tools, path: Path, prep: mx.Prep) -> None:
    """The writer adds what triggers the upstream check-mode bug (Op.prep)."""
    if prep in (mx.Prep.BITMAP, mx.Prep.BITMAP_INCONSISTENT):
        cmds.run(writer, "img", "bitmap", "--add", path, "b0")
    if prep is mx.Prep.BITMAP_INCONSISTENT:
        qcow2.set_autoclear(path, qcow2.read(path).autoclear & ~qcow2.AUTOCLEAR_BITMAPS)
    if prep is mx.Prep.AUTOCLEAR_UNKNOWN:
        qcow2.set_autoclear(path, qcow2.read(path).autoclear | mx.AUTOCLEAR_UNKNOWN_BIT)


sha256 = sha256_file  # the image's bytes, read in chunks


# -- reading it back -----------------------------------------------------------------------


def regions(
    cmds: Commands, reader: Tools, path: Path, snapshot: str | None, size: int
) -> dict[int, int | None]:
    """The byte every model region holds (None: mixed bytes), read by ``reader``'s qemu-img
    convert (of snapshot ``snapshot`` when given) to a raw file beside ``path``."""
    raw = path.with_name(f"{path.stem}.{snapshot or 'active'}.raw")
    args = ["convert", "-f", "qcow2", "-O", "raw"]
    if snapshot:
        args += ["-l", f"snapshot.name={snapshot}"]
    cmds.run(reader, "img", *args, path, raw)
    found: dict[int, int | None] = {}
    try:
        with open(raw, "rb") as fh:
            for off in mx.REGIONS:
                if off >= size:
                    continue
                fh.seek(off)
                chunk = fh.read(mx.CHUNK)
                found[off] = chunk[0] if chunk and chunk.count(chunk[0]) == len(chunk) else None
    finally:
        raw.unlink(missing_ok=True)
    return found


def _diff(what: str, found: dict[int, int | None], want: dict[int, int], size: int) -> list[str]:
    out = []
    for off in mx.REGIONS:
        if off >= size:
            continue
        got, exp = found.get(off), want.get(off, 0)
        if got != exp:
            shown = "mixed bytes" if got is None else f"{got:#04x}"
            out.append(f"{what} @{off // mx.MiB}M reads {shown}, expected {exp:#04x}")
    return out


def classify_current(
    image: qcow2.Image, design: mx.Design, identity: Identity, truth: str | None
) -> mx.Current:
    """What a reader of ``design`` concludes about the current snapshot, against the truth
    (the model's current snapshot after the op)."""
    exts = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)
    if design is mx.Design.RECORD32:
        view = image.current_record()
        st = view.state
        if st is qcow2.RecordState.ABSENT:
            return mx.Current.ABSENT
        if st is qcow2.RecordState.MALFORMED:
            return mx.Current.MALFORMED
        if st in (qcow2.RecordState.STALE, qcow2.RecordState.UNKNOWN):
            return mx.Current.STALE
        named = view.uuid  # None for a nil record
    elif design is mx.Design.AUTOCLEAR16:
        if not image.autoclear & mx.AUTOCLEAR16_BIT:
            return mx.Current.STALE if exts else mx.Current.ABSENT
        if len(exts) != 1 or len(exts[0].data) != qcow2.UUID_LEN:
            return mx.Current.MALFORMED
        named = uuidlib.UUID(bytes=exts[0].data)
        if named not in {sn.uuid for sn in image.snapshots}:
            return mx.Current.STALE
    else:
        return mx.Current.ABSENT if not exts else mx.Current.MALFORMED
    want = identity[truth][0] if truth in identity else None
    return mx.Current.RIGHT if named == want else mx.Current.WRONG


@dataclass
class Outcome:
    """What is left after a peer's op: the snapshots our reader lists, what was lost (data,
    snapshots, UUIDs), what check says, and the current snapshot."""

    snapshots: list[str]
    lost: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    current: mx.Current | None = None
    notes: list[str] = field(default_factory=list)

    def problems(self, allowed: frozenset[mx.Current]) -> list[str]:
        bad = list(self.lost) + list(self.checks)
        if self.current is not None and self.current not in allowed:
            want = "/".join(sorted(c.value for c in allowed))
            bad.append(f"current snapshot: {self.current.value}, expected {want}")
        return bad


def check_clean(cmds: Commands, t: Tools, path: Path, who: str) -> list[str]:
    proc = cmds.run(t, "img", "check", "-f", "qcow2", path, rcs=None)
    if proc.returncode == 0:
        return []
    first = (proc.stdout + proc.stderr).strip().splitlines()[:3]
    return [f"{who} check: exit {proc.returncode}: {' / '.join(first)}"]


def survey(
    cmds: Commands,
    writer: Tools,
    peer: Tools,
    path: Path,
    base: Base,
    want: mx.State,
) -> Outcome:
    """Compare the image at ``path`` with the model state ``want``."""
    image = qcow2.read(path)
    names = [sn.name for sn in image.snapshots]
    out = Outcome(names)
    gone = [n for n in want.snapshots if n not in names]
    if gone:
        out.lost.append(f"{len(gone)} of {len(want.snapshots)} snapshots gone: {', '.join(gone)}")
    extra = sorted(set(names) - set(want.snapshots))
    if extra or len(names) != len(set(names)):
        out.lost.append(f"unexpected snapshot table: {names}")
    for sn in image.snapshots:
        if sn.name in base.identity and (sn.uuid, sn.parent) != base.identity[sn.name]:
            u, p = base.identity[sn.name]
            out.lost.append(f"{sn.name}: UUID/parent {sn.uuid}/{sn.parent}, was {u}/{p}")
    if image.size != want.size:
        out.lost.append(f"virtual size {image.size}, expected {want.size}")
    for name in want.snapshots:
        if name in names:
            size = want.sizes[name]
            found = regions(cmds, writer, path, name, size)
            out.lost += _diff(f"snapshot {name}", found, want.snapshots[name], size)
    out.lost += _diff(
        "active layer", regions(cmds, writer, path, None, want.size), want.active, want.size
    )
    out.checks += check_clean(cmds, writer, path, f"writer {writer.name}")
    out.checks += check_clean(cmds, peer, path, f"peer {peer.name}")
    out.current = classify_current(image, base.design, base.identity, want.current)
    return out


def survey_copy(cmds: Commands, writer: Tools, path: Path, want: mx.State) -> list[str]:
    """A new image an op wrote (convert): the active data, no snapshots, no record, clean."""
    image = qcow2.read(path)
    bad = []
    if image.snapshots:
        bad.append(f"{path.name}: has snapshots {[s.name for s in image.snapshots]}")
    if image.extension(qcow2.EXT_CURRENT_SNAPSHOT):
        bad.append(f"{path.name}: carries a current-snapshot extension without snapshots")
    bad += _diff(path.name, regions(cmds, writer, path, None, want.size), want.active, want.size)
    bad += check_clean(cmds, writer, path, f"writer {writer.name} ({path.name})")
    return bad


def keep_copy(src: Path, dest_dir: Path) -> None:
    """The images of a workspace, copied to the test directory (conftest's test_dir removes
    them again when the test passed)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dest_dir / f.name)

"""Issue 11: every deployed QEMU (the peers) on an image the series wrote.

For each peer x op of rig/peers/matrix.py: the writer's template image (snapshots s1..s4
with UUIDs and parents, the current snapshot, data patterns in every snapshot and in the
active layer) is copied into the peer's chroot, the peer runs the op, and then
- every snapshot is still listed by the independent reader, with the same UUID and parent;
- every data pattern reads back (the writer's qemu-img convert, per snapshot and active);
- the writer's and the peer's `qemu-img check` are clean;
- the current snapshot is what matrix.expected_current() says: right, or detected stale
  where the peer rewrote the table (or, documented, wrong where nothing can tell).
Known upstream data loss is a strict xfail (matrix.known_loss) naming the fix.
"""

from __future__ import annotations

import shutil
import time

import pytest

from rig import qcow2
from rig.peers import cells
from rig.peers import image as im
from rig.peers import matrix as mx
from rig.peers.tools import CommandError


def run_op(cmds, peer, ws, path, op: mx.Op) -> None:
    for step in op.steps:
        if isinstance(step, mx.Vm):
            cmds.vm(peer, path, step.hmp)
            continue
        args = [a.format(img=peer.arg(path), ws=peer.arg(ws.host)) for a in step.args]
        cmds.run(peer, "img" if isinstance(step, mx.Img) else "io", *args)


@pytest.mark.parametrize("op", mx.OPS, ids=[op.name for op in mx.OPS])
def test_peer_op(writer, peer, op, base, cmds, workspace, results_dir, request):
    """The peer's op keeps every snapshot, UUID, parent and byte of the writer's image."""
    if not mx.applies(op, peer.version_tuple):
        pytest.skip(f"{peer.label} has no `{op.doc}` (QEMU {'.'.join(map(str, op.since))}+)")
    reason = mx.known_loss(op, peer.version_tuple, base.design)
    if reason:
        request.node.add_marker(
            pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
        )
    allowed = mx.expected_current(op, base.design)
    want = mx.after(op)
    cell = {
        "kind": "matrix",
        "writer": writer.id,
        "writer_version": writer.tools.version,
        "design": base.design.value,
        "identity": base.describe(),
        "peer": peer.name,
        "peer_version": peer.version,
        "op": op.name,
        "doc": op.doc,
        "known_loss": reason,
        "allowed_current": sorted(c.value for c in allowed),
    }
    t0 = time.monotonic()
    with workspace(f"{writer.id}-{op.name}") as ws:
        path = ws.host / "img.qcow2"
        shutil.copyfile(base.path, path)
        try:
            im.prepare(cmds, writer.tools, path, op.prep)
            before = im.sha256(path)
            cmds.note(f"{peer.label}: {op.doc}")
            run_op(cmds, peer, ws, path, op)
            out = im.survey(cmds, writer.tools, peer, path, base, want)
            if op.output:
                if im.sha256(path) != before:
                    out.lost.append("the source image changed (convert must only read it)")
                out.lost += im.survey_copy(cmds, writer.tools, ws.host / op.output, want)
        except CommandError as exc:
            cell.update(status="error", problems=[str(exc).splitlines()[0]])
            cells.record(results_dir, {**cell, "seconds": round(time.monotonic() - t0, 2)})
            raise
        problems = out.problems(allowed)
        status = "lost" if out.lost else "check" if out.checks else "current" if problems else "ok"
        cell.update(
            status=status,
            problems=problems,
            current=out.current.value if out.current else None,
            snapshots=out.snapshots,
            seconds=round(time.monotonic() - t0, 2),
        )
        cells.record(results_dir, cell)
        assert not problems, f"{peer.label} `{op.doc}` on {base.describe()}:\n" + "\n".join(
            problems
        )


# -- the writer's side: what only the series can do --------------------------------------------


@pytest.mark.series
def test_writer_records_identity(writer, base):
    """The patched build wrote the model's lineage and the redesigned 32-byte record
    naming s4 (no autoclear bit), and its own check is clean."""
    image = qcow2.read(base.path)
    assert not base.synthetic, "the writer has no series: identity was injected"
    assert base.design is mx.Design.RECORD32, f"current snapshot layout {base.design.value}"
    assert not image.autoclear & mx.AUTOCLEAR16_BIT, "autoclear bit 2 is set"
    ids = base.identity
    assert sorted(ids) == sorted(mx.BASE_STATE.parents), f"UUIDs on {sorted(ids)}"
    for name, parent in mx.BASE_STATE.parents.items():
        assert ids[name][0].version == 4
        assert ids[name][1] == (ids[parent][0] if parent else None), f"{name}'s parent"
    view = image.current_record()
    assert view.state is qcow2.RecordState.VALID and view.uuid == ids["s4"][0], view
    assert view.record.reserved == bytes(4)


@pytest.mark.series
@pytest.mark.parametrize("prep", list(mx.TRIGGERS), ids=[p.value for p in mx.TRIGGERS])
def test_writer_check_keeps_snapshots(writer, base, prep, cmds, test_dir):
    """The upstream check-mode bug, fixed by the series: the writer's own `check -r leaks`
    on an image with a bitmap (or an unknown autoclear bit) keeps the snapshot table."""
    path = test_dir / "images" / "img.qcow2"  # removed when the test passes
    path.parent.mkdir()
    shutil.copyfile(base.path, path)
    im.prepare(cmds, writer.tools, path, prep)
    cmds.run(writer.tools, "img", "check", "-r", "leaks", path)
    names = [sn.name for sn in qcow2.read(path).snapshots]
    assert names == list(mx.BASE_STATE.snapshots), (
        f"{writer.tools.label} `check -r leaks` ({prep.value}) left snapshots {names}: "
        f"needs '{mx.UPSTREAM_FIX}'"
    )
    for name, want in mx.BASE_STATE.snapshots.items():
        found = im.regions(cmds, writer.tools, path, name, mx.SIZE)
        assert not im._diff(name, found, want, mx.SIZE)


@pytest.mark.series
def test_writer_after_a_stale_record(writer, peer, base, cmds, workspace):
    """After a peer moved the table (snapshot -c p1), the patched build detects the stale
    record: its check says so (exit 0: no data at risk), and its next snapshot is a root
    instead of a child of the stale s4; the record then names the new snapshot."""
    with workspace(f"{writer.id}-stale") as ws:
        path = ws.host / "img.qcow2"
        shutil.copyfile(base.path, path)
        cmds.run(peer, "img", "snapshot", "-c", "p1", path)
        assert qcow2.read(path).current_record().state is qcow2.RecordState.STALE
        out = cmds.run(writer.tools, "img", "check", path)
        assert "stale" in (out.stdout + out.stderr).lower(), "check does not report it"
        cmds.run(writer.tools, "img", "snapshot", "-c", "w1", path)
        image = qcow2.read(path)
        w1 = image.by_name("w1")
        assert w1.uuid is not None and w1.parent is None, f"w1's parent {w1.parent}"
        assert image.current_record().uuid == w1.uuid

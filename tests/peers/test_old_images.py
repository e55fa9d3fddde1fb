"""Issue 11, the other direction: images each peer wrote with its own snapshots (qemu-img
snapshot -c, and savevm with VM state) open and work in the writer (the patched build): listed,
check clean, applied, savevm/loadvm over them; and the peer still reads them afterwards."""

from __future__ import annotations

import time

import pytest

from rig import qcow2
from rig.peers import cells
from rig.peers import image as im
from rig.peers import matrix as mx
from rig.peers.tools import CommandError

MiB = mx.MiB
# The peer's image: two qemu-img snapshots, then a VM snapshot (savevm oldvm), then more data.
OLD = (
    mx.Write(0, 0x11), mx.Write(1 * MiB, 0xA1), mx.Snap("old1"),
    mx.Write(0, 0x22), mx.Write(2 * MiB, 0xA2), mx.Snap("old2"),
    mx.Write(0, 0x33), mx.Write(3 * MiB, 0xA3),
)  # fmt: skip
AFTER_VM = (mx.Write(4 * MiB, 0xA4),)


def make_old(cmds, peer, path) -> mx.State:
    """The peer makes the image; returns the model of it."""
    cmds.run(peer, "img", "create", "-q", "-f", "qcow2", path, str(mx.SIZE))
    im.apply_steps(cmds, peer, path, OLD)
    cmds.vm(peer, path, ["savevm oldvm"])
    im.apply_steps(cmds, peer, path, AFTER_VM)
    return mx.simulate(OLD + (mx.Snap("oldvm"),) + AFTER_VM)


def data_problems(cmds, reader, path, state: mx.State) -> list[str]:
    bad = []
    for name, want in state.snapshots.items():
        bad += im._diff(name, im.regions(cmds, reader, path, name, mx.SIZE), want, mx.SIZE)
    active = im.regions(cmds, reader, path, None, mx.SIZE)
    return bad + im._diff("active layer", active, state.active, mx.SIZE)


def test_old_image_works_in_the_writer(writer, peer, cmds, workspace, results_dir):
    """The writer lists, checks, reads and applies the peer's snapshots, saves and loads its
    own VM snapshot over them, rewrites nothing of the old entries; the peer afterwards
    still lists, checks and applies everything, and loads its own VM state."""
    w = writer.tools
    cell = {"kind": "old-image", "writer": writer.id, "writer_version": w.version,
            "peer": peer.name, "peer_version": peer.version, "op": "new-reads",
            "doc": "the writer on an image the peer wrote"}  # fmt: skip
    t0 = time.monotonic()
    problems: list[str] = []

    def record(status: str, extra: tuple[str, ...] = ()) -> None:
        cell.update(status=status, problems=problems + list(extra))
        cells.record(results_dir, {**cell, "seconds": round(time.monotonic() - t0, 2)})

    try:
        with workspace(f"{writer.id}-old") as ws:
            path = ws.host / "old.qcow2"
            state = make_old(cmds, peer, path)
            before = qcow2.read(path)
            if [s.name for s in before.snapshots] != ["old1", "old2", "oldvm"]:
                problems.append(f"the peer made snapshots {before.snapshots}")
            if any(s.uuid is not None for s in before.snapshots):
                problems.append("the peer wrote UUIDs")
            if not before.by_name("oldvm").vm_state_size:
                problems.append("the peer's savevm stored no VM state")

            listing = cmds.run(w, "img", "snapshot", "-l", path).stdout
            problems += [f"writer -l misses {n}" for n in state.snapshots if n not in listing]
            cmds.run(w, "img", "info", "--output=json", path)
            problems += im.check_clean(cmds, w, path, f"writer {w.name}")
            problems += data_problems(cmds, w, path, state)

            cmds.run(w, "img", "snapshot", "-a", "old1", path)
            state = mx.simulate((mx.Apply("old1"),), state)
            if w.system is not None:
                cmds.vm(w, path, ["savevm w1", "loadvm w1"])
                state = mx.simulate((mx.Snap("w1"), mx.Apply("w1")), state)
            else:
                cmds.note(f"{w.label} has no qemu-system-x86_64: savevm/loadvm not run")
                cell["notes"] = ["writer has no qemu-system-x86_64: no savevm/loadvm"]
            problems += data_problems(cmds, w, path, state)
            problems += im.check_clean(cmds, w, path, f"writer {w.name}")
            after = qcow2.read(path)
            for old in before.snapshots:
                if after.by_name(old.name).extra != old.extra:
                    problems.append(f"the writer rewrote {old.name}'s extra data")

            listing = cmds.run(peer, "img", "snapshot", "-l", path).stdout
            problems += [f"peer -l misses {n}" for n in state.snapshots if n not in listing]
            problems += im.check_clean(cmds, peer, path, f"peer {peer.name}")
            cmds.run(peer, "img", "snapshot", "-a", "old2", path)
            state = mx.simulate((mx.Apply("old2"),), state)
            problems += data_problems(cmds, w, path, state)
            cmds.vm(peer, path, ["loadvm oldvm"])
            state = mx.simulate((mx.Apply("oldvm"),), state)
            problems += data_problems(cmds, w, path, state)
            record("ok" if not problems else "lost")
            assert not problems, "\n".join(problems)
    except CommandError as exc:
        record("error", (str(exc).splitlines()[0],))
        raise


@pytest.mark.series
def test_old_image_gets_identity(writer, peer, cmds, workspace):
    """The writer's first snapshot on the peer's image: a v4 UUID, a root (the peer's
    snapshots have none), named by a valid 32-byte record; the old entries keep their bytes
    and both checks stay clean."""
    w = writer.tools
    with workspace(f"{writer.id}-old-id") as ws:
        path = ws.host / "old.qcow2"
        cmds.run(peer, "img", "create", "-q", "-f", "qcow2", path, str(mx.SIZE))
        im.apply_steps(cmds, peer, path, OLD)
        old = qcow2.read(path)
        cmds.run(w, "img", "snapshot", "-c", "w1", path)
        image = qcow2.read(path)
        w1 = image.by_name("w1")
        assert w1.uuid is not None and w1.uuid.version == 4, "w1 has no UUID"
        assert w1.parent is None, "the first snapshot with a UUID is a root"
        view = image.current_record()
        assert view.state is qcow2.RecordState.VALID and view.uuid == w1.uuid, view
        for sn in old.snapshots:
            assert image.by_name(sn.name).extra == sn.extra
        assert not im.check_clean(cmds, w, path, "writer")
        assert not im.check_clean(cmds, peer, path, "peer")

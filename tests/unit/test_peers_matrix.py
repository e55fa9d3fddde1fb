"""The peer matrix's expectations (rig/peers/matrix.py) and its reading of the current
snapshot (the 32-byte record of rig/qcow2.py), on images built byte by byte here:
no QEMU."""

from __future__ import annotations

import struct
import uuid as uuidlib
from pathlib import Path

import pytest

from rig import qcow2
from rig.peers import image as im
from rig.peers import matrix as mx

C = mx.Current
MiB = mx.MiB

# -- the model -----------------------------------------------------------------------------------


def test_base_model_is_a_tree_with_data_everywhere():
    st = mx.BASE_STATE
    assert st.parents == {"s1": None, "s2": "s1", "s3": "s2", "s4": "s2"}
    assert st.current == "s4"
    assert st.snapshots["s1"] == {0: 0x11, MiB: 0xA1, **dict.fromkeys(mx.REGIONS[2:], 0)}
    assert st.snapshots["s2"][6 * MiB] == 0xB6 and st.snapshots["s3"][6 * MiB] == 0
    assert st.snapshots["s4"][3 * MiB] == 0, "s4 descends from s2, not s3"
    assert st.active[0] == 0x55 and st.active[5 * MiB] == 0xA5 and st.active[4 * MiB] == 0xA4


def test_effects_of_ops_on_the_model():
    ops = mx.OPS_BY_NAME
    assert mx.after(ops["snapshot-apply"]).active == mx.BASE_STATE.snapshots["s1"]
    assert mx.after(ops["snapshot-apply"]).current == "s1"
    assert "s3" not in mx.after(ops["snapshot-delete"]).snapshots
    created = mx.after(ops["snapshot-create"])
    assert created.current == "p1" and created.parents["p1"] == "s4"
    assert mx.after(ops["vm-save-load-del"]).current == "s4"
    assert mx.after(ops["resize"]).size == 32 * MiB
    assert mx.after(ops["resize"]).sizes["s1"] == 16 * MiB
    assert mx.after(ops["commit"]).active[7 * MiB] == 0xC7
    deleted = mx.simulate((mx.Delete("s4"),), mx.BASE_STATE)
    assert deleted.current == "s2", "deleting the current snapshot makes its parent current"


def test_ops_are_well_formed():
    assert len(mx.OPS_BY_NAME) == len(mx.OPS)
    for op in mx.OPS:
        args = [a for s in op.steps if isinstance(s, mx.Img | mx.Io) for a in s.args]
        hmp = [c for s in op.steps if isinstance(s, mx.Vm) for c in s.hmp]
        assert any("{img}" in a for a in args) or hmp or "{ws}/overlay" in " ".join(args), op
        assert op.prep is mx.Prep.NONE or op.check_repair, f"{op.name}: prep is a check trigger"
    assert [op.name for op in mx.OPS if not op.opens_rw] == ["commit", "convert"]
    assert mx.applies(mx.OPS_BY_NAME["bitmap"], (5, 2, 0))
    assert not mx.applies(mx.OPS_BY_NAME["bitmap"], (5, 0, 0))


# -- the one place for expectations --------------------------------------------------------------

RECORD32 = {
    "check-leaks": {C.RIGHT}, "check-all": {C.RIGHT}, "amend-lazy-refcounts": {C.RIGHT},
    "amend-compat": {C.RIGHT}, "resize": {C.RIGHT}, "rebase-u": {C.RIGHT}, "commit": {C.RIGHT},
    "convert": {C.RIGHT}, "snapshot-create": {C.STALE}, "snapshot-apply": {C.WRONG},
    "snapshot-delete": {C.STALE}, "snapshot-delete-create": {C.WRONG, C.STALE},
    "bitmap": {C.RIGHT}, "vm-savevm": {C.STALE},
    "vm-save-load-del": {C.RIGHT, C.STALE}, "check-leaks+bitmap": {C.RIGHT},
    "check-all+bitmap": {C.RIGHT}, "check-leaks+bitmap-inconsistent": {C.RIGHT},
    "check-leaks+autoclear-unknown": {C.RIGHT},
}  # fmt: skip


def test_expected_current_with_the_redesigned_record():
    """The design's promise per op: untouched where the table stays; detected where the
    number of snapshots changed; `snapshot -a` goes undetected (a wrong parent later), and
    so may -d then -c when the new table lands where the old one was."""
    got = {op.name: set(mx.expected_current(op, mx.Design.RECORD32)) for op in mx.OPS}
    assert got == RECORD32


def test_expected_current_with_todays_series_and_without():
    for op in mx.OPS:
        want = {C.STALE} if op.opens_rw else {C.RIGHT}
        assert mx.expected_current(op, mx.Design.AUTOCLEAR16) == want, op.name
        assert mx.expected_current(op, mx.Design.NONE) == {C.ABSENT}


def test_known_loss():
    losing = {op.name for op in mx.OPS if mx.known_loss(op, (11, 1, 3), mx.Design.RECORD32)}
    assert losing == {
        "amend-compat",
        "check-leaks+bitmap",
        "check-all+bitmap",
        "check-leaks+bitmap-inconsistent",
        "check-leaks+autoclear-unknown",
    }
    today = {op.name for op in mx.OPS if mx.known_loss(op, (5, 2, 0), mx.Design.AUTOCLEAR16)}
    assert today == losing | {"check-leaks", "check-all"}
    why = mx.known_loss(mx.OPS_BY_NAME["check-leaks"], (7, 2, 22), mx.Design.AUTOCLEAR16)
    assert "autoclear bit 2" in why and mx.UPSTREAM_FIX in why and "7.2.22" in why
    why = mx.known_loss(mx.OPS_BY_NAME["check-leaks+bitmap"], (5, 2, 0), mx.Design.RECORD32)
    assert "storing bitmap flags" in why and mx.UPSTREAM_FIX in why


def test_a_release_with_the_upstream_fix_loses_nothing(monkeypatch):
    monkeypatch.setattr(mx, "UPSTREAM_FIX_RELEASE", (11, 2))
    op = mx.OPS_BY_NAME["check-all+bitmap"]
    assert mx.known_loss(op, (11, 2, 0), mx.Design.RECORD32) is None
    assert mx.known_loss(op, (11, 1, 3), mx.Design.RECORD32) is not None


# -- reading the current snapshot from bytes ------------------------------------------------------

CLUSTER = 1 << 16
TABLE = 3 * CLUSTER


def _entry(ident: str, name: str, extra: bytes) -> bytes:
    raw = struct.pack(">QIHHIIQII", 0, 0, len(ident), len(name), 0, 0, 0, 0, len(extra))
    raw += extra + ident.encode() + name.encode()
    return raw + b"\0" * (-len(raw) % 8)


def make_image(path: Path, names=("s1", "s2", "s3", "s4"), exts=(), autoclear=0) -> Path:
    """A v3 header, extensions, a snapshot table (24-byte extra data, as QEMU writes it)."""
    hdr = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb",
        3,
        0,
        0,
        16,
        16 * MiB,
        0,
        0,
        0,
        CLUSTER,
        1,
        len(names),
        TABLE,
        0,
        0,
        autoclear,
        4,
        104,
    )
    area = b"".join(struct.pack(">II", m, len(d)) + d + b"\0" * (-len(d) % 8) for m, d in exts)
    data = bytearray(4 * CLUSTER)
    data[: len(hdr) + len(area) + 8] = hdr + area + bytes(8)
    table = b"".join(_entry(str(i), n, bytes(24)) for i, n in enumerate(names, 1))
    data[TABLE : TABLE + len(table)] = table
    path.write_bytes(bytes(data))
    return path


def test_record_states(tmp_path):
    path = make_image(tmp_path / "a.qcow2")
    image = qcow2.read(path)
    assert image.current_record().state is qcow2.RecordState.ABSENT
    identity = im.inject_identity(path, mx.Design.RECORD32)
    image = qcow2.read(path)
    assert [sn.extra_data_size for sn in image.snapshots] == [56] * 4
    assert im.identity_on_disk(image) == identity
    view = image.current_record()
    assert view.state is qcow2.RecordState.VALID and view.uuid == identity["s4"][0]
    assert view.record == qcow2.CurrentRecord(identity["s4"][0], TABLE, 4)
    assert im.detect_design(image) is mx.Design.RECORD32
    assert not image.autoclear, "the redesign sets no autoclear bit"
    ext = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)[0]
    assert ext.data == identity["s4"][0].bytes + struct.pack(">QI", TABLE, 4) + bytes(4)

    qcow2.set_nb_snapshots(path, 3)  # as an older QEMU deleting a snapshot would leave it
    assert qcow2.read(path).current_record().state is qcow2.RecordState.STALE
    qcow2.set_nb_snapshots(path, 4)
    other = qcow2.CurrentRecord(uuidlib.uuid4(), TABLE, 4).pack()
    qcow2.set_extensions(path, qcow2.EXT_CURRENT_SNAPSHOT, [other])
    assert qcow2.read(path).current_record().state is qcow2.RecordState.UNKNOWN
    qcow2.set_current_record(path, None)
    assert qcow2.read(path).current_record().state is qcow2.RecordState.NONE
    for bad in ([bytes(16)], [other, other], [other + bytes(8)]):
        qcow2.set_extensions(path, qcow2.EXT_CURRENT_SNAPSHOT, bad)
        assert qcow2.read(path).current_record().state is qcow2.RecordState.MALFORMED


def test_image_current_follows_the_record(tmp_path):
    """Image.current is the UUID of a valid 32-byte record and nothing else; the crafting
    helpers put the record first, as QEMU does, and can make it stale."""
    path = make_image(tmp_path / "a.qcow2", exts=[(0x6803F857, b"feature names")])
    ids = im.inject_identity(path, mx.Design.RECORD32)
    image = qcow2.read(path)
    assert image.current == ids["s4"][0]
    assert [e.magic for e in image.extensions] == [qcow2.EXT_CURRENT_SNAPSHOT, 0x6803F857]
    assert image.record_extension() is image.extensions[0]
    rec = qcow2.set_current_record(path, ids["s1"][0], snapshots_offset=TABLE + CLUSTER)
    assert rec == qcow2.CurrentRecord(ids["s1"][0], TABLE + CLUSTER, 4)
    image = qcow2.read(path)
    assert image.current is None and image.current_record().record == rec
    assert [e.data for e in image.extension(0x6803F857)] == [b"feature names"]
    qcow2.set_current_record(path, ids["s1"][0], nb_snapshots=5)
    assert qcow2.read(path).current is None
    qcow2.set_current_record(path, ids["s1"][0], reserved=b"\xff" * 4)
    assert qcow2.read(path).current == ids["s1"][0], "reserved bytes are not judged"
    qcow2.set_current_record(path, None)
    assert qcow2.read(path).current is None
    # the first design (16 bytes, autoclear bit 2) names no current snapshot for this reader
    qcow2.set_current_records(path, [ids["s4"][0].bytes])
    qcow2.set_autoclear(path, mx.AUTOCLEAR16_BIT)
    image = qcow2.read(path)
    assert image.current is None and image.record_extension() is not None
    qcow2.set_current_records(path, [])
    assert qcow2.read(path).current_record().state is qcow2.RecordState.ABSENT


def test_classify_current_against_the_truth(tmp_path):
    path = make_image(tmp_path / "a.qcow2")
    ids = im.inject_identity(path, mx.Design.RECORD32)
    image = qcow2.read(path)
    assert im.classify_current(image, mx.Design.RECORD32, ids, "s4") is C.RIGHT
    assert im.classify_current(image, mx.Design.RECORD32, ids, "s1") is C.WRONG
    assert im.classify_current(image, mx.Design.RECORD32, ids, "p1") is C.WRONG
    qcow2.set_nb_snapshots(path, 5)
    assert im.classify_current(qcow2.read(path), mx.Design.RECORD32, ids, "p1") is C.STALE


def test_classify_todays_autoclear_layout(tmp_path):
    path = make_image(tmp_path / "a.qcow2")
    ids = im.inject_identity(path, mx.Design.AUTOCLEAR16)
    image = qcow2.read(path)
    assert image.autoclear == mx.AUTOCLEAR16_BIT
    exts = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)
    assert [e.data for e in exts] == [ids["s4"][0].bytes], "the 16-byte layout names s4"
    assert image.current_record().state is qcow2.RecordState.MALFORMED, (
        "a reader of the 32-byte record ignores the 16-byte layout")
    assert im.detect_design(image) is mx.Design.AUTOCLEAR16
    assert im.classify_current(image, mx.Design.AUTOCLEAR16, ids, "s4") is C.RIGHT
    qcow2.set_autoclear(path, 0)  # what every older QEMU does when it opens it read-write
    assert im.classify_current(qcow2.read(path), mx.Design.AUTOCLEAR16, ids, "s4") is C.STALE
    plain = make_image(tmp_path / "b.qcow2")
    assert im.detect_design(qcow2.read(plain)) is mx.Design.NONE
    assert im.classify_current(qcow2.read(plain), mx.Design.NONE, {}, None) is C.ABSENT


def test_with_identity_keeps_foreign_extra_data():
    raw = struct.pack(">QIHHIIQII", 0, 0, 1, 1, 0, 0, 0, 0, 70)
    sn = qcow2.Snapshot(0, "1", "s", 0, 70, bytes(range(70)), raw)
    u, p = uuidlib.uuid4(), uuidlib.uuid4()
    out = qcow2.with_identity(sn, u, p)
    assert out.extra_data_size == 70 and out.uuid == u and out.parent == p
    assert out.extra[:24] == bytes(range(24)) and out.extra[56:] == bytes(range(56, 70))


@pytest.mark.parametrize("prep", list(mx.Prep))
def test_every_prep_is_a_check_trigger_or_none(prep):
    users = [op for op in mx.OPS if op.prep is prep]
    assert users, f"{prep} is used by no op"
    assert prep is mx.Prep.NONE or prep in mx.TRIGGERS

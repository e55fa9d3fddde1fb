"""Series part 1 (issue 4): qcow2 snapshot identity, checked on the bytes on disk.

qemu-img (-c/-a/-d/-l, info --output=json, check) and a running guest (query-block,
query-named-block-nodes after savevm / snapshot-save) are compared with what
rig/qcow2.py reads from the image file: SPEC.md §1 (extra data 24-39 = UUID,
40-55 = parent; the current snapshot record, header extension 0x43534e50 of 32 bytes
{UUID, snapshots_offset, nb_snapshots, reserved} without a feature bit, valid only while its
copy of the table pointer matches the header), §2 (`uuid` / `parent-uuid` in SnapshotInfo),
§3 (qemu-img: tags are tags, -a/-d take a UUID only when no ID or name matches; check
reports lineage problems as warnings, not corruption).

Compatibility with real peers: Debian's qemu-img 7.2 (/usr/bin/qemu-img, package qemu-utils)
and the stock build make images the patched build must open, and modify images made by the
patched build: creating or deleting a snapshot there makes the record stale (detected, the
next snapshot is a root), applying one cannot be detected (the next snapshot gets the old
current snapshot as parent: a wrong parent, nothing else).

The helpers (Tools, run, the assertions on the bytes on disk) are in rig/qimg.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rig import qcow2
from rig.machine import DISK_NODE
from rig.qimg import (
    STALE,
    UUID_RE,
    Tools,
    assert_current,
    assert_info_matches_disk,
    assert_listing_matches_disk,
    assert_no_record,
    block_snaps,
    check,
    create,
    debian_tools,
    extras,
    has_pattern,
    img,
    info,
    info_snaps,
    is_v4,
    lineage_image,
    listing,
    notes,
    qmp_session,
    run,
    snapshot_data,
    without_parent,
    write_pattern,
)
from rig.snapshots import node_snapshots


@pytest.fixture
def tools(build) -> Tools:
    return Tools.of(build)


# -- qemu-img --------------------------------------------------------------------------


@pytest.mark.series("snapshot-uuid")
def test_create_records_uuid_parent_and_current(tools, test_dir):
    """-c s1, -c s2: v4 UUIDs on disk, distinct; s2's parent is s1; the record (32 bytes, the
    first extension, no feature bit) names s2 for the table the header points at, updated in
    place; -l, info --output=json show those bytes; check is clean."""
    path = create(tools, test_dir / "a.qcow2")
    assert_no_record(qcow2.read(path))
    img(tools, "snapshot", "-c", "s1", path)
    one = qcow2.read(path)
    s1 = one.by_name("s1")
    assert is_v4(s1.uuid), f"s1 has no v4 UUID on disk: {s1.extra.hex()}"
    assert s1.parent is None, "the first snapshot of an image is a root"
    assert_current(one, s1.uuid)

    img(tools, "snapshot", "-c", "s2", path)
    image = qcow2.read(path)
    s1b, s2 = image.by_name("s1"), image.by_name("s2")
    assert s1b.extra == s1.extra, "an existing entry's extra data was rewritten"
    assert is_v4(s2.uuid) and s2.uuid != s1.uuid
    assert s2.parent == s1.uuid
    assert s2.extra_data_size >= 56
    assert_current(image, s2.uuid)
    assert image.record_extension().offset == one.record_extension().offset, "record moved"

    assert_info_matches_disk(info_snaps(tools, path), image)
    assert_listing_matches_disk(listing(tools, path), image)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
def test_apply_then_create_branches_from_applied(tools, test_dir):
    """-a s1 makes s1 current (bytes) and restores its data; -c s3 then records s1 as
    parent, not s2."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    u1, u2 = image.by_name("s1").uuid, image.by_name("s2").uuid
    assert is_v4(u1) and is_v4(u2)
    img(tools, "snapshot", "-a", "s1", path)
    assert has_pattern(tools, path, 0x11)
    applied = qcow2.read(path)
    assert_current(applied, u1)
    assert extras(applied) == extras(image), "applying a snapshot rewrote the table"

    img(tools, "snapshot", "-c", "s3", path)
    image = qcow2.read(path)
    s3 = image.by_name("s3")
    assert is_v4(s3.uuid) and s3.uuid not in (u1, u2)
    assert s3.parent == u1, "a snapshot taken after applying s1 descends from s1"
    assert image.by_name("s2").parent == u1 and image.by_name("s2").uuid == u2
    assert_current(image, s3.uuid)
    assert_info_matches_disk(info_snaps(tools, path), image)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
def test_apply_and_delete_by_uuid(tools, test_dir):
    """-a and -d take a UUID when no snapshot has that ID or name (SPEC §3); convert -l,
    which takes an ID or a name, does not (tags are tags). Deleting by UUID reparents."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path)
    u1, u2, u3 = (image.by_name(n).uuid for n in ("s1", "s2", "s3"))
    assert is_v4(u1) and is_v4(u2) and is_v4(u3)

    assert snapshot_data(tools, path, "s3", test_dir) == bytes([0x33]) * 65536
    out = test_dir / "by-uuid.raw"
    proc = img(tools, "convert", "-f", "qcow2", "-O", "raw", "-l", str(u3), path, out, rcs=(1,))
    assert "snapshot" in proc.stderr.lower(), proc.stderr

    img(tools, "snapshot", "-a", str(u1), path)
    assert has_pattern(tools, path, 0x11), "-a <uuid of s1> did not restore s1's data"
    before = qcow2.read(path)
    assert_current(before, u1)

    img(tools, "snapshot", "-d", str(u2), path)  # an inner node, not the current one
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s1", "s3"]
    s3 = image.by_name("s3")
    assert s3.uuid == u3 and s3.parent == u1, "s2's child becomes a child of s2's parent"
    assert without_parent(s3.extra) == without_parent(before.by_name("s3").extra)
    assert image.by_name("s1").extra == before.by_name("s1").extra
    assert_current(image, u1)
    assert_info_matches_disk(info_snaps(tools, path), image)
    assert notes(check(tools, path)) == []

    for op in ("-a", "-d"):  # no snapshot has that UUID any more
        proc = img(tools, "snapshot", op, str(u2), path, rcs=(1,))
        assert str(u2) in proc.stderr, proc.stderr
    assert qcow2.read(path) == image


@pytest.mark.series("snapshot-uuid")
def test_tag_equal_to_another_snapshots_uuid_is_a_tag(tools, test_dir):
    """-c with a tag that is s1's UUID creates a new snapshot and leaves s1 alone; -a and -d
    with that string select the snapshot with that tag; once no snapshot has it, -d takes
    it as s1's UUID (SPEC §2-3: a tag is always the tag)."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    u1, u2 = image.by_name("s1").uuid, image.by_name("s2").uuid
    assert is_v4(u1) and is_v4(u2)
    tag = str(u1)

    write_pattern(tools, path, 0x99)
    img(tools, "snapshot", "-c", tag, path)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s1", "s2", tag], "a snapshot was replaced"
    tagged = image.by_name(tag)
    assert is_v4(tagged.uuid) and tagged.uuid not in (u1, u2)
    assert tagged.parent == u2
    assert image.by_name("s1").uuid == u1 and image.by_name("s2").uuid == u2
    assert_current(image, tagged.uuid)

    write_pattern(tools, path, 0x55)
    img(tools, "snapshot", "-a", tag, path)
    assert has_pattern(tools, path, 0x99), "-a <tag> applied another snapshot than the tagged"
    assert_current(qcow2.read(path), tagged.uuid)
    img(tools, "snapshot", "-a", "s1", path)
    img(tools, "snapshot", "-a", tag, path)
    assert has_pattern(tools, path, 0x99)

    img(tools, "snapshot", "-d", tag, path)
    image = qcow2.read(path)
    assert [(sn.name, sn.uuid) for sn in image.snapshots] == [("s1", u1), ("s2", u2)]
    assert_current(image, u2), "the deleted current snapshot's parent is current"

    img(tools, "snapshot", "-d", tag, path)  # now it is s1's UUID
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s2"]
    assert image.by_name("s2").parent is None, "s1 was a root: its child is a root now"
    assert_current(image, u2)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
def test_delete_reparents_children_and_moves_current(tools, test_dir):
    """s1 -> s2 -> {s3, s4 (current)}. Deleting the inner s2 makes s3 and s4 children of s1
    (only their parent fields change); deleting the leaf s3 changes no other entry; deleting
    the current s4 makes its parent s1 current; deleting s1, current and a root, leaves the
    record with the nil UUID (never removed); the next snapshot is a root."""
    path = test_dir / "a.qcow2"
    lineage_image(tools, path, ("s1", "s2", "s3"))
    img(tools, "snapshot", "-a", "s2", path)
    img(tools, "snapshot", "-c", "s4", path)
    image = qcow2.read(path)
    u = {sn.name: sn.uuid for sn in image.snapshots}
    assert all(is_v4(x) for x in u.values())
    parents = {sn.name: sn.parent for sn in image.snapshots}
    assert parents == {"s1": None, "s2": u["s1"], "s3": u["s2"], "s4": u["s2"]}
    assert_current(image, u["s4"])

    before = extras(image)
    img(tools, "snapshot", "-d", "s2", path)
    image = qcow2.read(path)
    assert {sn.name: sn.parent for sn in image.snapshots} == {
        "s1": None, "s3": u["s1"], "s4": u["s1"]}
    assert image.by_name("s1").extra == before["s1"]
    for name in ("s3", "s4"):
        assert without_parent(image.by_name(name).extra) == without_parent(before[name])
    assert_current(image, u["s4"])
    assert notes(check(tools, path)) == []

    before = extras(image)
    img(tools, "snapshot", "-d", "s3", path)
    image = qcow2.read(path)
    assert extras(image) == {n: x for n, x in before.items() if n != "s3"}
    assert_current(image, u["s4"])

    img(tools, "snapshot", "-d", "s4", path)
    image = qcow2.read(path)
    assert extras(image) == {"s1": before["s1"]}
    assert_current(image, u["s1"])

    img(tools, "snapshot", "-d", "s1", path)
    image = qcow2.read(path)
    assert image.snapshots == []
    assert_current(image, None)
    assert notes(check(tools, path)) == []
    img(tools, "snapshot", "-c", "fresh", path)
    image = qcow2.read(path)
    assert is_v4(image.by_name("fresh").uuid) and image.by_name("fresh").parent is None
    assert_current(image, image.by_name("fresh").uuid)


@pytest.mark.series("snapshot-uuid")
def test_version_2_images_have_uuids_and_a_record(tools, test_dir):
    """compat=0.10 images get UUIDs, parents and the record too (no feature bit needed; the
    record follows the 72-byte header); amend to v2 and back keeps all of it."""
    path = test_dir / "v2.qcow2"
    img(tools, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "1M")
    img(tools, "snapshot", "-c", "s1", path)
    img(tools, "snapshot", "-c", "s2", path)
    image = qcow2.read(path)
    s1, s2 = image.snapshots
    assert image.version == 2 and is_v4(s1.uuid) and is_v4(s2.uuid)
    assert s1.parent is None and s2.parent == s1.uuid
    assert_current(image, s2.uuid)
    assert image.record_extension().offset == 72
    img(tools, "snapshot", "-a", "s1", path)
    assert_current(qcow2.read(path), s1.uuid)
    img(tools, "snapshot", "-c", "s3", path)
    img(tools, "snapshot", "-d", "s1", path)
    image = qcow2.read(path)
    assert {sn.name: sn.parent for sn in image.snapshots} == {"s2": None, "s3": None}
    assert_current(image, image.by_name("s3").uuid)
    assert_info_matches_disk(info_snaps(tools, path), image)
    assert notes(check(tools, path)) == []

    path = test_dir / "v3.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    img(tools, "amend", "-f", "qcow2", "-o", "compat=0.10", path)
    v2 = qcow2.read(path)
    assert v2.version == 2
    assert extras(v2) == extras(image)
    assert_current(v2, image.by_name("s2").uuid)
    assert notes(check(tools, path)) == []
    img(tools, "amend", "-f", "qcow2", "-o", "compat=1.1", path)
    v3 = qcow2.read(path)
    assert v3.version == 3 and extras(v3) == extras(image)
    assert_current(v3, image.by_name("s2").uuid)
    img(tools, "snapshot", "-c", "s3", path)
    v3 = qcow2.read(path)
    assert v3.by_name("s3").parent == image.by_name("s2").uuid
    assert_current(v3, v3.by_name("s3").uuid)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
def test_qmp_internal_snapshot_commands(tools, test_dir):
    """blockdev-snapshot-internal-sync records the current snapshot as parent; the
    SnapshotInfo that blockdev-snapshot-delete-internal-sync returns carries the deleted
    entry's UUIDs, and its child becomes a root; query-block follows (qemu-system -M none,
    QMP over stdio)."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1",))
    u1 = image.by_name("s1").uuid
    assert is_v4(u1)
    proc, replies = qmp_session(
        tools,
        path,
        [
            ("blockdev-snapshot-internal-sync", {"device": "d0", "name": "q1"}),
            ("query-block", {}),
            ("blockdev-snapshot-delete-internal-sync", {"device": "d0", "name": "s1"}),
            ("query-block", {}),
        ],
    )
    assert all("return" in r for r in replies), replies
    image = qcow2.read(path)
    q1 = image.by_name("q1")
    assert is_v4(q1.uuid) and q1.parent is None, "s1 was a root: its child q1 is a root now"
    assert_current(image, q1.uuid)
    assert block_snaps(replies[1])["q1"]["parent-uuid"] == str(u1)
    deleted = replies[2]["return"]
    assert deleted["name"] == "s1" and deleted.get("uuid") == str(u1)
    assert "parent-uuid" not in deleted
    assert_info_matches_disk(block_snaps(replies[3]), image)
    assert notes(check(tools, path)) == []


# -- a running guest -------------------------------------------------------------------


def _query_block_snaps(vm) -> dict[str, dict]:
    for dev in vm.qmp.cmd("query-block"):
        ins = dev.get("inserted") or {}
        if ins.get("node-name") == DISK_NODE:
            return {x["name"]: x for x in ins["image"].get("snapshots", [])}
    raise AssertionError(f"{DISK_NODE} missing from query-block")


@pytest.mark.series("snapshot-uuid")
def test_guest_snapshots_carry_the_uuids_on_disk(build, vm, snapshots):
    """savevm / snapshot-save on a running guest: query-block and query-named-block-nodes
    report uuid / parent-uuid equal to the image bytes; the record follows save and load;
    a snapshot saved after loading g1 descends from g1."""
    snapshots.save("g1")
    snapshots.save("g2")
    image = qcow2.read(vm.disk)
    g1, g2 = image.by_name("g1"), image.by_name("g2")
    assert is_v4(g1.uuid) and is_v4(g2.uuid) and g1.uuid != g2.uuid
    assert g1.parent is None and g2.parent == g1.uuid
    assert_current(image, g2.uuid)
    assert_info_matches_disk(_query_block_snaps(vm), image)
    assert_info_matches_disk(node_snapshots(vm), image)

    snapshots.load("g1")
    assert_current(qcow2.read(vm.disk), g1.uuid)
    snapshots.save("g3")
    image = qcow2.read(vm.disk)
    g3 = image.by_name("g3")
    assert is_v4(g3.uuid) and g3.parent == g1.uuid
    assert_current(image, g3.uuid)
    assert_info_matches_disk(_query_block_snaps(vm), image)
    assert_info_matches_disk(node_snapshots(vm), image)
    assert vm.qmp.cmd("query-status")["status"] == "running"


# -- read-only and shared opens ----------------------------------------------------------


def test_readonly_and_shared_opens_write_nothing(tools, test_dir):
    """info, snapshot -l, check (no -r), qemu-io -r, convert -l, compare, each with and
    without -U, and qemu-system with a read-only drive leave the image byte-identical, even
    with a stale record that a writer would repair (any build: the series must not write
    where upstream does not)."""
    path = test_dir / "a.qcow2"
    lineage_image(tools, path, ("s1", "s2"))
    image = qcow2.read(path)
    qcow2.set_current_record(path, image.snapshots[-1].uuid,
                             snapshots_offset=image.snapshots_offset + 0x10000)
    raw = path.read_bytes()
    out = test_dir / "s.raw"
    for shared in ((), ("-U",)):
        img(tools, "info", *shared, path)
        img(tools, "info", "--output=json", *shared, path)
        img(tools, "snapshot", "-l", *shared, path)
        img(tools, "check", *shared, path)
        assert tools.io is not None
        run([tools.io, "-r", *shared, "-c", "read -P 0x22 0 64k", path])
        img(tools, "convert", *shared, "-l", "s1", "-O", "raw", path, out)
        img(tools, "compare", *shared, "-f", "qcow2", "-F", "raw", path, out, rcs=(0, 1))
        assert path.read_bytes() == raw, f"a read-only open ({shared or 'no -U'}) wrote"
    proc, replies = qmp_session(tools, path, [("query-block", {}),
                                              ("query-named-block-nodes", {"flat": True})],
                                drive_opts="readonly=on")
    assert all("return" in r for r in replies), (replies, proc.stderr)
    assert path.read_bytes() == raw, "qemu-system with a read-only drive wrote the image"


# -- compatibility with real peers -----------------------------------------------------


def _peer(name: str, request) -> Tools:
    require = request.getfixturevalue("require")
    if name == "debian-7.2":
        return debian_tools(require)
    return Tools.of(require.build("stock"))


PEERS = ["debian-7.2", "stock"]


@pytest.mark.parametrize("peer_name", PEERS)
def test_image_of_an_older_qemu_opens(tools, peer_name, request, test_dir):
    """An image with snapshots made by a QEMU without the series opens in this build:
    listed without UUIDs, apply by name works, check is clean on both sides, and
    nothing is invented on disk (no UUIDs, no record: the applied snapshot has no UUID)."""
    peer = _peer(peer_name, request)
    io_peer = peer if peer.io else tools
    path = create(peer, test_dir / "old.qcow2")
    for i, name in enumerate(("old1", "old2"), 1):
        write_pattern(io_peer, path, 0x11 * i)
        img(peer, "snapshot", "-c", name, path)
    before = qcow2.read(path)
    assert all(sn.uuid is None for sn in before.snapshots)

    reported = info_snaps(tools, path)
    assert sorted(reported) == ["old1", "old2"]
    assert not any("uuid" in r or "parent-uuid" in r for r in reported.values())
    out = img(tools, "snapshot", "-l", path).stdout
    assert "old1" in out and "old2" in out and not UUID_RE.search(out)
    assert notes(check(tools, path)) == []

    img(tools, "snapshot", "-a", "old1", path)
    assert has_pattern(tools, path, 0x11)
    after = qcow2.read(path)
    assert [(sn.name, sn.extra) for sn in after.snapshots] == [
        (sn.name, sn.extra) for sn in before.snapshots
    ]
    assert_no_record(after)
    check(tools, path)
    check(peer, path)
    img(peer, "snapshot", "-a", "old2", path)
    assert has_pattern(io_peer, path, 0x22)


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_new_snapshot_on_an_older_image(tools, peer_name, request, test_dir):
    """The series' first snapshot on an old image: v4 UUID, a root (no current before),
    becomes current; the old entries keep their bytes; the old peer's check is clean and
    it can still apply the new snapshot by name. Applying the snapshot without UUID leaves
    the record with the nil UUID: the next snapshot is a root."""
    peer = _peer(peer_name, request)
    path = create(peer, test_dir / "old.qcow2")
    img(peer, "snapshot", "-c", "old1", path)
    old = qcow2.read(path).by_name("old1")
    write_pattern(tools, path, 0x77)
    img(tools, "snapshot", "-c", "new", path)
    image = qcow2.read(path)
    new = image.by_name("new")
    assert is_v4(new.uuid) and new.parent is None
    assert image.by_name("old1").extra == old.extra
    assert_current(image, new.uuid)
    assert notes(check(tools, path)) == []
    check(peer, path)
    write_pattern(tools, path, 0x55)
    img(peer, "snapshot", "-a", "new", path)
    assert has_pattern(tools, path, 0x77)
    img(tools, "snapshot", "-a", "old1", path)
    assert_current(qcow2.read(path), None)
    img(tools, "snapshot", "-c", "new2", path)
    image = qcow2.read(path)
    assert image.by_name("new2").parent is None
    assert_current(image, image.by_name("new2").uuid)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_older_qemu_keeps_everything_it_does_not_change(tools, peer_name, request, test_dir):
    """An older qemu-img reading the series' image (info, -l, check, check -r leaks,
    check -r all) writes nothing; amend and resize keep the UUIDs and leave the record
    valid (the table did not move)."""
    peer = _peer(peer_name, request)
    path = test_dir / "new.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    s1, s2 = image.by_name("s1"), image.by_name("s2")
    assert is_v4(s1.uuid) and s2.parent == s1.uuid
    assert_current(image, s2.uuid)

    raw = path.read_bytes()
    info(peer, path)
    img(peer, "snapshot", "-l", path)
    for mode in (False, "leaks", "all"):
        check(peer, path, repair=mode)
        assert path.read_bytes() == raw, f"{peer.name} check -r {mode} changed the image"

    img(peer, "amend", "-f", "qcow2", "-o", "lazy_refcounts=on", path)
    img(peer, "resize", "-f", "qcow2", path, "128M")
    image = qcow2.read(path)
    assert extras(image) == {"s1": s1.extra, "s2": s2.extra}
    assert image.incompatible == 0 and image.compatible == 1, "lazy_refcounts is not set"
    image.compatible = 0  # the one feature bit the peer was asked to set
    assert_current(image, s2.uuid, first=False)
    assert notes(check(tools, path)) == []
    img(tools, "snapshot", "-c", "s3", path)
    image = qcow2.read(path)
    assert image.by_name("s3").parent == s2.uuid
    image.compatible = 0
    assert_current(image, image.by_name("s3").uuid, first=False)
    assert snapshot_data(tools, path, "s1", test_dir) == bytes([0x11]) * 65536
    assert snapshot_data(tools, path, "s2", test_dir) == bytes([0x22]) * 65536


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_older_qemu_creating_a_snapshot_makes_the_record_stale(tools, peer_name, request,
                                                               test_dir):
    """An older qemu-img creates a snapshot: the table moves, the record keeps the old
    pointer and is ignored (stale: a warning of check, exit 0, not corruption); the UUIDs of
    the series' entries survive; the next snapshot of this build is a root, and current."""
    peer = _peer(peer_name, request)
    path = test_dir / "new.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    s1, s2 = image.by_name("s1"), image.by_name("s2")
    assert is_v4(s1.uuid) and s2.parent == s1.uuid
    assert_current(image, s2.uuid)

    img(peer, "snapshot", "-c", "peer", path)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s1", "s2", "peer"]
    assert extras(image)["s1"] == s1.extra and extras(image)["s2"] == s2.extra
    assert image.by_name("peer").uuid is None
    view = image.current_record()
    assert view.state is qcow2.RecordState.STALE and view.record.uuid == s2.uuid, view
    assert image.current is None
    assert_info_matches_disk(info_snaps(tools, path), image)
    assert_listing_matches_disk(listing(tools, path), image)
    raw = path.read_bytes()
    for mode in (False, "leaks"):
        assert notes(check(tools, path, repair=mode)) == [f"Warning: {STALE}"]
        assert path.read_bytes() == raw, f"check -r {mode} changed the image"
    check(peer, path)

    img(tools, "snapshot", "-c", "after", path)
    image = qcow2.read(path)
    after = image.by_name("after")
    assert is_v4(after.uuid)
    assert after.parent is None, (
        f"after {peer.name} created a snapshot the stale record (s2) was trusted")
    assert_current(image, after.uuid)
    assert notes(check(tools, path)) == []
    check(peer, path)
    img(tools, "snapshot", "-a", "s2", path)
    assert has_pattern(tools, path, 0x22)
    assert_current(qcow2.read(path), s2.uuid)


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_older_qemu_deleting_a_snapshot_makes_the_record_stale(tools, peer_name, request,
                                                               test_dir):
    """An older qemu-img deletes s2 of s1 -> s2 -> s3: s3 keeps s2 as its parent (an older
    writer does not reparent; a parent that is not in the table is allowed), the record is
    stale. check warns (exit 0), -r leaks changes nothing, -r all resets the record to nil
    and touches no UUID; the next snapshot is a root."""
    peer = _peer(peer_name, request)
    path = test_dir / "new.qcow2"
    image = lineage_image(tools, path, ("s1", "s2", "s3"))
    u = {sn.name: sn.uuid for sn in image.snapshots}
    assert all(is_v4(x) for x in u.values())
    assert_current(image, u["s3"])
    before = extras(image)

    img(peer, "snapshot", "-d", "s2", path)
    image = qcow2.read(path)
    assert extras(image) == {n: x for n, x in before.items() if n != "s2"}
    assert image.by_name("s3").parent == u["s2"]
    assert image.current_record().state is qcow2.RecordState.STALE
    assert_info_matches_disk(info_snaps(tools, path), image)
    raw = path.read_bytes()
    for mode in (False, "leaks"):
        assert notes(check(tools, path, repair=mode)) == [f"Warning: {STALE}"]
        assert path.read_bytes() == raw, f"check -r {mode} changed the image"
    assert notes(check(tools, path, repair="all")) == [f"Repairing {STALE}"]
    repaired = qcow2.read(path)
    assert extras(repaired) == extras(image), "-r all changed the snapshot table"
    assert_current(repaired, None)
    assert notes(check(tools, path)) == []
    check(peer, path)

    img(tools, "snapshot", "-c", "s4", path)
    image = qcow2.read(path)
    assert image.by_name("s4").parent is None
    assert_current(image, image.by_name("s4").uuid)
    for name, pattern in (("s1", 0x11), ("s3", 0x33)):
        assert snapshot_data(tools, path, name, test_dir) == bytes([pattern]) * 65536


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_older_qemu_applying_a_snapshot_is_undetectable(tools, peer_name, request, test_dir):
    """An older qemu-img applies s1 of s1 -> s2 (current s2): the table does not move, so
    the record still names s2 and stays valid: nothing can tell (check is clean). The next
    snapshot gets s2 as its parent instead of s1 — a wrong parent is the worst outcome
    (SPEC §1): every snapshot keeps its data, the active layer is s1's."""
    peer = _peer(peer_name, request)
    path = test_dir / "new.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    s1, s2 = image.by_name("s1"), image.by_name("s2")
    assert is_v4(s1.uuid) and is_v4(s2.uuid)
    before = extras(image)

    img(peer, "snapshot", "-a", "s1", path)
    assert has_pattern(tools, path, 0x11)
    image = qcow2.read(path)
    assert extras(image) == before
    assert_current(image, s2.uuid)
    assert notes(check(tools, path)) == []

    img(tools, "snapshot", "-c", "s3", path)
    image = qcow2.read(path)
    s3 = image.by_name("s3")
    assert is_v4(s3.uuid) and s3.parent == s2.uuid, "the undetectable case: parent s2"
    assert_current(image, s3.uuid)
    assert notes(check(tools, path)) == []
    for name, pattern in (("s1", 0x11), ("s2", 0x22), ("s3", 0x11)):
        assert snapshot_data(tools, path, name, test_dir) == bytes([pattern]) * 65536


@pytest.mark.series("snapshot-uuid")
def test_check_reports_and_repairs_a_stale_record(tools, test_dir):
    """A stale record (its pointer copy differs from the header's): check and check -r
    leaks warn and write nothing (exit 0); check -r all resets it to the nil UUID for the
    current table and changes nothing else; then check is clean and the next snapshot is a
    root."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    s2 = image.by_name("s2")
    assert is_v4(s2.uuid)
    for stale in ({"snapshots_offset": image.snapshots_offset + 0x10000},
                  {"nb_snapshots": image.nb_snapshots + 1}):
        qcow2.set_current_record(path, s2.uuid, **stale)
        raw = path.read_bytes()
        for mode in (False, "leaks"):
            assert notes(check(tools, path, repair=mode)) == [f"Warning: {STALE}"]
            assert path.read_bytes() == raw
        assert notes(check(tools, path, repair=True)) == [f"Repairing {STALE}"]
        after = qcow2.read(path)
        assert extras(after) == extras(image)
        assert (after.snapshots_offset, after.nb_snapshots) == (
            image.snapshots_offset, image.nb_snapshots)
        assert_current(after, None)
        assert notes(check(tools, path)) == []
    img(tools, "snapshot", "-c", "s3", path)
    image = qcow2.read(path)
    assert image.by_name("s3").parent is None
    assert_current(image, image.by_name("s3").uuid)


# -- a header cluster without room for the record ----------------------------------------

EXT_BYTES = 8 + qcow2.CURRENT_RECORD.size  # the record as written in the header


def _full_header_image(t: Tools, directory: Path) -> tuple[Path, int]:
    """A qcow2 image with 512-byte clusters whose header cluster (header, extensions,
    backing file name) has fewer than 40 bytes free: no room for the current snapshot
    record. Returns the image and the free bytes."""
    base = create(t, directory / "base.qcow2", "1M")
    path = directory / "full.qcow2"
    for depth in range(160, 200):
        name = "a/" * depth + "base.qcow2"
        link = directory / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(base)
        path.unlink(missing_ok=True)
        made = img(
            t,
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            "-b",
            name,
            "-F",
            "qcow2",
            path,
            "1M",
            rcs=None,
        )
        if made.returncode != 0:
            break
        raw = path.read_bytes()[:512]
        backing_off = int.from_bytes(raw[8:16], "big")
        backing_len = int.from_bytes(raw[16:20], "big")
        free = 512 - (backing_off + backing_len)
        if free < EXT_BYTES:
            return path, free
    pytest.fail("could not make a qcow2 header cluster without room for 40 bytes: the test "
                "cannot set up what it tests")


def test_snapshot_on_an_image_without_header_room(build, tools, test_dir):
    """A 512-byte-cluster image whose header cluster is full (long backing file name):
    stock QEMU creates, applies and deletes internal snapshots there. The series must too
    (there is simply no record then; a warning at most), not fail after doing the work."""
    path, free = _full_header_image(tools, test_dir)
    write_pattern(tools, path, 0x11)
    created = img(tools, "snapshot", "-c", "s1", path, rcs=None)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s1"], "snapshot -c left no or many entries"
    assert created.returncode == 0, (
        f"snapshot -c failed ({free} bytes free in the header cluster) but s1 was created: "
        f"{created.stderr.strip()}"
    )
    assert_no_record(image)
    write_pattern(tools, path, 0x22)
    applied = img(tools, "snapshot", "-a", "s1", path, rcs=None)
    assert has_pattern(tools, path, 0x11) == (applied.returncode == 0), (
        f"snapshot -a exit {applied.returncode} but the data says otherwise: "
        f"{applied.stderr.strip()}"
    )
    assert applied.returncode == 0, applied.stderr
    img(tools, "snapshot", "-c", "s2", path)
    img(tools, "snapshot", "-d", "s1", path)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s2"]
    assert_no_record(image)
    assert notes(check(tools, path)) == []


@pytest.mark.series("snapshot-uuid")
def test_header_update_without_room_for_the_record_drops_it(build, tools, test_dir):
    """The record is optional (docs/interop/qcow2.rst): a header update that has room for
    everything but the record (here `rebase -u` to a longer backing file name, 512-byte
    clusters) succeeds and drops the record (no current snapshot then) instead of failing
    an operation that has nothing to do with snapshots; the snapshots and data stay."""
    full, _ = _full_header_image(tools, test_dir)  # makes base.qcow2 and the name to use
    raw = full.read_bytes()[:512]
    off, length = int.from_bytes(raw[8:16], "big"), int.from_bytes(raw[16:20], "big")
    long_name = raw[off:off + length].decode()
    path = test_dir / "img.qcow2"
    img(tools, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "base.qcow2",
        "-F", "qcow2", path, "1M")
    write_pattern(tools, path, 0x11)
    img(tools, "snapshot", "-c", "s1", path)
    before = qcow2.read(path)
    assert is_v4(before.snapshots[0].uuid)
    assert_current(before, before.snapshots[0].uuid)
    rebased = img(tools, "rebase", "-u", "-b", long_name, "-F", "qcow2", path, rcs=None)
    assert rebased.returncode == 0, (
        f"rebase -u failed for want of room for the record: {rebased.stderr.strip()}")
    after = qcow2.read(path)
    assert after.backing_file_offset and \
        path.read_bytes()[after.backing_file_offset:][:length].decode() == long_name
    assert [(sn.name, sn.uuid) for sn in after.snapshots] == [("s1", before.snapshots[0].uuid)]
    assert_no_record(after)
    assert has_pattern(tools, path, 0x11)
    assert notes(check(tools, path)) == []

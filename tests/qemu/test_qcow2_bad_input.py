"""Series part 1 (issue 4), bad input: crafted images and command lines never crash
qemu-img or qemu-system, errors are clear, `check` reports what patch 0006 says it
reports (and `check -r all` repairs it), and nothing is lost: every snapshot stays listed,
applicable, and its bytes that nobody had a reason to change stay as they were.

Images are crafted with tests/qemu/lib/qcow2.py (not QEMU's qcow2.py): the snapshot table
is rewritten in place inside the clusters it already occupies (write_snapshot_table), so
refcounts stay right and only the planted defect is wrong; header extensions are
rewritten inside cluster 0 (set_extensions).

Every case runs against the patched build and, when it exists, the ASan build
(`python3 build.py build --asan`): any sanitizer report fails the test.
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.qemu.lib import qcow2
from tests.qemu.test_qcow2_identity import (
    Tools,
    assert_current,
    assert_info_matches_disk,
    assert_listing_matches_disk,
    block_snaps,
    check,
    create,
    has_pattern,
    img,
    info_snaps,
    is_v4,
    listing,
    qmp_session,
    write_pattern,
)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["patched", "asan"]
SIZES = [0, 8, 16, 24, 32, 39, 40, 48, 50, 55, 56, 57, 1024]
NAMES = ("s1", "s2", "s3")  # a chain; s3 is current; before snapshot i the data is 0x11*i
FILLER = bytes((0xA0 + i) & 0xFF or 1 for i in range(1024))  # "unknown" extra data bytes


@pytest.fixture(scope="session", params=VARIANTS)
def variant(request, require) -> Tools:
    if "patched" not in request.config.getoption("--builds"):
        # the user deselected the build these tests exercise: not a missing capability
        pytest.skip("the bad-input tests exercise the patched build (--builds has no patched)")
    return Tools.of(require.build("patched-asan" if request.param == "asan" else "patched"))


@pytest.fixture(scope="session")
def crafter(require) -> Tools:
    """The (fast, non-ASan) patched build makes the base images."""
    return Tools.of(require.build("patched"))


@pytest.fixture(scope="session")
def base_image(crafter, tmp_path_factory) -> Path:
    """s1 -> s2 -> s3 (current), every entry with 56 bytes of extra data (so s1 has a
    parent field, nil), active data 0x44. check is clean."""
    path = tmp_path_factory.mktemp("qcow2-base") / "base.qcow2"
    create(crafter, path)
    for i, name in enumerate(NAMES, 1):
        write_pattern(crafter, path, 0x11 * i)
        img(crafter, "snapshot", "-c", name, path)
    write_pattern(crafter, path, 0x44)
    image = qcow2.read(path)
    qcow2.write_snapshot_table(
        path, [sn.with_extra(sn.extra.ljust(56, b"\0")) for sn in image.snapshots]
    )
    image = qcow2.read(path)
    s1, s2, s3 = image.snapshots
    assert all(is_v4(sn.uuid) for sn in image.snapshots), "base image: the series is missing"
    assert s1.parent is None and s2.parent == s1.uuid and s3.parent == s2.uuid
    assert_current(image, s3.uuid)
    check(crafter, path)
    return path


# -- cases -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    mutate: Callable[[Path, qcow2.Image], None]
    check_rc: int = 0  # qemu-img check: 0 clean, 2 corruptions
    messages: tuple[str, ...] = ()  # each must appear in check's output
    new_parent: str | None = "s3"  # a snapshot made next descends from this one of the
    # base image (its UUID as before the defect was planted); None: it is a root
    table_errors: bool = False  # UUID data errors that a new snapshot does not fix
    after_repair: Callable[[qcow2.Image, qcow2.Image], None] | None = None
    opens: bool = True
    sizes: dict = field(default_factory=dict)


def _set(path, image, name, offset, value):
    qcow2.set_uuid_field(path, image.by_name(name), offset, value)


def _uuid(image, name):
    return image.by_name(name).uuid


def _ext(*datas, bit=True):
    def mutate(path, image):
        qcow2.set_extensions(path, qcow2.EXT_CURRENT_SNAPSHOT, [d(image) for d in datas])
        bits = image.autoclear | qcow2.AUTOCLEAR_CURRENT_SNAPSHOT
        qcow2.set_autoclear(path, bits if bit else bits & ~qcow2.AUTOCLEAR_CURRENT_SNAPSHOT)

    return mutate


def _no_current(before, after):
    assert after.extension(qcow2.EXT_CURRENT_SNAPSHOT) == [], "repair kept a bad extension"
    assert not after.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT
    assert [(s.name, s.extra) for s in after.snapshots] == [
        (s.name, s.extra) for s in before.snapshots
    ], "repairing the header changed the snapshot table"


def _cleared(name, *, uuid=False, parent=True):
    def verify(before, after):
        a, b = after.by_name(name), before.by_name(name)
        assert (a.uuid is None) == uuid or a.uuid == b.uuid
        if parent:
            assert a.parent is None, f"{name}: parent not cleared by repair"
        for other in before.snapshots:
            if other.name != name:
                assert after.by_name(other.name).extra == other.extra, (
                    f"repair changed {other.name}"
                )

    return verify


def _no_cycle(before, after):
    index = {s.uuid: s for s in after.snapshots if s.uuid}
    for sn in after.snapshots:
        seen, cur = set(), sn
        while cur is not None and cur.parent in index:
            assert cur.name not in seen, f"parent cycle left after repair at {cur.name}"
            seen.add(cur.name)
            cur = index[cur.parent]
    assert [s.uuid for s in after.snapshots] == [s.uuid for s in before.snapshots]


WRONG_LEN = "current snapshot header extension: wrong length"
CASES = [
    Case(
        "ext-length-0",
        _ext(lambda i: b""),
        2,
        (WRONG_LEN,),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-half-uuid",
        _ext(lambda i: _uuid(i, "s3").bytes[:8]),
        2,
        (WRONG_LEN,),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-length-15",
        _ext(lambda i: _uuid(i, "s3").bytes[:15]),
        2,
        (WRONG_LEN,),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-length-17",
        _ext(lambda i: _uuid(i, "s3").bytes + b"\0"),
        2,
        (WRONG_LEN,),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-length-32",
        _ext(lambda i: _uuid(i, "s3").bytes + _uuid(i, "s1").bytes),
        2,
        (WRONG_LEN,),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-twice-same",
        _ext(lambda i: _uuid(i, "s3").bytes, lambda i: _uuid(i, "s3").bytes),
        2,
        ("current snapshot header extension: found more than once",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-twice-different",
        _ext(lambda i: _uuid(i, "s3").bytes, lambda i: _uuid(i, "s1").bytes),
        2,
        ("current snapshot header extension: found more than once",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-uuid-not-in-table",
        _ext(lambda i: uuidlib.UUID("0badc0de-0000-4000-8000-00000000beef").bytes),
        2,
        ("snapshot UUID 0badc0de-0000-4000-8000-00000000beef not in the snapshot table",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-nil-uuid",
        _ext(lambda i: bytes(16)),
        2,
        ("not in the snapshot table",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "bit-without-ext",
        _ext(),
        2,
        ("current snapshot: autoclear bit set without header extension",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "ext-stale",
        _ext(lambda i: _uuid(i, "s3").bytes, bit=False),
        0,
        ("Ignoring stale current snapshot header extension",),
        None,
        after_repair=_no_current,
    ),
    Case(
        "duplicate-uuid",
        lambda p, i: _set(p, i, "s2", qcow2.EXTRA_UUID, _uuid(i, "s1")),
        2,
        ("snapshot table entry 1: same UUID as entry 0",),
        table_errors=True,
        after_repair=_cleared("s2", uuid=True),
    ),
    Case(
        "duplicate-of-current",
        lambda p, i: _set(p, i, "s1", qcow2.EXTRA_UUID, _uuid(i, "s3")),
        2,
        ("snapshot table entry 2: same UUID as entry 0",),
        "s3",  # the current UUID is still in the table (it resolves to s1 now, the first)
        table_errors=True,
        after_repair=_cleared("s3", uuid=True),
    ),
    Case(
        "parent-is-self",
        lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, _uuid(i, "s2")),
        2,
        ("snapshot table entry 1: parent UUID is its own UUID",),
        table_errors=True,
        after_repair=_cleared("s2"),
    ),
    Case(
        "parent-cycle-2",
        lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, _uuid(i, "s3")),
        2,
        ("parent UUID cycle",),
        table_errors=True,
        after_repair=_no_cycle,
    ),
    Case(
        "parent-cycle-3",
        lambda p, i: _set(p, i, "s1", qcow2.EXTRA_PARENT, _uuid(i, "s3")),
        2,
        ("parent UUID cycle",),
        table_errors=True,
        after_repair=_no_cycle,
    ),
    Case(
        "parent-not-in-table",
        lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, uuidlib.uuid4()),
        0,
    ),
    Case(
        "parent-without-uuid",
        lambda p, i: _set(p, i, "s2", qcow2.EXTRA_UUID, qcow2.NIL),
        2,
        ("snapshot table entry 1: parent UUID without snapshot UUID",),
        table_errors=True,
        after_repair=_cleared("s2", uuid=True),
    ),
]


def _sized(size: int) -> Case:
    """Every entry's extra data cut (or extended with FILLER) to ``size`` bytes."""

    def mutate(path, image):
        qcow2.write_snapshot_table(
            path,
            [sn.with_extra((sn.extra[:56] + FILLER[56:])[:size]) for sn in image.snapshots],
        )

    msgs: tuple[str, ...] = ()
    if size < 16:  # v3 entries need vm_state_size_large and disk_size (upstream rule)
        msgs += ("snapshot table entry 0 is incomplete",)
    if size < 40:  # no UUID field: the extension names a UUID that is not in the table
        msgs += ("not in the snapshot table",)
    return Case(
        f"extra-data-size-{size}",
        mutate,
        2 if msgs else 0,
        msgs,
        "s3" if size >= 40 else None,
    )


ALL_CASES = CASES + [_sized(n) for n in SIZES]


# -- the checks every case goes through ------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _output(proc) -> str:
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_bad_image(case, variant, base_image, crafter, test_dir):
    path = _copy(base_image, test_dir / "bad.qcow2")
    case.mutate(path, qcow2.read(path))
    bad = qcow2.read(path)

    # qemu-img info / snapshot -l: what they report is the bytes on disk
    assert_info_matches_disk(info_snaps(variant, path), bad)
    assert_listing_matches_disk(listing(variant, path), bad)

    # check reports exactly what the series says
    out = _output(check(variant, path, rcs=(case.check_rc,)))
    for msg in case.messages:
        assert msg in out, f"check output lacks {msg!r}:\n{out}"
    if case.check_rc == 0:
        assert "ERROR" not in out, out
    assert qcow2.read(path) == bad, "check without -r changed the image"

    # check -r all repairs it, loses nothing, and is clean afterwards
    fixed = _copy(path, test_dir / "repaired.qcow2")
    check(variant, fixed, repair=True)
    out = _output(check(variant, fixed))
    assert "ERROR" not in out and "stale" not in out, out
    repaired = qcow2.read(fixed)
    assert [s.name for s in repaired.snapshots] == list(NAMES)
    if case.after_repair:
        case.after_repair(bad, repaired)
    assert_info_matches_disk(info_snaps(variant, fixed), repaired)

    # qemu-system opens it: query-block / query-named-block-nodes report the bytes; an
    # internal snapshot taken there gets the parent the series defines and keeps the
    # other entries' extra data (bytes past 24) as they were
    base = qcow2.read(base_image)
    expect_parent = base.by_name(case.new_parent).uuid if case.new_parent else None
    opened = _copy(path, test_dir / "opened.qcow2")
    proc, replies = qmp_session(
        variant,
        opened,
        [
            ("query-block", {}),
            ("query-named-block-nodes", {"flat": True}),
            # part 2 walks the same data (grouping by UUID, ancestry): no crash, no hang
            ("query-vm-snapshots", {}),
            ("human-monitor-command", {"command-line": "info snapshots"}),
            ("blockdev-snapshot-internal-sync", {"device": "d0", "name": "qmp"}),
            ("query-block", {}),
            ("query-vm-snapshots", {}),
        ],
    )
    assert all("return" in r for r in replies), f"QMP error: {replies}\n{proc.stderr}"
    assert_info_matches_disk(block_snaps(replies[0]), bad)
    nodes = [n for n in replies[1]["return"] if n["drv"] == "qcow2"]
    assert len(nodes) == 1
    assert_info_matches_disk({x["name"]: x for x in nodes[0]["image"]["snapshots"]}, bad)
    after = qcow2.read(opened)
    assert_info_matches_disk(block_snaps(replies[5]), after)
    new = after.by_name("qmp")
    assert replies[6]["return"].get("current") == str(new.uuid)
    # before the new snapshot, the VM's current snapshot is the one the image trusts
    assert replies[2]["return"].get("current") == (str(expect_parent) if expect_parent else None)
    assert is_v4(new.uuid) and new.uuid not in {s.uuid for s in bad.snapshots}
    assert new.parent == expect_parent, (
        f"new snapshot's parent {new.parent}, expected {case.new_parent} ({expect_parent})"
    )
    assert_current(after, new.uuid)
    for old in bad.snapshots:
        kept = after.by_name(old.name)
        assert kept.extra_data_size == max(old.extra_data_size, 24)
        assert kept.extra[24:] == old.extra[24:], f"{old.name}: extra data changed"
    out = _output(check(variant, opened, rcs=(2 if case.table_errors else 0,)))
    # nothing lost: every snapshot still applies, by name, with its data
    for i, name in enumerate(NAMES, 1):
        img(variant, "snapshot", "-a", name, opened)
        assert has_pattern(crafter, opened, 0x11 * i), f"{name}'s data lost"


def test_too_much_extra_data(variant, base_image, test_dir):
    """extra_data_size 1025 (> QEMU's 1024 limit): a clear error when opening (upstream
    behaviour the series must keep), no crash; check -r all discards the excess and the
    snapshots (with their UUIDs) survive."""
    path = _copy(base_image, test_dir / "big.qcow2")
    image = qcow2.read(path)
    qcow2.write_snapshot_table(
        path, [sn.with_extra(sn.extra[:56] + FILLER[56:] + b"\xff") for sn in image.snapshots]
    )
    for args in (("info", path), ("snapshot", "-l", path)):
        out = _output(img(variant, *args, rcs=(1,)))
        assert "Too much extra metadata in snapshot table entry 0" in out, out
    proc, _ = qmp_session(variant, path, [("query-block", {})], rcs=(1,))
    assert "Too much extra metadata" in proc.stderr, proc.stderr
    out = _output(check(variant, path, rcs=(1,)))  # upstream: check cannot read the table
    assert "check -r all" in out, out
    check(variant, path, repair=True)
    check(variant, path)
    fixed = qcow2.read(path)
    assert [s.name for s in fixed.snapshots] == list(NAMES)
    for old, new in zip(image.snapshots, fixed.snapshots, strict=True):
        assert new.extra_data_size == 1024 and new.uuid == old.uuid and new.parent == old.parent


MALFORMED = [  # functions of s1's UUID
    lambda u: "12345678-not-a-uuid",
    lambda u: "0badc0de-0000-4000-8000-00000000beef",  # well-formed, no such snapshot
    lambda u: "00000000-0000-0000-0000-000000000000",  # nil: never matches
    lambda u: u + "x",
    lambda u: u[:-1],
    lambda u: "{" + u + "}",
    lambda u: u.replace("-", ""),
    lambda u: "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    lambda u: "",
]


@pytest.mark.parametrize("op", ["-a", "-d"])
def test_malformed_uuid_on_the_command_line(op, variant, base_image, test_dir):
    """-a/-d with a malformed, unknown or nil UUID: a clear error, exit 1, image unchanged."""
    path = _copy(base_image, test_dir / "a.qcow2")
    s1 = str(qcow2.read(path).by_name("s1").uuid)
    raw = path.read_bytes()
    for make in MALFORMED:
        arg = make(s1)
        out = _output(img(variant, "snapshot", op, arg, path, rcs=(1,)))
        assert "snapshot" in out.lower() and out.strip(), f"{op} {arg!r}: unclear error {out!r}"
        assert path.read_bytes() == raw, f"{op} {arg!r} changed the image"
    check(variant, path)


def test_duplicate_uuid_lookup_takes_the_first(variant, base_image, crafter, test_dir):
    """Two entries with one UUID (s2 has s1's): -a/-d by that UUID address the first (s1),
    as patch 0006 says; the other stays, with its data."""
    path = _copy(base_image, test_dir / "dup.qcow2")
    image = qcow2.read(path)
    u1 = image.by_name("s1").uuid
    qcow2.set_uuid_field(path, image.by_name("s2"), qcow2.EXTRA_UUID, u1)
    img(variant, "snapshot", "-a", str(u1), path)
    assert has_pattern(crafter, path, 0x11)
    assert_current(qcow2.read(path), u1)
    img(variant, "snapshot", "-d", str(u1), path)
    after = qcow2.read(path)
    assert [s.name for s in after.snapshots] == ["s2", "s3"]
    assert after.by_name("s2").uuid == u1
    img(variant, "snapshot", "-a", "s2", path)
    assert has_pattern(crafter, path, 0x22)
    # the duplicate is gone with s1; s2's parent (s1's UUID) is now s2's own UUID
    out = _output(check(variant, path, rcs=(2,)))
    assert "snapshot table entry 0: parent UUID is its own UUID" in out, out

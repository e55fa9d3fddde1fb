"""Series part 1 (issue 4), bad input: crafted images and command lines never crash
qemu-img or qemu-system, errors are clear, `check` reports what the series says it reports
(lineage problems and an unusable current snapshot record as warnings, exit 0: they put no
guest data at risk), `check -r leaks` writes nothing, `check -r all` repairs them (new UUIDs
for duplicates, invalid parents cleared, the record reset to nil) changing nothing else, and
nothing is lost: every snapshot stays listed, applicable, and its bytes that nobody had a
reason to change stay as they were.

Images are crafted with rig/qcow2.py (not QEMU's qcow2.py): the snapshot table
is rewritten in place inside the clusters it already occupies (write_snapshot_table), so
refcounts stay right and only the planted defect is wrong; header extensions are
rewritten inside cluster 0 (set_current_record, set_current_records, write_extensions).

Every case runs against the patched build and, when it exists, the ASan build
(`python3 build.py build --asan`): any sanitizer report fails the test.
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig import qcow2
from rig.qimg import (
    INVALID,
    STALE,
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
    not_in_table,
    notes,
    qmp_session,
    write_pattern,
)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["patched", "asan"]
SIZES = [0, 8, 16, 24, 32, 39, 40, 48, 50, 55, 56, 57, 1024]
NAMES = ("s1", "s2", "s3")  # a chain; s3 is current; before snapshot i the data is 0x11*i
FILLER = bytes((0xA0 + i) & 0xFF or 1 for i in range(1024))  # "unknown" extra data bytes
FOREIGN = uuidlib.UUID("0badc0de-0000-4000-8000-00000000beef")  # in no table
FEATURE_NAMES = 0x6803F857
PADDING_EXT = 0x71C0FFEE  # an extension no QEMU knows (kept as it is)
AUTOCLEAR_FIRST_DESIGN = 1 << 2  # the bit the first design of the series set


class KnownBug(AssertionError):
    """A check that fails because of a bug in the series (named in the xfail reason)."""


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
    assert [e.magic for e in image.extensions] == [qcow2.EXT_CURRENT_SNAPSHOT, FEATURE_NAMES]
    assert notes(check(crafter, path)) == []
    return path


# -- cases -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    mutate: Callable[[Path, qcow2.Image], None]
    # check's warnings, in order, without "Warning: " (check prints them so, check -r leaks
    # too, check -r all with "Repairing " instead); functions of the base image
    warnings: Callable[[qcow2.Image], list[str]] = lambda base: []
    errors: tuple[str, ...] = ()  # corruption (exit 2), without "ERROR "/"Repairing "
    new_parent: str | None = "s3"  # a snapshot made next descends from this one of the
    # base image (its UUID as before the defect was planted); None: it is a root
    after_repair: Callable[[qcow2.Image, qcow2.Image, qcow2.Image], None] | None = None
    rw_open_rewrites: bool = False  # check -r opens read-write, and upstream clears unknown
    # autoclear bits then, rewriting the header: that replaces an unusable record by one
    # without current snapshot before check looks at it (so check -r has nothing to say)
    first_after: bool = True  # after a new snapshot the record is the first extension
    known_bug: str | None = None  # a check that fails because of a series bug


def _set(path, image, name, offset, value):
    qcow2.set_uuid_field(path, image.by_name(name), offset, value)


def _uuid(image, name):
    return image.by_name(name).uuid


def _rec(image, name=None, **kwargs) -> bytes:
    """The 32-byte record naming snapshot ``name`` (None: nil) for the image's table."""
    fields = dict(snapshots_offset=image.snapshots_offset, nb_snapshots=image.nb_snapshots)
    fields.update(kwargs)
    u = _uuid(image, name) if name else qcow2.NIL
    return qcow2.CurrentRecord(u, fields["snapshots_offset"], fields["nb_snapshots"]).pack()


def _records(*datas: Callable[[qcow2.Image], bytes]):
    def mutate(path, image):
        qcow2.set_current_records(path, [d(image) for d in datas])

    return mutate


def _first_design(path, image):
    """What the first design of the series wrote: 16 bytes under autoclear bit 2."""
    qcow2.set_current_records(path, [_uuid(image, "s3").bytes])
    qcow2.set_autoclear(path, image.autoclear | AUTOCLEAR_FIRST_DESIGN)


def _record_after_the_others(path, image):
    """The record last, as an older QEMU leaves it when it rewrites the header."""
    qcow2.write_extensions(path, [(e.magic, e.data) for e in image.extensions
                                  if e.magic != qcow2.EXT_CURRENT_SNAPSHOT]
                           + [(qcow2.EXT_CURRENT_SNAPSHOT, _rec(image, "s3"))])


def _record_across_a_sector(path, image):
    """A valid record whose 32 bytes cross a 512-byte boundary (after an unknown extension
    sized for it): QEMU must trust it, and not update it in place."""
    others = [(e.magic, e.data) for e in image.extensions
              if e.magic != qcow2.EXT_CURRENT_SNAPSHOT]
    pos = image.header_length + sum(8 + len(d) + (-len(d) % 8) for _, d in others)
    data_at = -(-(pos + 16 + 16) // qcow2.SECTOR) * qcow2.SECTOR - 16  # 16 bytes before
    pad = data_at - 16 - pos
    assert pad >= 0 and pad % 8 == 0, (pos, data_at)
    qcow2.write_extensions(path, others + [(PADDING_EXT, b"\x5a" * pad),
                                           (qcow2.EXT_CURRENT_SNAPSHOT, _rec(image, "s3"))])
    ext = qcow2.read(path).record_extension()
    start = ext.offset + 8
    last = start + 31  # the record's last byte
    assert start // qcow2.SECTOR != last // qcow2.SECTOR, "the record crosses nothing"


def _table_unchanged(base, bad, after):
    assert [(s.name, s.extra) for s in after.snapshots] == [
        (s.name, s.extra) for s in bad.snapshots
    ], "repairing the record changed the snapshot table"


def _record_reset(base, bad, after):
    """-r all replaced the record by one without current snapshot, for the table."""
    _table_unchanged(base, bad, after)
    assert_current(after, None)


def _nil_record_pointer(image: qcow2.Image) -> str | None:
    """What is wrong with the pointer copy of a nil record (None: it is the header's)."""
    rec = qcow2.CurrentRecord.unpack(image.record_extension().data)
    if (rec.snapshots_offset, rec.nb_snapshots) == (image.snapshots_offset,
                                                    image.nb_snapshots):
        return None
    return (f"{image.path.name}: the nil record written for the unusable one has the table "
            f"pointer ({rec.snapshots_offset:#x}, {rec.nb_snapshots}), the header "
            f"({image.snapshots_offset:#x}, {image.nb_snapshots})")


def _record_replaced_on_open(base, bad, after):
    """The read-write open replaced the record by a nil one; its pointer copy is checked
    apart (RECORD_POINTER_ZERO)."""
    _table_unchanged(base, bad, after)
    assert after.current_record().state is qcow2.RecordState.NONE
    assert after.record_extension() is after.extensions[0]
    assert after.autoclear == 0


def _new_uuid(name):
    def verify(base, bad, after):
        a, b = after.by_name(name), bad.by_name(name)
        assert is_v4(a.uuid) and a.uuid != b.uuid, f"{name}: no new UUID"
        assert a.uuid not in {s.uuid for s in bad.snapshots}
        assert a.parent == b.parent and a.extra[56:] == b.extra[56:]
        for other in bad.snapshots:
            if other.name != name:
                assert after.by_name(other.name).extra == other.extra, f"repair changed {other}"

    return verify


def _parent_cleared(name):
    def verify(base, bad, after):
        a, b = after.by_name(name), bad.by_name(name)
        assert a.parent is None, f"{name}: parent not cleared by repair"
        assert a.uuid == b.uuid
        assert a.extra[: qcow2.EXTRA_PARENT] == b.extra[: qcow2.EXTRA_PARENT]
        assert a.extra[qcow2.EXTRA_PARENT + qcow2.UUID_LEN :] == b.extra[
            qcow2.EXTRA_PARENT + qcow2.UUID_LEN :]
        for other in bad.snapshots:
            if other.name != name:
                assert after.by_name(other.name).extra == other.extra, f"repair changed {other}"

    return verify


def _both(table_repair):
    """The table repaired as ``table_repair`` checks, the record reset to nil for it."""

    def verify(base, bad, after):
        table_repair(base, bad, after)
        assert_current(after, None)

    return verify


def _entry(i: int, what: str) -> Callable[[qcow2.Image], list[str]]:
    return lambda base: [f"snapshot table entry {i}: {what}"]


def _invalid(base):
    return [INVALID]


def _stale(base):
    return [STALE]


CASES = [
    # -- the current snapshot record --
    Case("record-length-0", _records(lambda i: b""), _invalid, new_parent=None,
         after_repair=_record_reset),
    Case("record-length-16", _records(lambda i: _uuid(i, "s3").bytes), _invalid,
         new_parent=None, after_repair=_record_reset),
    Case("record-length-31", _records(lambda i: _rec(i, "s3")[:31]), _invalid,
         new_parent=None, after_repair=_record_reset),
    Case("record-length-33", _records(lambda i: _rec(i, "s3") + b"\0"), _invalid,
         new_parent=None, after_repair=_record_reset),
    Case("record-length-40", _records(lambda i: _rec(i, "s3") + _uuid(i, "s1").bytes[:8]),
         _invalid, new_parent=None, after_repair=_record_reset),
    Case("record-twice-same", _records(lambda i: _rec(i, "s3"), lambda i: _rec(i, "s3")),
         _invalid, new_parent=None, after_repair=_record_reset),
    Case("record-twice-different",
         _records(lambda i: _rec(i, "s3"), lambda i: _rec(i, "s1")), _invalid,
         new_parent=None, after_repair=_record_reset),
    # an image of the first design: check -r opens it read-write, which clears the unknown
    # autoclear bit (upstream) and replaces the record on the way
    Case("first-design-16-bytes-bit-2", _first_design, _invalid, new_parent=None,
         after_repair=_record_replaced_on_open, rw_open_rewrites=True),
    Case("record-uuid-not-in-table",
         lambda p, i: qcow2.set_current_record(p, FOREIGN),
         lambda base: [not_in_table(FOREIGN)], new_parent=None, after_repair=_record_reset),
    Case("record-nil", lambda p, i: qcow2.set_current_record(p, None), new_parent=None),
    Case("record-stale-offset",
         lambda p, i: qcow2.set_current_record(
             p, _uuid(i, "s3"), snapshots_offset=i.snapshots_offset + i.cluster_size),
         _stale, new_parent=None, after_repair=_record_reset),
    Case("record-stale-nb",
         lambda p, i: qcow2.set_current_record(p, _uuid(i, "s3"), nb_snapshots=2),
         _stale, new_parent=None, after_repair=_record_reset),
    Case("record-stale-nil",  # nil means none, whatever the pointer says
         lambda p, i: qcow2.set_current_record(p, None, nb_snapshots=7), new_parent=None),
    Case("record-names-s1", lambda p, i: qcow2.set_current_record(p, _uuid(i, "s1")),
         new_parent="s1"),
    Case("record-reserved-bytes",
         lambda p, i: qcow2.set_current_record(p, _uuid(i, "s3"), reserved=b"\xff" * 4)),
    Case("record-after-the-other-extensions", _record_after_the_others, first_after=False),
    Case("record-across-a-sector", _record_across_a_sector),
    # -- the UUID fields of the snapshot table --
    Case("duplicate-uuid",
         lambda p, i: _set(p, i, "s2", qcow2.EXTRA_UUID, _uuid(i, "s1")),
         _entry(1, "same UUID as entry 0"), after_repair=_new_uuid("s2")),
    Case("duplicate-of-current",  # the record's UUID resolves to the first holder, s1
         lambda p, i: _set(p, i, "s1", qcow2.EXTRA_UUID, _uuid(i, "s3")),
         _entry(2, "same UUID as entry 0"), after_repair=_new_uuid("s3")),
    Case("parent-is-self",
         lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, _uuid(i, "s2")),
         _entry(1, "parent UUID is its own UUID"), after_repair=_parent_cleared("s2")),
    Case("parent-cycle-2",  # s2 <-> s3
         lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, _uuid(i, "s3")),
         _entry(2, "parent UUID cycle"), after_repair=_parent_cleared("s3")),
    Case("parent-cycle-3",  # s1 -> s3 -> s2 -> s1
         lambda p, i: _set(p, i, "s1", qcow2.EXTRA_PARENT, _uuid(i, "s3")),
         _entry(1, "parent UUID cycle"), after_repair=_parent_cleared("s2")),
    Case("parent-not-in-table",  # allowed: the parent may have been deleted
         lambda p, i: _set(p, i, "s2", qcow2.EXTRA_PARENT, FOREIGN)),
    Case("parent-without-uuid",
         lambda p, i: _set(p, i, "s2", qcow2.EXTRA_UUID, qcow2.NIL),
         _entry(1, "parent UUID without snapshot UUID"), after_repair=_parent_cleared("s2")),
    # -- both: repairing the table rewrites it, then the record is reset --
    Case("duplicate-uuid-and-stale-record",
         lambda p, i: (_set(p, i, "s2", qcow2.EXTRA_UUID, _uuid(i, "s1")),
                       qcow2.set_current_record(p, _uuid(i, "s3"), nb_snapshots=2)),
         lambda base: ["snapshot table entry 1: same UUID as entry 0", STALE],
         new_parent=None, after_repair=_both(_new_uuid("s2"))),
    Case("duplicate-uuid-and-record-not-in-table",
         lambda p, i: (_set(p, i, "s2", qcow2.EXTRA_UUID, _uuid(i, "s1")),
                       qcow2.set_current_record(p, FOREIGN)),
         lambda base: ["snapshot table entry 1: same UUID as entry 0", not_in_table(FOREIGN)],
         new_parent=None, after_repair=_both(_new_uuid("s2"))),
]

# Series bugs a case still shows, by name: the case is a strict xfail that fails once the
# bug is fixed. None open. Fixed so far: NIL_IN_REPAIR (`check -r all` named the nil UUID
# instead of the record's when it also rewrote the snapshot table) and RECORD_POINTER_ZERO
# (a header rewrite wrote an unusable record back as {nil, 0, 0} instead of the table's
# pointer), both in the series' on-disk patches.
KNOWN_BUGS: dict[str, str] = {}


def _sized(size: int) -> Case:
    """Every entry's extra data cut (or extended with FILLER) to ``size`` bytes."""

    def mutate(path, image):
        qcow2.write_snapshot_table(
            path,
            [sn.with_extra((sn.extra[:56] + FILLER[56:])[:size]) for sn in image.snapshots],
        )

    errors: tuple[str, ...] = ()
    if size < 16:  # v3 entries need vm_state_size_large and disk_size (upstream rule)
        errors = tuple(f"snapshot table entry {i} is incomplete" for i in range(3))
    has_uuid = size >= qcow2.EXTRA_UUID + qcow2.UUID_LEN
    return Case(
        f"extra-data-size-{size}",
        mutate,
        # no UUID field: the record names a UUID that is not in the table
        (lambda base: []) if has_uuid else (lambda base: [not_in_table(_uuid(base, "s3"))]),
        errors,
        "s3" if has_uuid else None,
    )


ALL_CASES = CASES + [_sized(n) for n in SIZES]


def _param(case: Case):
    reason = KNOWN_BUGS.get(case.known_bug or "", case.known_bug)
    marks = [pytest.mark.xfail(strict=True, raises=KnownBug, reason=reason)] \
        if case.known_bug else []
    return pytest.param(case, id=case.name, marks=marks)


# -- the checks every case goes through ------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def _errors(proc) -> list[str]:
    return [line for line in _output(proc).splitlines() if line.startswith("ERROR")]


@pytest.mark.parametrize("case", [_param(c) for c in ALL_CASES])
def test_bad_image(case, variant, base_image, crafter, test_dir):
    base = qcow2.read(base_image)
    path = _copy(base_image, test_dir / "bad.qcow2")
    case.mutate(path, qcow2.read(path))
    bad = qcow2.read(path)
    warnings = case.warnings(base)
    known_bugs = []

    # qemu-img info / snapshot -l work and report the bytes on disk; read-only opens, with
    # and without -U, write nothing (not even a repair of the record)
    raw = path.read_bytes()
    assert_info_matches_disk(info_snaps(variant, path), bad)
    assert_listing_matches_disk(listing(variant, path), bad)
    img(variant, "info", path)
    img(variant, "snapshot", "-l", path)
    assert path.read_bytes() == raw, "a read-only open changed the image"

    # check reports exactly what the series says: lineage and the record are warnings
    # (exit 0); only corruption (upstream's incomplete entries) is an error (exit 2)
    proc = check(variant, path, rcs=(2 if case.errors else 0,))
    assert notes(proc) == [f"Warning: {w}" for w in warnings], _output(proc)
    assert _errors(proc) == [f"ERROR {e}" for e in case.errors], _output(proc)
    assert path.read_bytes() == raw, "check without -r changed the image"

    # check -r leaks repairs no lineage and leaves every UUID field alone
    leaks = _copy(path, test_dir / "leaks.qcow2")
    proc = check(variant, leaks, repair="leaks", rcs=(2 if case.errors else 0,))
    if case.rw_open_rewrites:
        assert notes(proc) == [], _output(proc)
        after = qcow2.read(leaks)
        _record_replaced_on_open(base, bad, after)
        if (wrong := _nil_record_pointer(after)) and case.known_bug == "RECORD_POINTER_ZERO":
            known_bugs.append(wrong)
        elif wrong:
            raise AssertionError(wrong)
    else:
        assert notes(proc) == [f"Warning: {w}" for w in warnings], _output(proc)
        assert leaks.read_bytes() == raw, "check -r leaks changed the image"

    # check -r all repairs it, loses nothing, and is clean afterwards
    fixed = _copy(path, test_dir / "repaired.qcow2")
    proc = check(variant, fixed, repair=True)
    repairs = [f"Repairing {e}" for e in case.errors] + [f"Repairing {w}" for w in warnings]
    if case.rw_open_rewrites:
        repairs = []
    if notes(proc) != repairs:
        if not case.known_bug:
            raise AssertionError(f"check -r all: {notes(proc)}, expected {repairs}\n"
                                 f"{_output(proc)}")
        known_bugs.append(f"check -r all printed {notes(proc)}, expected {repairs}")
    proc = check(variant, fixed)
    assert notes(proc) == [] and _errors(proc) == [], _output(proc)
    repaired = qcow2.read(fixed)
    assert [s.name for s in repaired.snapshots] == list(NAMES)
    if case.after_repair:
        case.after_repair(base, bad, repaired)
        if case.rw_open_rewrites and (wrong := _nil_record_pointer(repaired)):
            if case.known_bug != "RECORD_POINTER_ZERO":
                raise AssertionError(wrong)
            known_bugs.append(wrong)
    elif not case.errors and not warnings:
        assert fixed.read_bytes() == raw, "check -r all changed an image it found clean"
    assert_info_matches_disk(info_snaps(variant, fixed), repaired)

    # qemu-system opens it: query-block / query-named-block-nodes report the bytes; an
    # internal snapshot taken there gets the parent the series defines and keeps the
    # other entries' extra data (bytes past 24) as they were
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
    assert_current(after, new.uuid, first=case.first_after)
    for old in bad.snapshots:
        kept = after.by_name(old.name)
        assert kept.extra_data_size == max(old.extra_data_size, 24)
        assert kept.extra[24:] == old.extra[24:], f"{old.name}: extra data changed"
    # the record is right again; problems of the table itself stay until -r all
    proc = check(variant, opened)
    table_warnings = [f"Warning: {w}" for w in warnings if w.startswith("snapshot table")]
    assert notes(proc) == table_warnings and _errors(proc) == [], _output(proc)
    # nothing lost: every snapshot still applies, by name, with its data
    for i, name in enumerate(NAMES, 1):
        img(variant, "snapshot", "-a", name, opened)
        assert has_pattern(crafter, opened, 0x11 * i), f"{name}'s data lost"
    if known_bugs:
        raise KnownBug("; ".join(known_bugs))


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
    """Two entries with one UUID (s2 has s1's): -a/-d by that UUID address the first (s1);
    the other stays, with its data, and keeps its children (the UUID is still in the
    table: nothing to reparent); the record still names that UUID, now s2's."""
    path = _copy(base_image, test_dir / "dup.qcow2")
    image = qcow2.read(path)
    u1, u2 = image.by_name("s1").uuid, image.by_name("s2").uuid
    qcow2.set_uuid_field(path, image.by_name("s2"), qcow2.EXTRA_UUID, u1)
    img(variant, "snapshot", "-a", str(u1), path)
    assert has_pattern(crafter, path, 0x11)
    assert_current(qcow2.read(path), u1)
    img(variant, "snapshot", "-d", str(u1), path)
    after = qcow2.read(path)
    assert [s.name for s in after.snapshots] == ["s2", "s3"]
    assert after.by_name("s2").uuid == u1 and after.by_name("s2").parent == u1
    assert after.by_name("s3").parent == u2
    assert_current(after, u1)
    img(variant, "snapshot", "-a", "s2", path)
    assert has_pattern(crafter, path, 0x22)
    # the duplicate is gone with s1; s2's parent (s1's UUID) is now s2's own UUID: a
    # warning, not corruption
    out = check(variant, path)
    assert notes(out) == ["Warning: snapshot table entry 0: parent UUID is its own UUID"], (
        _output(out))

"""Series part 1 (issue 4): qcow2 snapshot identity, checked on the bytes on disk.

qemu-img (-c/-a/-d/-l, info --output=json, check) and a running guest (query-block,
query-named-block-nodes after savevm / snapshot-save) are compared with what
tests/qemu/lib/qcow2.py reads from the image file: SPEC.md §1 (extra data 24-39 = UUID,
40-55 = parent, header extension 0x43534e50 = current snapshot, autoclear bit 2), §2
(`uuid` / `parent-uuid` in SnapshotInfo), §3 (qemu-img).

Compatibility with real peers: Debian's qemu-img 7.2 (/usr/bin/qemu-img, package qemu-utils)
and the stock 10.0.13 build make images the patched build must open, and modify images
made by the patched build (which must then stop trusting its current-snapshot extension).

The helpers at the top (Tools, run, ...) are shared with test_qcow2_bad_input.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.qemu.lib import qcow2
from tests.qemu.lib.errors import FeatureAbsent
from tests.qemu.lib.machine import DISK_NODE

DEBIAN_IMG = Path("/usr/bin/qemu-img")
DEBIAN_IO = Path("/usr/bin/qemu-io")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What a crashed or sanitizer-stopped QEMU leaves in its output.
CRASH_MARKERS = (
    "Aborted",
    "Segmentation fault",
    "core dumped",
    "Assertion",
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
)
SIZE = "64M"


# -- running the tools -----------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """One set of binaries: a build (patched, stock, patched-asan) or Debian's 7.2."""

    name: str
    img: Path
    io: Path | None = None
    system: Path | None = None

    @classmethod
    def of(cls, build) -> Tools:
        return cls(build.name, build.img, build.io, build.system)


def debian_tools(require) -> Tools:
    require.executable(DEBIAN_IMG, "qemu-utils",
                       ": Debian's qemu-img 7.2 is the old peer of the compatibility tests")
    return Tools("debian-7.2", DEBIAN_IMG, DEBIAN_IO if os.access(DEBIAN_IO, os.X_OK) else None)


# ASan: any error fails (exit code 86). Leaks are reported too, except one that upstream
# QEMU 10.0 has without the series: `check -r all` re-reads the snapshot table for its
# second pass without freeing the first one (qcow2_check_read_snapshot_table).
LSAN_SUPPRESSIONS = Path(tempfile.gettempdir()) / f"qcow2-tests-lsan-{os.getpid()}.supp"
LSAN_SUPPRESSIONS.write_text("leak:qcow2_check_read_snapshot_table\n")
ASAN_OPTIONS = os.environ.get(
    "QCOW2_TEST_ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86"
)
ENV = dict(
    os.environ,
    ASAN_OPTIONS=ASAN_OPTIONS,
    LSAN_OPTIONS=f"suppressions={LSAN_SUPPRESSIONS}:print_suppressions=0",
    LC_ALL="C",
)


def no_crash(proc: subprocess.CompletedProcess, what: str) -> None:
    out = (proc.stdout or "") + (proc.stderr or "")
    assert proc.returncode >= 0, f"{what}: killed by signal {-proc.returncode}\n{out[-3000:]}"
    assert proc.returncode != 86, f"{what}: sanitizer error\n{out[-6000:]}"
    for marker in CRASH_MARKERS:
        assert marker not in out, f"{what}: {marker!r} in output\n{out[-6000:]}"


def run(
    cmd: list, rcs: tuple[int, ...] | None = (0,), stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a QEMU tool; never a crash; return code in ``rcs`` unless that is None."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )
    what = " ".join(cmd)
    no_crash(proc, what)
    if rcs is not None:
        assert proc.returncode in rcs, (
            f"{what}: exit {proc.returncode}, expected {rcs}\n"
            f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
        )
    return proc


def img(t: Tools, *args, rcs: tuple[int, ...] | None = (0,)) -> subprocess.CompletedProcess:
    return run([t.img, *args], rcs=rcs)


def create(t: Tools, path: Path, size: str = SIZE) -> Path:
    img(t, "create", "-q", "-f", "qcow2", path, size)
    return path


def write_pattern(t: Tools, path: Path, pattern: int) -> None:
    io = t.io
    assert io is not None, f"{t.name}: no qemu-io"
    run([io, "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 64k", path])


def has_pattern(t: Tools, path: Path, pattern: int) -> bool:
    io = t.io
    assert io is not None, f"{t.name}: no qemu-io"
    proc = run([io, "-r", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 64k", path], rcs=None)
    return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout


def info(t: Tools, path: Path) -> dict:
    return json.loads(img(t, "info", "--output=json", "-U", path).stdout)


def info_snaps(t: Tools, path: Path) -> dict[str, dict]:
    return {s["name"]: s for s in info(t, path).get("snapshots", [])}


def listing(t: Tools, path: Path) -> dict[str, tuple[str, str]]:
    """`snapshot -l`: name -> (UUID column, PARENT_UUID column) ("" where absent)."""
    out = img(t, "snapshot", "-l", "-U", path).stdout
    rows = {}
    ok = lambda c: c == "--" or UUID_RE.fullmatch(c)  # noqa: E731
    for line in out.splitlines()[2:]:
        cols = line.split()
        if len(cols) >= 10 and ok(cols[-2]) and ok(cols[-1]):
            rows[cols[1]] = (cols[-2], cols[-1])
        elif len(cols) >= 2:
            rows[cols[1]] = ("", "")
    return rows


def check(
    t: Tools, path: Path, *, repair: bool = False, rcs: tuple[int, ...] | None = (0,)
) -> subprocess.CompletedProcess:
    args = ["check", "-f", "qcow2"] + (["-r", "all"] if repair else []) + [path]
    return img(t, *args, rcs=rcs)


def qmp_session(
    t: Tools, path: Path, commands: list[tuple[str, dict]], rcs: tuple[int, ...] | None = (0,)
) -> tuple[subprocess.CompletedProcess, list]:
    """Open ``path`` in qemu-system (-M none, -drive if=none,id=d0), run QMP ``commands``
    over stdio, quit. Returns the process and one response per command."""
    assert t.system is not None
    lines = [json.dumps({"execute": "qmp_capabilities"})]
    lines += [json.dumps({"execute": c, "arguments": a}) for c, a in commands]
    lines.append(json.dumps({"execute": "quit"}))
    proc = run(
        [
            t.system,
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
            "-qmp",
            "stdio",
            "-drive",
            f"if=none,id=d0,format=qcow2,file={path}",
        ],
        rcs=rcs,
        stdin="\n".join(lines) + "\n",
    )
    replies = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    replies = [r for r in replies if "return" in r or "error" in r]
    return proc, replies[1 : 1 + len(commands)]


def block_snaps(reply: dict) -> dict[str, dict]:
    """Snapshots of drive d0 in a query-block reply."""
    for dev in reply["return"]:
        if dev.get("device") == "d0":
            return {s["name"]: s for s in dev["inserted"]["image"].get("snapshots", [])}
    raise AssertionError(f"d0 missing from query-block: {reply}")


# -- byte-level expectations -----------------------------------------------------------


def is_v4(u: uuidlib.UUID | None) -> bool:
    """Is ``u`` a random (v4) RFC 9562 UUID? None — an entry without UUID — raises
    FeatureAbsent: on a build without the series that is the expected failure of a series
    test (lib/features.py), on one with the series a real failure like any other."""
    if u is None:
        raise FeatureAbsent("the snapshot has no UUID on disk (extra data bytes 24-39)")
    return u.version == 4 and u.variant == uuidlib.RFC_4122


def s(u: uuidlib.UUID | None) -> str | None:
    return None if u is None else str(u)


def assert_info_matches_disk(reported: dict[str, dict], image: qcow2.Image) -> None:
    """QEMU's SnapshotInfo uuid / parent-uuid equal the bytes on disk, for every snapshot."""
    assert sorted(reported) == sorted(sn.name for sn in image.snapshots)
    for sn in image.snapshots:
        r = reported[sn.name]
        assert r.get("uuid") == s(sn.uuid), f"{sn.name}: uuid {r.get('uuid')} vs disk {sn.uuid}"
        parent = sn.parent if sn.uuid is not None else None
        assert r.get("parent-uuid") == s(parent), f"{sn.name}: parent-uuid vs disk {sn.parent}"


def assert_listing_matches_disk(rows: dict[str, tuple[str, str]], image: qcow2.Image) -> None:
    assert sorted(rows) == sorted(sn.name for sn in image.snapshots)
    for sn in image.snapshots:
        parent = sn.parent if sn.uuid is not None else None
        assert rows[sn.name] == (s(sn.uuid) or "--", s(parent) or "--"), (sn.name, rows)


def assert_current(image: qcow2.Image, u: uuidlib.UUID | None) -> None:
    """The current-snapshot extension names ``u`` (bit 2 set) or is absent (bit clear)."""
    exts = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)
    if u is None:
        assert not exts, f"current-snapshot extension still present: {exts}"
        assert not image.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT
        return
    assert [e.data for e in exts] == [u.bytes], f"current extension {exts}, expected {u}"
    assert image.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT, "autoclear bit 2 not set"
    assert image.current == u


def lineage_image(t: Tools, path: Path, names=("s1", "s2", "s3")) -> qcow2.Image:
    """A chain of snapshots made by ``t``; before snapshot i the first cluster holds 0x11*i."""
    create(t, path)
    for i, name in enumerate(names, 1):
        write_pattern(t, path, 0x11 * i)
        img(t, "snapshot", "-c", name, path)
    return qcow2.read(path)


@pytest.fixture
def tools(build) -> Tools:
    return Tools.of(build)


# -- qemu-img --------------------------------------------------------------------------


@pytest.mark.series("snapshot-uuid")
def test_create_records_uuid_parent_and_current(tools, test_dir):
    """-c s1, -c s2: v4 UUIDs on disk, distinct; s2's parent is s1; the current-snapshot
    extension names s2 under autoclear bit 2; -l, info --output=json show those bytes;
    check is clean."""
    path = create(tools, test_dir / "a.qcow2")
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
    assert image.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT

    assert_info_matches_disk(info_snaps(tools, path), image)
    assert_listing_matches_disk(listing(tools, path), image)
    check(tools, path)


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
    assert_current(qcow2.read(path), u1)

    img(tools, "snapshot", "-c", "s3", path)
    image = qcow2.read(path)
    s3 = image.by_name("s3")
    assert is_v4(s3.uuid) and s3.uuid not in (u1, u2)
    assert s3.parent == u1, "a snapshot taken after applying s1 descends from s1"
    assert image.by_name("s2").parent == u1 and image.by_name("s2").uuid == u2
    assert_current(image, s3.uuid)
    assert_info_matches_disk(info_snaps(tools, path), image)
    check(tools, path)


@pytest.mark.series("snapshot-uuid")
def test_apply_and_delete_by_uuid(tools, test_dir):
    """-a and -d take a UUID (SPEC §3); the UUID wins over a snapshot *named* like it."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path)
    u1, u2, u3 = (image.by_name(n).uuid for n in ("s1", "s2", "s3"))
    assert is_v4(u1) and is_v4(u2) and is_v4(u3)

    # convert -l <UUID> reads a snapshot by UUID (bdrv_snapshot_load_tmp_by_id_or_name)
    out = test_dir / "s3.raw"
    img(tools, "convert", "-f", "qcow2", "-O", "raw", "-l", str(u3), path, out)
    assert out.read_bytes()[:65536] == bytes([0x33]) * 65536, "convert -l <uuid of s3>"

    img(tools, "snapshot", "-a", str(u1), path)
    assert has_pattern(tools, path, 0x11), "-a <uuid of s1> did not restore s1's data"
    assert_current(qcow2.read(path), u1)

    # A snapshot whose *name* is s2's UUID: -a <that UUID> still means s2.
    write_pattern(tools, path, 0x99)
    img(tools, "snapshot", "-c", str(u2), path)
    img(tools, "snapshot", "-a", str(u2), path)
    assert has_pattern(tools, path, 0x22), "a UUID must take precedence over a name"
    assert_current(qcow2.read(path), u2)
    img(tools, "snapshot", "-d", str(u2), path)  # deletes s2 (by UUID), not the named one
    image = qcow2.read(path)
    assert sorted(sn.name for sn in image.snapshots) == sorted(["s1", "s3", str(u2)])
    assert image.by_name("s3").uuid == u3 and image.by_name("s3").parent == u2
    # s2 was current: its parent s1 is current now
    assert_current(image, u1)
    # no snapshot has that UUID any more: the argument is a name again
    img(tools, "snapshot", "-d", str(u2), path)
    assert sorted(sn.name for sn in qcow2.read(path).snapshots) == ["s1", "s3"]
    check(tools, path)


@pytest.mark.series("snapshot-uuid")
def test_delete_current_falls_back_to_parent(tools, test_dir):
    """Deleting the current snapshot makes its parent current; deleting a root current
    leaves no current snapshot (extension gone, bit clear); a non-current delete keeps
    current. Every step: the other entries' bytes unchanged, check clean."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1", "s2", "s3", "s4"))
    u = {sn.name: sn.uuid for sn in image.snapshots}
    extra = {sn.name: sn.extra for sn in image.snapshots}
    assert all(is_v4(x) for x in u.values())

    img(tools, "snapshot", "-d", "s2", path)  # not current: current stays s4
    image = qcow2.read(path)
    assert_current(image, u["s4"])
    assert image.by_name("s3").parent == u["s2"], "a parent may be gone; it is not rewritten"

    steps = [("s4", u["s3"]), ("s3", None)]  # s3's parent s2 is gone: no current
    for name, expected in steps:
        img(tools, "snapshot", "-d", name, path)
        image = qcow2.read(path)
        assert_current(image, expected)
        for sn in image.snapshots:
            assert sn.extra == extra[sn.name], f"{sn.name} changed by deleting {name}"
        check(tools, path)

    img(tools, "snapshot", "-a", "s1", path)
    img(tools, "snapshot", "-d", "s1", path)  # current and a root: no current afterwards
    image = qcow2.read(path)
    assert image.snapshots == [] and image.extension(qcow2.EXT_CURRENT_SNAPSHOT) == []
    assert not image.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT
    img(tools, "snapshot", "-c", "fresh", path)
    assert qcow2.read(path).by_name("fresh").parent is None
    check(tools, path)


@pytest.mark.series("snapshot-uuid")
def test_version_2_images_have_uuids_but_no_current(tools, test_dir):
    """compat=0.10 has no autoclear bits: snapshots get UUIDs, never a current snapshot
    (so no parents); amend to v2 drops the extension, back to v3 there is none."""
    path = test_dir / "v2.qcow2"
    img(tools, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "1M")
    img(tools, "snapshot", "-c", "s1", path)
    img(tools, "snapshot", "-c", "s2", path)
    image = qcow2.read(path)
    assert image.version == 2
    assert all(is_v4(x.uuid) and x.parent is None for x in image.snapshots)
    assert image.extension(qcow2.EXT_CURRENT_SNAPSHOT) == []
    assert_info_matches_disk(info_snaps(tools, path), image)
    check(tools, path)

    path = test_dir / "v3.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    img(tools, "amend", "-f", "qcow2", "-o", "compat=0.10", path)
    v2 = qcow2.read(path)
    assert v2.version == 2 and v2.extension(qcow2.EXT_CURRENT_SNAPSHOT) == []
    assert [x.extra for x in v2.snapshots] == [x.extra for x in image.snapshots]
    check(tools, path)
    img(tools, "amend", "-f", "qcow2", "-o", "compat=1.1", path)
    img(tools, "snapshot", "-c", "s3", path)
    v3 = qcow2.read(path)
    assert v3.by_name("s3").parent is None and v3.by_name("s2").parent == v3.by_name("s1").uuid
    assert_current(v3, v3.by_name("s3").uuid)
    check(tools, path)


@pytest.mark.series("snapshot-uuid")
def test_qmp_internal_snapshot_commands(tools, test_dir):
    """blockdev-snapshot-internal-sync records the current snapshot as parent; the
    SnapshotInfo that blockdev-snapshot-delete-internal-sync returns carries the deleted
    entry's UUIDs; query-block follows (qemu-system -M none, QMP over stdio)."""
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
    assert is_v4(q1.uuid) and q1.parent == u1
    assert_current(image, q1.uuid)
    assert block_snaps(replies[1])["q1"]["parent-uuid"] == str(u1)
    deleted = replies[2]["return"]
    assert deleted["name"] == "s1" and deleted.get("uuid") == str(u1)
    assert "parent-uuid" not in deleted
    assert_info_matches_disk(block_snaps(replies[3]), image)
    check(tools, path)


# -- a running guest -------------------------------------------------------------------


def _query_block_snaps(vm) -> dict[str, dict]:
    for dev in vm.qmp.cmd("query-block"):
        ins = dev.get("inserted") or {}
        if ins.get("node-name") == DISK_NODE:
            return {x["name"]: x for x in ins["image"].get("snapshots", [])}
    raise AssertionError(f"{DISK_NODE} missing from query-block")


def _named_node_snaps(vm) -> dict[str, dict]:
    for node in vm.qmp.cmd("query-named-block-nodes", flat=True):
        if node.get("node-name") == DISK_NODE:
            return {x["name"]: x for x in node["image"].get("snapshots", [])}
    raise AssertionError(f"{DISK_NODE} missing from query-named-block-nodes")


@pytest.mark.series("snapshot-uuid")
def test_guest_snapshots_carry_the_uuids_on_disk(build, vm, snapshots):
    """savevm / snapshot-save on a running guest: query-block and query-named-block-nodes
    report uuid / parent-uuid equal to the image bytes; the extension follows save and
    load; a snapshot saved after loading s1 descends from s1."""
    snapshots.save("g1")
    snapshots.save("g2")
    image = qcow2.read(vm.disk)
    g1, g2 = image.by_name("g1"), image.by_name("g2")
    assert is_v4(g1.uuid) and is_v4(g2.uuid) and g1.uuid != g2.uuid
    assert g1.parent is None and g2.parent == g1.uuid
    assert_current(image, g2.uuid)
    assert_info_matches_disk(_query_block_snaps(vm), image)
    assert_info_matches_disk(_named_node_snaps(vm), image)

    snapshots.load("g1")
    assert_current(qcow2.read(vm.disk), g1.uuid)
    snapshots.save("g3")
    image = qcow2.read(vm.disk)
    g3 = image.by_name("g3")
    assert is_v4(g3.uuid) and g3.parent == g1.uuid
    assert_current(image, g3.uuid)
    assert_info_matches_disk(_query_block_snaps(vm), image)
    assert_info_matches_disk(_named_node_snaps(vm), image)
    assert vm.qmp.cmd("query-status")["status"] == "running"


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
    nothing is invented on disk (no UUIDs, no current-snapshot extension)."""
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
    check(tools, path)

    img(tools, "snapshot", "-a", "old1", path)
    assert has_pattern(tools, path, 0x11)
    after = qcow2.read(path)
    assert [(sn.name, sn.extra) for sn in after.snapshots] == [
        (sn.name, sn.extra) for sn in before.snapshots
    ]
    assert_current(after, None)  # the applied snapshot has no UUID: no current snapshot
    check(tools, path)
    check(peer, path)
    img(peer, "snapshot", "-a", "old2", path)
    assert has_pattern(io_peer, path, 0x22)


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_new_snapshot_on_an_older_image(tools, peer_name, request, test_dir):
    """The series' first snapshot on an old image: v4 UUID, a root (no current before),
    becomes current; the old entries keep their bytes; the old peer's check is clean and
    it can still apply the new snapshot by name."""
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
    check(tools, path)
    check(peer, path)
    write_pattern(tools, path, 0x55)
    img(peer, "snapshot", "-a", "new", path)
    assert has_pattern(tools, path, 0x77)
    # applying a snapshot without UUID leaves no current snapshot; the next is a root
    img(tools, "snapshot", "-a", "old1", path)
    assert_current(qcow2.read(path), None)
    img(tools, "snapshot", "-c", "new2", path)
    image = qcow2.read(path)
    assert image.by_name("new2").parent is None
    assert_current(image, image.by_name("new2").uuid)
    check(tools, path)


@pytest.mark.series("snapshot-uuid")
@pytest.mark.parametrize("peer_name", PEERS)
def test_image_of_the_series_modified_by_an_older_qemu(tools, peer_name, request, test_dir):
    """Made by the series (s1 -> s2, current s2), then an older qemu-img reads it (nothing
    changes), creates a snapshot and deletes s1: s2 keeps its UUID and parent bytes, the
    older QEMU cleared autoclear bit 2, both checks are clean, and this build no longer
    trusts the extension: its next snapshot is a root."""
    peer = _peer(peer_name, request)
    path = test_dir / "new.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    s1, s2 = image.by_name("s1"), image.by_name("s2")
    assert is_v4(s1.uuid) and s2.parent == s1.uuid
    assert_current(image, s2.uuid)

    # Read-only use by the peer changes nothing (the autoclear bit survives).
    raw = path.read_bytes()
    info(peer, path)
    img(peer, "snapshot", "-l", path)
    check(peer, path)
    assert path.read_bytes() == raw, f"{peer.name} changed the image by reading it"

    img(peer, "snapshot", "-c", "peer", path)
    img(peer, "snapshot", "-d", "s1", path)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s2", "peer"]
    s2b = image.by_name("s2")
    assert s2b.uuid == s2.uuid and s2b.parent == s1.uuid, "the older QEMU lost s2's UUIDs"
    assert s2b.extra == s2.extra
    assert image.by_name("peer").uuid is None
    assert not image.autoclear & qcow2.AUTOCLEAR_CURRENT_SNAPSHOT, (
        f"{peer.name} opened the image writable but autoclear bit 2 is still set"
    )
    assert image.current is None
    check(peer, path)
    out = check(tools, path)
    assert "stale" in (out.stdout + out.stderr).lower(), "check should mention the stale extension"
    assert_info_matches_disk(info_snaps(tools, path), image)

    img(tools, "snapshot", "-c", "after", path)
    image = qcow2.read(path)
    after = image.by_name("after")
    assert is_v4(after.uuid)
    assert after.parent is None, (
        f"after {peer.name} modified the image the stale current snapshot (s2) was trusted"
    )
    assert_current(image, after.uuid)
    check(tools, path)
    check(peer, path)
    img(tools, "snapshot", "-a", "s2", path)
    assert has_pattern(tools, path, 0x22)
    assert_current(qcow2.read(path), s2.uuid)


@pytest.mark.series("snapshot-uuid")
def test_check_repair_drops_stale_extension(tools, test_dir):
    """check -r all drops a stale extension (bit cleared by an older QEMU) from the header;
    the snapshot table is untouched."""
    path = test_dir / "a.qcow2"
    image = lineage_image(tools, path, ("s1", "s2"))
    assert is_v4(image.by_name("s2").uuid)
    assert_current(image, image.by_name("s2").uuid)
    qcow2.set_autoclear(path, image.autoclear & ~qcow2.AUTOCLEAR_CURRENT_SNAPSHOT)
    check(tools, path, repair=True)
    after = qcow2.read(path)
    assert after.extension(qcow2.EXT_CURRENT_SNAPSHOT) == []
    assert [(x.name, x.extra) for x in after.snapshots] == [
        (x.name, x.extra) for x in image.snapshots
    ]
    out = check(tools, path)
    assert "stale" not in (out.stdout + out.stderr).lower()


# -- a header cluster without room for the extension -----------------------------------

EXT_BYTES = 8 + 16  # the current-snapshot extension as written in the header


def _full_header_image(t: Tools, directory: Path) -> tuple[Path, int]:
    """A qcow2 image with 512-byte clusters whose header cluster (header, extensions,
    backing file name) has fewer than 24 bytes free: no room for the current-snapshot
    extension. Returns the image and the free bytes."""
    base = create(t, directory / "base.qcow2", "1M")
    path = directory / "full.qcow2"
    for depth in range(170, 200):
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
    pytest.fail("could not make a qcow2 header cluster without room for 24 bytes: the test "
                "cannot set up what it tests")


def test_snapshot_on_an_image_without_header_room(build, tools, test_dir):
    """A 512-byte-cluster image whose header cluster is full (long backing file name):
    stock QEMU creates and applies internal snapshots there. The series must too (there
    is simply no current snapshot then), not fail after doing the work (a bug this test
    found in the series, fixed in "qcow2: Persist the current snapshot")."""
    path, free = _full_header_image(tools, test_dir)
    write_pattern(tools, path, 0x11)
    created = img(tools, "snapshot", "-c", "s1", path, rcs=None)
    image = qcow2.read(path)
    assert [sn.name for sn in image.snapshots] == ["s1"], "snapshot -c left no or many entries"
    assert created.returncode == 0, (
        f"snapshot -c failed ({free} bytes free in the header cluster) but s1 was created: "
        f"{created.stderr.strip()}"
    )
    assert image.current is None or image.current == image.by_name("s1").uuid
    write_pattern(tools, path, 0x22)
    applied = img(tools, "snapshot", "-a", "s1", path, rcs=None)
    assert has_pattern(tools, path, 0x11) == (applied.returncode == 0), (
        f"snapshot -a exit {applied.returncode} but the data says otherwise: "
        f"{applied.stderr.strip()}"
    )
    assert applied.returncode == 0, applied.stderr
    img(tools, "snapshot", "-c", "s2", path)
    img(tools, "snapshot", "-d", "s1", path)
    assert [sn.name for sn in qcow2.read(path).snapshots] == ["s2"]
    check(tools, path)

"""One-shot qemu-img / qemu-io / qemu-system runs and the identity assertions on the
bytes on disk, shared by tests/qemu/test_qcow2_identity.py and test_qcow2_bad_input.py.

Each helper compares what a tool reports with what ``rig.qcow2`` reads from the image
file (SPEC.md §1-§3); the tests register this module for pytest's assertion rewriting.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from rig import commands, qcow2
from rig.errors import FeatureAbsent

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


def no_crash(proc: commands.Result, what: str) -> None:
    out = (proc.stdout or "") + (proc.stderr or "")
    assert proc.returncode >= 0, f"{what}: killed by signal {-proc.returncode}\n{out[-3000:]}"
    assert proc.returncode != 86, f"{what}: sanitizer error\n{out[-6000:]}"
    for marker in CRASH_MARKERS:
        assert marker not in out, f"{what}: {marker!r} in output\n{out[-6000:]}"


def run(
    cmd: list, rcs: tuple[int, ...] | None = (0,), stdin: str | None = None, timeout: float = 120
) -> commands.Result:
    """Run a QEMU tool (rig/commands.py); never a crash; return code in ``rcs`` unless that
    is None."""
    proc = commands.run(cmd, input=stdin, env=ENV, timeout=timeout)
    what = " ".join(proc.argv)
    assert not proc.timed_out, f"{what}: timed out after {timeout}s\n{proc.output[-3000:]}"
    no_crash(proc, what)
    if rcs is not None:
        assert proc.returncode in rcs, (
            f"{what}: exit {proc.returncode}, expected {rcs}\n"
            f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
        )
    return proc


def img(t: Tools, *args, rcs: tuple[int, ...] | None = (0,)) -> commands.Result:
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
    t: Tools, path: Path, *, repair: bool | str = False, rcs: tuple[int, ...] | None = (0,)
) -> commands.Result:
    """qemu-img check; ``repair``: True or "all" for -r all, "leaks" for -r leaks."""
    mode = "all" if repair is True else repair
    args = ["check", "-f", "qcow2"] + (["-r", mode] if mode else []) + [path]
    return img(t, *args, rcs=rcs)


def notes(proc: commands.Result) -> list[str]:
    """check's warnings and repairs of lineage metadata (not corruption: exit code 0)."""
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith(("Warning:", "Repairing"))]


def qmp_session(
    t: Tools, path: Path, commands: list[tuple[str, dict]], rcs: tuple[int, ...] | None = (0,),
    drive_opts: str = "",
) -> tuple[commands.Result, list]:
    """Open ``path`` in qemu-system (-M none, -drive if=none,id=d0[,drive_opts]), run QMP
    ``commands`` over stdio, quit. Returns the process and one response per command."""
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
            f"if=none,id=d0,format=qcow2,file={path}" + (f",{drive_opts}" if drive_opts else ""),
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

STALE = "current snapshot record: stale (the snapshot table was changed by a program that " \
        "does not maintain it)"
INVALID = "current snapshot record: invalid (wrong length, or more than one)"


def not_in_table(u: uuidlib.UUID) -> str:
    return f"current snapshot record: snapshot UUID {u} is not in the snapshot table"


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


def assert_record(image: qcow2.Image, u: uuidlib.UUID | None, *,
                  first: bool = True) -> qcow2.CurrentRecord:
    """The record as the series writes it: one 32-byte extension, the first one, inside one
    512-byte sector (updated in place with one write), its copy of snapshots_offset and
    nb_snapshots equal to the header's, reserved bytes zero, naming ``u`` (None: the nil
    UUID, "no current snapshot"); no feature bit anywhere. ``first=False``: an older QEMU
    rewrote the header since, keeping the record where it keeps unknown extensions (last);
    the series updates it there."""
    exts = image.extension(qcow2.EXT_CURRENT_SNAPSHOT)
    assert len(exts) == 1, f"{len(exts)} current snapshot extensions: {exts}"
    ext = exts[0]
    assert len(ext.data) == qcow2.CURRENT_RECORD.size, f"record of {len(ext.data)} bytes"
    if first:
        assert image.extensions[0] is ext, "the record is not the first header extension"
        start = ext.offset + 8
        assert start // qcow2.SECTOR == (start + len(ext.data) - 1) // qcow2.SECTOR, (
            f"the record at byte {start} crosses a sector boundary")
    rec = qcow2.CurrentRecord.unpack(ext.data)
    assert (rec.snapshots_offset, rec.nb_snapshots) == (
        image.snapshots_offset, image.nb_snapshots), (
        f"stale record {rec}: the header points at {image.snapshots_offset:#x}, "
        f"{image.nb_snapshots} snapshots")
    assert rec.reserved == bytes(4), rec
    assert rec.uuid == (u or qcow2.NIL), f"the record names {rec.uuid}, expected {u}"
    assert image.autoclear == 0 and image.incompatible == 0 and image.compatible == 0, (
        f"feature bits set: incompatible {image.incompatible:#x}, compatible "
        f"{image.compatible:#x}, autoclear {image.autoclear:#x}")
    return rec


def assert_current(image: qcow2.Image, u: uuidlib.UUID | None, *, first: bool = True) -> None:
    """``u`` (None: none) is the current snapshot, in a record written as assert_record says;
    a reader of the spec (Image.current) sees the same."""
    assert_record(image, u, first=first)
    assert image.current == u, image.current_record()
    if u is not None:
        assert u in {sn.uuid for sn in image.snapshots}


def assert_no_record(image: qcow2.Image) -> None:
    """No current snapshot extension at all (nothing invented on an image without one)."""
    assert image.extension(qcow2.EXT_CURRENT_SNAPSHOT) == [], image.extensions
    assert image.current is None


def extras(image: qcow2.Image) -> dict[str, bytes]:
    return {sn.name: sn.extra for sn in image.snapshots}


def without_parent(extra: bytes) -> bytes:
    """Extra data with the parent field blanked (to compare all but a reparenting)."""
    return extra[: qcow2.EXTRA_PARENT] + extra[qcow2.EXTRA_PARENT + qcow2.UUID_LEN :]


def lineage_image(t: Tools, path: Path, names=("s1", "s2", "s3")) -> qcow2.Image:
    """A chain of snapshots made by ``t``; before snapshot i the first cluster holds 0x11*i."""
    create(t, path)
    for i, name in enumerate(names, 1):
        write_pattern(t, path, 0x11 * i)
        img(t, "snapshot", "-c", name, path)
    return qcow2.read(path)


def snapshot_data(t: Tools, path: Path, name: str, directory: Path) -> bytes:
    """The first 64 KiB of snapshot ``name`` (convert -l, shared: the image is not written)."""
    out = directory / f"{name}.raw"
    img(t, "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", name, path, out)
    data = out.read_bytes()[:65536]
    out.unlink()
    return data

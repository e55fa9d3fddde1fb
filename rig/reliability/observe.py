"""Run qemu-img (the patched build, Debian's 7.2) and the independent reader on an image, and
turn what they say into invariants.Observed. Every command has a timeout; a command killed
by a signal, timed out, or with a sanitizer report on stderr is a crash (``Result.crash``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.digest import sha256_file
from rig import commands, qcow2

from .invariants import CheckOutcome, ImageView, Observed, Snap

# the first frame of a sanitizer stack that is QEMU's own code (not libc, glib, libsanitizer)
_FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in (?!g_|__interceptor|malloc|calloc)(\w+) [^\n]*?"
                    r"(?:qemu|block|util|qapi)/")
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|"
                       r"runtime error: |SUMMARY: UndefinedBehaviorSanitizer")
DEBIAN_IMG = "/usr/bin/qemu-img"


@dataclass(frozen=True)
class Tool:
    """One QEMU's qemu-img and qemu-io."""

    label: str  # "patched", "stock", "qemu-img 7.2"
    img: str
    io: str | None = None


@dataclass(frozen=True)
class Result(commands.Result):
    """A command's result (rig/commands.py) and what makes it a crash."""

    @property
    def crash(self) -> str | None:
        """Why this run is a crash (a signal, a timeout, a sanitizer report), else None."""
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f}s: {shlex.join(self.argv)}"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}: {shlex.join(self.argv)}"
        m = SANITIZER.search(self.stderr)
        if m:
            return f"sanitizer report ({m.group(0).strip()}): {shlex.join(self.argv)}"
        return None

    def crash_text(self, label: str) -> str | None:
        """``label``: the crash, the first QEMU function of a sanitizer report's stack, and
        the last lines of stderr (the assertion, the report's summary)."""
        if not self.crash:
            return None
        tail = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()][-3:]
        frame = _FRAME.search(self.stderr)
        where = f" in {frame.group(1)}" if frame else ""
        if "Marking image as corrupt" in self.stderr:
            where += " (after qcow2 marked the image corrupt)"
        return f"{label}: {self.crash}{where} {' / '.join(tail)}".strip()

    def first_lines(self, n: int = 3) -> str:
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        return " / ".join(lines[:n])


@dataclass
class Runner:
    """Runs commands with a timeout; keeps the last ``keep`` of them for failure reports."""

    timeout: float = 30.0
    keep: int = 40
    history: list[Result] = field(default_factory=list)
    count: int = 0

    def run(self, argv: list[str], timeout: float | None = None,
            env: dict | None = None) -> Result:
        self.count += 1
        ran = commands.run(argv, timeout=timeout or self.timeout,
                           env=None if env is None else {**os.environ, **env})
        res = Result(ran.argv, ran.returncode, ran.stdout, ran.stderr, ran.seconds)
        self.history.append(res)
        del self.history[: -self.keep]
        return res

    def transcript(self, last: int = 12) -> str:
        out = []
        for r in self.history[-last:]:
            out.append(f"$ {shlex.join(r.argv)}\n{r.output.rstrip()}\n# exit {r.returncode}")
        return "\n".join(out) + "\n"


def read_data(run: Runner, tool: Tool, image: Path, scratch: Path,
              snapshot_id: str | None = None) -> tuple[str | None, Result]:
    """sha256 of what ``image`` (or its snapshot ``snapshot_id``) reads, by convert to raw."""
    raw = scratch / f"read-{os.getpid()}.raw"
    argv = [tool.img, "convert", "-f", "qcow2", "-O", "raw"]
    if snapshot_id is not None:
        argv += ["-l", f"snapshot.id={snapshot_id}"]
    res = run.run([*argv, str(image), str(raw)])
    try:
        return (sha256_file(raw) if res.returncode == 0 else None), res
    finally:
        raw.unlink(missing_ok=True)


def view_of(image: qcow2.Image, data: dict[str, str | None], active: str | None) -> ImageView:
    snaps = tuple(Snap(s.id, s.name, s.uuid, s.parent, data.get(s.id), s.vm_state_size)
                  for s in image.snapshots)
    cur = image.current_record()
    return ImageView(snaps, active, cur.state.value, cur.uuid)


def observe(run: Runner, image: Path, patched: Tool, peers: list[Tool], scratch: Path,
            *, read: bool = True, probe: bool = True) -> Observed:
    """Everything invariants.verify needs about ``image``: it is opened and checked by
    ``patched`` and each of ``peers``, read by the independent reader, and (``read``) each
    snapshot and the active layer read back by ``patched``'s qemu-img convert. With
    ``probe``, an image that check finds inconsistent is written to (probe_write)."""
    obs = Observed(view=None)
    opened = False
    for tool in [patched, *peers]:
        res = run.run([tool.img, "info", "-f", "qcow2", "--output=json", str(image)])
        if res.crash:
            obs.hangs.append(res.crash)
        if res.returncode != 0:
            obs.opens[tool.label] = res.first_lines()
            continue
        obs.opens[tool.label] = None
        opened |= tool is patched
        try:
            info = json.loads(res.stdout)
            obs.listed[tool.label] = [s["name"] for s in info.get("snapshots", [])]
        except (ValueError, KeyError, TypeError) as exc:
            obs.opens[tool.label] = f"info --output=json is not JSON: {exc}"
        res = run.run([tool.img, "check", "-f", "qcow2", str(image)])
        if res.crash:
            obs.hangs.append(res.crash)
        obs.checks[tool.label] = check_outcome(res, cluster_size(image))
    try:
        img = qcow2.read(image)
    except Exception as exc:  # noqa: BLE001 - any garbage the reader chokes on is reported
        obs.reader_error = f"{type(exc).__name__}: {exc}"
        return obs
    data: dict[str, str | None] = {}
    active = None
    if read and opened:
        for s in img.snapshots:
            digest, res = read_data(run, patched, image, scratch, s.id)
            if res.crash:
                obs.hangs.append(res.crash)
            if digest is None:
                obs.read_errors.append(f"snapshot {s.name}: {res.first_lines()}")
            data[s.id] = digest
        active, res = read_data(run, patched, image, scratch)
        if res.crash:
            obs.hangs.append(res.crash)
        if active is None:
            obs.read_errors.append(f"active layer: {res.first_lines()}")
    obs.view = view_of(img, data, active)
    if probe and read and opened and any(c.code != 0 for c in obs.checks.values()):
        obs.probe_errors = probe_write(run, image, patched, scratch, obs.view)
    return obs


def probe_write(run: Runner, image: Path, patched: Tool, scratch: Path,
                view: ImageView) -> list[str]:
    """What `qemu-img check` calls an inconsistency is harmless when no data is at risk: on
    a copy, the guest overwrites its whole disk; every snapshot must still read what it
    read before, and check must find nothing that puts data at risk."""
    copy = scratch / f"probe-{os.getpid()}.qcow2"
    shutil.copyfile(image, copy)
    errors = []
    try:
        size = json.loads(run.run([patched.img, "info", "--output=json", str(copy)]).stdout
                          or "{}").get("virtual-size", 0)
        res = run.run([patched.io, "-f", "qcow2", "-c", f"write -P 0x5a 0 {size}", str(copy)])
        if res.crash:
            errors.append(res.crash)
        if res.returncode != 0:
            return errors + [f"the guest cannot write to it: {res.first_lines()}"]
        for s in view.snapshots:
            digest, r = read_data(run, patched, copy, scratch, s.id)
            if r.crash:
                errors.append(r.crash)
            if s.data is not None and digest != s.data:
                errors.append(f"snapshot {s.name} changed when the guest wrote to the disk "
                              "(a cluster shared with it was written in place)")
        chk = check_outcome(run.run([patched.img, "check", "-f", "qcow2", str(copy)]),
                            cluster_size(copy))
        if chk.danger:
            more = f" (+{len(chk.danger) - 2} more)" if len(chk.danger) > 2 else ""
            errors.append("check after the guest wrote: " + " / ".join(chk.danger[:2]) + more)
    finally:
        copy.unlink(missing_ok=True)
    return errors


def cluster_size(image: Path) -> int:
    try:
        with open(image, "rb") as fh:
            head = fh.read(24)
        bits = struct.unpack_from(">I", head, 20)[0]
        return 1 << bits if 9 <= bits <= 21 else 65536
    except (OSError, struct.error):
        return 65536


# check's per-cluster lines (block/qcow2-refcount.c)
_COPIED = re.compile(r"ERROR OFLAG_COPIED (?:data|L2) cluster: .*?(?:l2_entry|l1_entry)="
                     r"([0-9a-fA-F]+) refcount=(\d+)")
_LEAK = re.compile(r"Leaked cluster (\d+) refcount=(\d+) reference=(\d+)")
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED_FLAG = 1 << 63


def classify_check(output: str, csize: int) -> tuple[list[str], int]:
    """(the ERROR lines of a check report that put data at risk, the number of harmless
    ones). Harmless: an OFLAG_COPIED mismatch where the cluster is not really shared: the
    flag is clear (a write copies the cluster needlessly), or it is set but the cluster has
    one reference (its refcount is too high: a leak, which the same report lists). At risk:
    the flag set on a cluster with more than one reference (a write would change a
    snapshot), a refcount below the references (a used cluster may be reallocated), and
    every other ERROR line."""
    references = {int(m.group(1)): int(m.group(3)) for m in _LEAK.finditer(output)}
    danger, harmless = [], 0
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("ERROR"):
            continue
        m = _COPIED.search(line)
        if m:
            entry, refcount = int(m.group(1), 16), int(m.group(2))
            refs = references.get((entry & OFFSET_MASK) // csize, refcount)
            if entry & COPIED_FLAG and refs > 1:
                danger.append(line)
            else:
                harmless += 1
            continue
        danger.append(line)
    return danger, harmless


def check_outcome(res: Result, csize: int) -> CheckOutcome:
    code = res.returncode if res.returncode is not None else -1
    danger, harmless = classify_check(res.output, csize)
    if code not in (0, 2, 3) and not danger:  # check itself failed: say why
        danger = [res.first_lines()]
    return CheckOutcome(code, check_summary(res.output), danger, harmless)


_CHECK_LINES = re.compile(r"(ERROR|Leaked|leaked|corrupt|errors were found|Warning)", re.I)


def check_summary(output: str) -> str:
    """The lines of a qemu-img check report that say what is wrong (at most 3)."""
    lines = [ln.strip() for ln in output.splitlines() if _CHECK_LINES.search(ln)]
    if not lines:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()][:1]
    more = f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""
    return " / ".join(lines[:3]) + more


def uuid_or_none(text: str | None) -> uuidlib.UUID | None:
    return uuidlib.UUID(text) if text else None

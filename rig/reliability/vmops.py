"""The VM write paths in qemu-system: HMP savevm / loadvm / delvm and QMP snapshot-save /
-load / -delete (jobs), on a disk that is a -blockdev qcow2 on blklogwrites (the crash
states) or on blkdebug (fault injection); the runstate after the operation; loadvm of an
image (the crash states of a save).

The VM (``Profile``): machine pc, TCG, 16 MiB of RAM, a 64 KiB firmware whose reset vector
halts the CPU (``stub_bios``: the VM is `running` yet does nothing, so every run of a path
is the same and so is the number of requests it makes), and 256 KiB of random bytes loaded
at 1 MiB. The fill differs per role: the VM that saved the pre-operation snapshot vm0
("prep"), the one that runs the operation ("op", which saves vm1), the one that loads a
state ("load"). After a load, a `pmemsave` of the filled range tells whose RAM the guest
holds: the loaded snapshot's saver's, or the load did not restore RAM.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp import QMPError

from rig import commands

from .invariants import Change, OpKind, runstate
from .observe import Result
from .vmkill import FILL_AT, VM, VMError, fill_file

PREP_TAG = "vm0"  # the VM snapshot the load paths load and the save paths start from
SAVED_BY = {PREP_TAG: "prep", "vm1": "op"}  # tag -> the role whose RAM it holds
SEEDS = {"prep": 101, "op": 102, "load": 103}
# what the prep writes to the active layer after vm0 (so that a load has a visible effect)
PREP_WRITE = (0x55, 3 << 20, 512 << 10)


@dataclass(frozen=True)
class Profile:
    ram_mb: int = 16
    fill_kb: int = 256


PROFILE = Profile()


@dataclass
class VMRun:
    """One operation in a VM: ``result`` as observe.Result (exit 0: it succeeded, 1: it
    failed cleanly with the error in stderr, negative: QEMU died of that signal, None: it
    hung), the runstate after it, whose RAM the guest held after it (loads), its problems
    (the runstate rules)."""

    result: Result
    status: str | None = None
    ram: str | None = None
    problems: list[str] | None = None
    reported: int | None = None  # what the command or job said: 0 done, 1 failed

    @property
    def crash(self) -> str | None:
        """QEMU died of a signal (with the last lines it printed) or hung, else None."""
        code = self.result.returncode
        if code is None:
            return f"QEMU hung: {self.result.stderr}"
        if code < 0:
            return f"QEMU killed by signal {-code}: {self.result.stderr}"
        return None


def stub_bios(work: Path) -> Path:
    """64 KiB of `hlt`, with `hlt; jmp .-1` at the reset vector (0xffff0: 16 bytes from
    the end), interrupts off at reset: the CPU halts for good."""
    path = work / "hlt-bios.bin"
    rom = bytearray(b"\xf4" * 65536)
    rom[-16:-13] = b"\xf4\xeb\xfd"
    if not path.exists() or path.read_bytes() != bytes(rom):
        path.write_bytes(bytes(rom))
    return path


def fill(work: Path, role: str, profile: Profile = PROFILE) -> Path:
    return fill_file(work / f"ram-{role}.bin", SEEDS[role], profile.fill_kb << 10)


def ram_owner(data: bytes, work: Path, profile: Profile = PROFILE) -> str | None:
    """The role whose fill ``data`` is, or None."""
    digest = hashlib.sha256(data).hexdigest()
    for role in SEEDS:
        if hashlib.sha256(fill(work, role, profile).read_bytes()).hexdigest() == digest:
            return role
    return None


def guest_ram(vm: VM, work: Path, profile: Profile = PROFILE) -> str | None:
    """The role whose fill the running guest holds (a `pmemsave` of the filled range), or
    None (another fill, or the dump failed)."""
    dump = work / "ram.dump"
    resp = vm.cmd("pmemsave", val=FILL_AT, size=profile.fill_kb << 10, filename=str(dump))
    if "error" in resp:
        return None
    try:
        return ram_owner(dump.read_bytes(), work, profile)
    finally:
        dump.unlink(missing_ok=True)


def blklogwrites_blockdev(image: Path, log: Path, node: str = "disk0") -> str:
    return (f"driver=qcow2,node-name={node},file.driver=blklogwrites,file.file.driver=file,"
            f"file.file.filename={image},file.log.driver=file,file.log.filename={log},"
            "file.log-sector-size=512,file.log-super-update-interval=1")


def blkdebug_blockdev(image: Path, rules: Path, node: str = "disk0") -> str:
    return (f"driver=qcow2,node-name={node},file.driver=blkdebug,file.config={rules},"
            f"file.image.driver=file,file.image.filename={image}")


def plain_blockdev(image: Path, node: str = "disk0") -> str:
    return f"driver=qcow2,node-name={node},file.driver=file,file.filename={image}"


def plain_blockdevs(images: list[Path]) -> tuple[str, ...]:
    """A -blockdev per image: nodes disk0, disk1, ..."""
    return tuple(plain_blockdev(p, f"disk{i}") for i, p in enumerate(images))


Disks = str | tuple[str, ...]  # the -blockdev of disk0, or those of disk0, disk1, ...


def vm_for(system: str, disk: Disks, work: Path, role: str,
           profile: Profile = PROFILE) -> VM:
    disks = (disk,) if isinstance(disk, str) else disk
    return VM(system, Path(), fill(work, role, profile), work, disk=disks[0],
              more_disks=tuple(disks[1:]), ram_mb=profile.ram_mb, bios=stub_bios(work),
              paused=False)


def hmp_failed(output: str) -> bool:
    """Whether an HMP command's output says it failed: hmp_handle_error() prints the error
    as "Error: ..."; a command that succeeded may still print warnings ("warning: ...",
    e.g. the series' "Failed to record the current snapshot" after a delete committed)."""
    return re.search(r"^Error: ", output, re.M) is not None


def _step(vm: VM, step: tuple, notes: list[str]) -> None:
    if step[0] == "hmp":
        out = vm.hmp(step[1]).strip()
        if hmp_failed(out):
            raise VMError(f"HMP {step[1]}: {out}")
        if out:
            notes.append(f"HMP {step[1]}: {out}")
        return
    vm.start_job(step[1], "op", **step[2])
    err = vm.wait_job("op")
    if err:
        raise VMError(f"{step[1]}: {err}")


def run_vm_op(system: str, disk: Disks, steps: tuple, work: Path, *, kind: OpKind | None = None,
              role: str = "op", load_tag: str | None = None,
              profile: Profile = PROFILE) -> VMRun:
    """The steps (("hmp", LINE) or ("job", COMMAND, ARGS)) in a running VM whose disk is
    ``disk`` (a -blockdev for node disk0), then query-status (a VM a failed load left in
    restore-vm is resumed with `cont`, and asked again), then quit (``disk``: a tuple for
    more disks: nodes disk1, ...). ``kind``: the
    operation's kind, for the runstate rules (None: not checked); ``load_tag``: the
    snapshot a load loads (its RAM is checked after a successful load)."""
    t0 = time.monotonic()
    vm = vm_for(system, disk, work, role, profile)
    argv = vm.argv(work / "qmp.sock")
    error, code, notes = "", 0, []
    status = ram = resumed = None
    log = work / "qemu.log"
    start = log.stat().st_size if log.exists() else 0  # this VM's lines follow
    try:
        vm.launch()
        for step in steps:
            _step(vm, step, notes)
    except VMError as exc:
        error, code = str(exc), 1
    except (OSError, EOFError, QMPError) as exc:  # the QMP connection broke: QEMU died
        error, code = f"QMP: {type(exc).__name__}: {exc}", 1
    alive = vm.proc is not None and vm.proc.poll() is None and vm.qmp is not None
    if alive:
        try:
            status = vm.status()
            if status == "restore-vm" and code == 1:  # a failed load: may the user go on?
                vm.cmd("cont")
                resumed = vm.status()
            if load_tag is not None and code == 0:
                ram = guest_ram(vm, work, profile)
        except (OSError, EOFError, QMPError, KeyError) as exc:
            error += f" (then query-status: {type(exc).__name__}: {exc})"
    vm.quit()
    reported = code
    exit_code = vm.proc.returncode if vm.proc is not None else None
    if exit_code is not None and exit_code < 0:  # QEMU died of a signal (also at quit)
        code = exit_code
        error += (" / " if error else "") + _log_tail(log, start)
    elif status is None and code == 0:
        code = None  # no answer and no clean exit: report as a hang
    problems = None
    if kind is not None and code in (0, 1):
        want = SAVED_BY.get(load_tag) if load_tag else None
        problems = runstate(Change(kind), code, status, ram, want, resumed)
    return VMRun(Result(argv, code, " / ".join(notes), error.strip(), time.monotonic() - t0),
                 status, ram, problems, reported)


def _log_tail(log: Path, start: int, n: int = 2) -> str:
    """The last lines QEMU printed in ``log`` from byte ``start`` on (command lines left
    out)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("$ ")]
    return " / ".join(lines[-n:])


def prepare_vm_snapshot(system: str, io: str, image: Path, work: Path,
                        profile: Profile = PROFILE, more: tuple[Path, ...] = ()) -> Path:
    """The load paths' and save paths' pre-operation image, made from ``image`` in place:
    savevm vm0 in the VM (role "prep", so vm0 holds the prep fill), then a write to the
    active layer (PREP_WRITE) so that loading vm0 changes what the disk reads. ``more``:
    further disks (disk1, ...) that vm0 is saved on too, and written to the same way."""
    images = [image, *more]
    run = run_vm_op(system, plain_blockdevs(images), (("hmp", f"savevm {PREP_TAG}"),), work,
                    role="prep", profile=profile)
    if run.result.returncode != 0:
        raise VMError(f"savevm {PREP_TAG} for the pre-operation image failed: "
                      f"{run.result.stderr}")
    pattern, off, length = PREP_WRITE
    for img in images:
        res = commands.run([io, "-f", "qcow2", "-c", f"write -P {pattern:#x} {off} {length}",
                            img], timeout=120)
        if res.returncode != 0:
            raise VMError(f"qemu-io write after savevm {PREP_TAG}: {res.stdout}{res.stderr}")
    return image


def load_check(system: str, image: Path, tag: str, work: Path,
               profile: Profile = PROFILE) -> tuple[VMRun, list[str]]:
    """loadvm ``tag`` (HMP) in a fresh VM (role "load") on a copy of ``image``: it must not
    crash, must load, the VM must run and hold the RAM ``tag`` saved. (The run, problems.)"""
    copy = work / "load.qcow2"
    shutil.copyfile(image, copy)
    try:
        run = run_vm_op(system, plain_blockdev(copy), (("hmp", f"loadvm {tag}"),), work,
                        kind=OpKind.APPLY, role="load", load_tag=tag, profile=profile)
    finally:
        copy.unlink(missing_ok=True)
    problems = []
    if run.crash:
        problems.append(f"loadvm {tag}: {run.crash}")
    elif run.result.returncode != 0:
        problems.append(f"loadvm {tag} failed: {run.result.stderr}")
    problems += [f"loadvm {tag}: {p}" for p in run.problems or []]
    return run, problems


def run_path(system: str, wp, disk: Disks, work: Path, profile: Profile = PROFILE) -> VMRun:
    """The VM path ``wp`` (scenario.WritePath with ``vm`` steps) on ``disk``, its runstate
    checked (and, for a load, the RAM of the snapshot it loads)."""
    tag = wp.change.target if wp.change.kind is OpKind.APPLY else None
    return run_vm_op(system, disk, wp.vm, work, kind=wp.change.kind, load_tag=tag,
                     profile=profile)


def pick_states(distinct: list[tuple], count: int | None, seed: int,
                new_tag: str) -> list[int]:
    """Indexes into ``distinct`` (explore.Replay.distinct: (state, names, failed)) of the
    states to load: all when ``count`` is None or not smaller, else ``count`` drawn with
    ``seed``, half among the states that list ``new_tag`` and half among the others (the
    rest of the count from the larger group when one is short), in order."""
    if count is None or count >= len(distinct):
        return list(range(len(distinct)))
    rnd = random.Random(seed)
    listed = [i for i, d in enumerate(distinct) if d[1] is not None and new_tag in d[1]]
    others = [i for i, d in enumerate(distinct) if i not in set(listed)]
    take = min(len(listed), count // 2)
    take_other = min(len(others), count - take)
    take = min(len(listed), count - take_other)
    return sorted(rnd.sample(listed, take) + rnd.sample(others, take_other))


@dataclass
class LoadResult:
    """loadvm of the crash states of a save: per state, the snapshot loaded and problems."""

    states: int = 0  # distinct crash states of the save
    runs: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [f"{r['state']}: {p}" for r in self.runs for p in r["problems"]]

    def to_json(self) -> dict:
        failed = [r for r in self.runs if r["problems"]]
        return {"states": self.states, "loaded": len(self.runs),
                "new_snapshot": sum(r["tag"] != PREP_TAG for r in self.runs),
                "previous": sum(r["tag"] == PREP_TAG for r in self.runs),
                "failed_runs": len(failed), "failures": failed[:20],
                "seconds": round(self.seconds, 1)}


def load_states(replay, new_tag: str, system: str, work: Path, count: int | None,
                seed: int) -> LoadResult:
    """For the distinct crash states of a save (``replay``: explore.Replay), chosen by
    pick_states: loadvm ``new_tag`` where the state lists it, else loadvm vm0 (the
    snapshot that was current before the save), each in a fresh VM (load_check)."""
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    out = LoadResult(len(replay.distinct))
    image = work / "load-state.qcow2"
    for i in pick_states(replay.distinct, count, seed, new_tag):
        state, names, _ = replay.distinct[i]
        tag = new_tag if names is not None and new_tag in names else PREP_TAG
        image.write_bytes(replay.image(state))
        _, problems = load_check(system, image, tag, work)
        out.runs.append({"state": state.label(), "tag": tag, "problems": problems})
    image.unlink(missing_ok=True)
    out.seconds = time.monotonic() - t0
    return out


# -- two disks: what a VM sees of one crash state per disk ----------------------------------------


def pick_pairs(replays, target: str, per_class: int | None, seed: int) -> list[tuple]:
    """Pairs (state of disk0, state of disk1) of distinct crash states to start a VM on
    (states the reader could not read, or that broke an invariant, are left out: they
    failed already). Always the "L" a sequential operation can leave (the operations act on
    disk0, flush, then on disk1): every state of disk0 with disk1 untouched, and the final
    state of disk0 with every state of disk1. Then, per class pair (whether each disk's
    state lists ``target``), ``per_class`` more pairs (None: all) drawn with ``seed``:
    pairs off the L too (a load, whose refcount updates of disk0 may reach the disk after
    disk1's writes; an order nobody promised)."""
    rnd = random.Random(seed)
    usable = [[st for st, names, failed in rep.distinct if names is not None and not failed]
              for rep in replays]
    initial = [cs0 for cs0 in usable[1] if cs0.boundary == 0 and not cs0.omitted]
    pairs = [(a, initial[0]) for a in usable[0]] if initial else []
    final0 = replays[0].final
    pairs += [(final0, b) for b in usable[1] if (final0, b) not in pairs]
    names = [{st: n for st, n, _ in rep.distinct} for rep in replays]
    for a_listed in (True, False):
        for b_listed in (True, False):
            combos = [(x, y) for x in usable[0] if (target in names[0][x]) == a_listed
                      for y in usable[1] if (target in names[1][y]) == b_listed]
            combos = [c for c in combos if c not in pairs]
            if per_class is not None and len(combos) > per_class:
                combos = rnd.sample(combos, per_class)
            pairs += combos
    return pairs


def _vm_snapshot(vm: VM, tag: str) -> dict | None:
    snaps = vm.cmd("query-vm-snapshots").get("return", {}).get("snapshots", [])
    return next((s for s in snaps if s.get("name") == tag), None)


def pair_check(system: str, images: list[Path], wp, listed: tuple[bool, bool], work: Path,
               identity: bool = True,
               profile: Profile = PROFILE) -> tuple[list[str], list[str]]:
    """Start a VM on both disks of a crash state pair (``listed``: whether each disk's
    state lists the operation's target) and check what a user sees:

    - query-vm-snapshots (``identity``: the series) lists the target as partial exactly
      when one disk has it;
    - a save (vm1): `loadvm vm1` loads (the op's RAM) when both disks have it, else fails
      with an error and the VM runs on, and `loadvm vm0` loads (the prep's RAM);
    - a load (vm0): `loadvm vm0` again loads it (the prep's RAM), however far the crashed
      load got on each disk;
    - a delete: `delvm TARGET` again leaves neither disk with it (or says it is not there
      when neither had it).

    Returns (what was checked, the problems: empty if none)."""
    problems: list[str] = []
    did: list[str] = []
    target = wp.change.target
    work.mkdir(parents=True, exist_ok=True)
    vm = vm_for(system, plain_blockdevs(images), work, "load", profile)
    try:
        vm.launch()
        if identity:
            data = vm.cmd("query-vm-snapshots").get("return", {})
            current = data.get("current")
            if current is not None and current not in {
                    x.get("uuid") for x in data.get("snapshots", [])}:
                problems.append(f"query-vm-snapshots: current {current} is not listed")
            snap = _vm_snapshot(vm, target)
            did.append(f"query-vm-snapshots: {target} "
                       + ("absent" if snap is None else f"partial={snap.get('partial')}"))
            if any(listed) and snap is None:
                problems.append(f"query-vm-snapshots does not list {target}")
            elif snap is not None and bool(snap.get("partial")) != (listed[0] != listed[1]):
                problems.append(f"query-vm-snapshots: {target} partial={snap.get('partial')} "
                                f"with disks listing it: {listed}")
        kind = wp.change.kind
        if kind is OpKind.CREATE:
            tries = [(target, SAVED_BY[target])] if all(listed) else []
            if not all(listed):
                out = vm.hmp(f"loadvm {target}")
                did.append(f"loadvm {target}: {out.strip()[:80] or 'ok'}")
                if not hmp_failed(out):
                    problems.append(f"loadvm {target} on disks listing it {listed} did "
                                    f"not fail: {out.strip()!r}")
                elif vm.status() != "running":  # refused before anything was loaded
                    problems.append(f"after the refused loadvm {target} the VM is "
                                    f"{vm.status()}")
                    vm.cmd("cont")
                tries = [(PREP_TAG, SAVED_BY[PREP_TAG])]
        elif kind is OpKind.APPLY:
            tries = [(target, SAVED_BY[target])]
        else:
            tries = []
            out = vm.hmp(f"delvm {target}")
            did.append(f"delvm {target}: {out.strip()[:80] or 'ok'}")
            if hmp_failed(out) and any(listed):
                problems.append(f"delvm {target} again failed: {out.strip()}")
            if identity and _vm_snapshot(vm, target) is not None:
                problems.append(f"{target} still listed after delvm {target} again")
        for tag, owner in tries:
            out = vm.hmp(f"loadvm {tag}")
            if hmp_failed(out):
                problems.append(f"loadvm {tag} failed: {out.strip()}")
                continue
            status = vm.status()
            if status != "running":
                problems.append(f"after loadvm {tag} the VM is {status}")
            ram = guest_ram(vm, work, profile)
            did.append(f"loadvm {tag}: {status}, RAM of {ram}")
            if ram != owner:
                problems.append(f"loadvm {tag}: the guest holds the RAM of {ram}, not of "
                                f"{owner}")
    except (VMError, OSError, EOFError, QMPError, KeyError) as exc:
        problems.append(f"QEMU: {type(exc).__name__}: {exc}")
    finally:
        vm.quit()
    code = vm.proc.returncode if vm.proc is not None else None
    if code is not None and code < 0:
        problems.append(f"QEMU died of signal {-code}: "
                        f"{_log_tail(work / 'qemu.log', 0)}")
    return did, problems


@dataclass
class PairResult:
    """The VM checks of crash-state pairs of a two-disk path."""

    states: tuple[int, int] = (0, 0)  # distinct crash states per disk
    runs: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [f"{r['pair']}: {p}" for r in self.runs for p in r["problems"]]

    def to_json(self) -> dict:
        failed = [r for r in self.runs if r["problems"]]
        classes: dict[str, int] = {}
        for r in self.runs:
            key = "+".join("listed" if x else "absent" for x in r["listed"])
            classes[key] = classes.get(key, 0) + 1
        return {"distinct_per_disk": list(self.states), "pairs": len(self.runs),
                "by_class": classes, "failed_pairs": len(failed), "failures": failed[:20],
                "examples": [r for r in self.runs if not r["problems"]][:4],
                "seconds": round(self.seconds, 1)}


def pair_states(replays, wp, system: str, work: Path, per_class: int | None, seed: int,
                identity: bool = True) -> PairResult:
    """pair_check on the pairs pick_pairs chooses of the two disks' distinct crash states
    (``replays``: explore's, one per disk)."""
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    out = PairResult((len(replays[0].distinct), len(replays[1].distinct)))
    names = [{st: n for st, n, _ in rep.distinct} for rep in replays]
    images = [work / "pair-disk0.qcow2", work / "pair-disk1.qcow2"]
    for a, b in pick_pairs(replays, wp.change.target, per_class, seed):
        listed = tuple(n[st] is not None and wp.change.target in n[st]
                       for n, st in zip(names, (a, b), strict=True))
        images[0].write_bytes(replays[0].image(a))
        images[1].write_bytes(replays[1].image(b))
        did, problems = pair_check(system, images, wp, listed, work, identity)
        out.runs.append({"pair": f"disk0 {a.label()} + disk1 {b.label()}",
                         "listed": list(listed), "did": did, "problems": problems})
    for p in images:
        p.unlink(missing_ok=True)
    out.seconds = time.monotonic() - t0
    return out

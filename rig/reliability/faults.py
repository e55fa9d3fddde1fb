"""Fault injection: run a write path with blkdebug failing one request, then check the
image with the invariants, knowing the exit code (invariants.verify(reported=...)).

Which requests: every write (1..W) and every flush (1..F) of the path, W and F counted in
the blklogwrites log of the same operation (it is deterministic), plus one past the last
as a control (nothing fails: the operation must succeed and its result be complete); with
``events``, also the first ``per_event`` occurrences of each qcow2 metadata event. A VM path
(scenario.VM_PATHS) runs in qemu-system (lib/vmops.py), its disk a -blockdev on blkdebug;
afterwards the VM must also run (invariants.runstate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import dmlog
from .blkdebug import QCOW2_EVENTS, Fault, rules
from .invariants import ImageView, verify
from .observe import Runner, Tool, observe
from .scenario import WritePath, blkdebug_opts, blklogwrites_opts


def count_requests(run: Runner, wp: WritePath, pre: Path, runner: Tool,
                   work: Path, system: str | None = None) -> tuple[int, int]:
    """(writes, flushes) the path makes, from a blklogwrites run on a copy of ``pre``
    (a VM path: in ``system``)."""
    image, log = work / "count.qcow2", work / "count.log"
    image.write_bytes(pre.read_bytes())
    log.write_bytes(b"")
    if wp.vm:
        from .vmops import blklogwrites_blockdev, run_path
        vmrun = run_path(system, wp, blklogwrites_blockdev(image, log), work)
        res, problems = vmrun.result, vmrun.problems or []
    else:
        res, problems = run.run(wp.argv(runner, blklogwrites_opts(image, log))), []
    if res.returncode != 0 or problems:
        raise RuntimeError(f"{wp.name} fails without a fault: {res.first_lines()} "
                           f"{' / '.join(problems)}")
    counts = dmlog.parse_file(log).counts()
    image.unlink()
    log.unlink()
    return counts["writes"], counts["flushes"]


def plan(writes: int, flushes: int, errnos: tuple[int, ...], events: bool,
         per_event: int = 3) -> list[Fault]:
    out = []
    for errno in errnos:
        out += [Fault("write", i, errno) for i in range(1, writes + 2)]
        out += [Fault("flush", i, errno) for i in range(1, flushes + 2)]
        if events:
            out += [Fault("event", i, errno, ev) for ev in QCOW2_EVENTS
                    for i in range(1, per_event + 1)]
    return out


def is_control(fault: Fault, writes: int, flushes: int) -> bool:
    """The index is past the last request of its kind: nothing is injected."""
    return (fault.kind == "write" and fault.index > writes) or \
        (fault.kind == "flush" and fault.index > flushes)


@dataclass
class FaultRun:
    fault: Fault
    exit: int | None
    message: str
    problems: list[str]
    control: bool  # the index is past the last request: nothing was injected

    def to_json(self) -> dict:
        return {"fault": self.fault.label(), "exit": self.exit, "message": self.message,
                "problems": self.problems}


@dataclass
class FaultsResult:
    path: str
    writes: int = 0
    flushes: int = 0
    runs: list[FaultRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[FaultRun]:
        return [r for r in self.runs if r.problems]

    def to_json(self) -> dict:
        failed_ops = sum(1 for r in self.runs if r.exit not in (0, None))
        return {"path": self.path, "writes": self.writes, "flushes": self.flushes,
                "runs": len(self.runs), "op_failed": failed_ops,
                "op_succeeded": len(self.runs) - failed_ops,
                "failed_runs": len(self.failures),
                "failures": [r.to_json() for r in self.failures[:20]],
                "seconds": round(self.seconds, 1)}


def inject(run: Runner, wp: WritePath, pre: Path, before: ImageView, faults: list[Fault],
           runner: Tool, patched: Tool, peers: list[Tool], work: Path, *,
           writes: int, flushes: int, identity: bool = True,
           keep: Path | None = None, system: str | None = None) -> FaultsResult:
    t0 = time.monotonic()
    out = FaultsResult(wp.name, writes, flushes)
    image, conf = work / "fault.qcow2", work / "rules.conf"
    for fault in faults:
        image.write_bytes(pre.read_bytes())
        conf.write_text(rules(fault))
        if wp.vm:  # the command's own answer, and whether QEMU survived until it quit
            from .vmops import blkdebug_blockdev, run_path
            vmrun = run_path(system, wp, blkdebug_blockdev(image, conf), work)
            op, reported, crash = vmrun.result, vmrun.reported, vmrun.crash
            problems = [f"the operation crashed: {crash}"] if crash else []
            problems += vmrun.problems or []
        else:
            op = run.run(wp.argv(runner, blkdebug_opts(image, conf)))
            reported = op.returncode
            problems = [f"the operation crashed: {op.crash}"] if op.crash else []
        control = is_control(fault, writes, flushes)
        obs = observe(run, image, patched, peers, work)
        problems += verify(before, wp.change, obs, reported=reported, final=control,
                           identity=identity)
        if control and op.returncode != 0:
            problems.append(f"no request failed, yet it exited {op.returncode}: "
                            f"{op.first_lines()}")
        out.runs.append(FaultRun(fault, op.returncode, op.first_lines(2), problems, control))
        if problems and keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            name = fault.label().replace(" ", "-").replace("#", "")
            (keep / f"{wp.name}-{name}.qcow2").write_bytes(image.read_bytes())
            (keep / f"{wp.name}-{name}.conf").write_text(rules(fault))
    image.unlink(missing_ok=True)
    out.seconds = time.monotonic() - t0
    return out


# -- two disks: a fault on the second disk, after the first one took the change -----------


def count_requests_disk(run: Runner, wp: WritePath, pres: list[Path], work: Path,
                        system: str, on: int) -> tuple[int, int]:
    """(writes, flushes) a two-disk VM path makes on disk ``on``, from a run with both
    disks on blklogwrites."""
    from .vmops import blklogwrites_blockdev, run_path
    images = [work / f"count-disk{i}.qcow2" for i in range(2)]
    logs = [work / f"count-disk{i}.log" for i in range(2)]
    try:
        for img, log, pre in zip(images, logs, pres, strict=True):
            img.write_bytes(pre.read_bytes())
            log.write_bytes(b"")
        vmrun = run_path(system, wp, tuple(
            blklogwrites_blockdev(img, log, f"disk{i}")
            for i, (img, log) in enumerate(zip(images, logs, strict=True))), work)
        if vmrun.result.returncode != 0 or vmrun.problems:
            raise RuntimeError(f"{wp.name} fails without a fault: "
                               f"{vmrun.result.first_lines()} "
                               f"{' / '.join(vmrun.problems or [])}")
        counts = dmlog.parse_file(logs[on]).counts()
    finally:
        for p in images + logs:
            p.unlink(missing_ok=True)
    return counts["writes"], counts["flushes"]


def inject_disk(run: Runner, wp: WritePath, pres: list[Path], befores: list[ImageView],
                faults: list[Fault], patched: Tool, peers: list[Tool], work: Path, *,
                on: int, writes: int, flushes: int, system: str, identity: bool = True,
                keep: Path | None = None) -> FaultsResult:
    """Each fault on disk ``on`` (0 or 1) of a two-disk VM path, the other disk plain. The
    operations act on disk0, then on disk1 (block/snapshot.c), so with a fault on disk1,
    disk0 may have taken the change already. Per disk, the image invariants; the answer
    holds for the disk acted on last (disk1: once it committed, the whole operation did,
    and a failure may not be reported), a success must be complete on both; a failed save
    leaves vm1 on neither disk (it deletes what it created); then, in a VM on copies of the
    two images, vmops.pair_check (a load or delete done again works, ...)."""
    from .invariants import OpKind
    from .vmops import blkdebug_blockdev, pair_check, plain_blockdev, run_path
    t0 = time.monotonic()
    out = FaultsResult(wp.name, writes, flushes)
    images, conf = [work / f"fault-disk{i}.qcow2" for i in range(2)], work / "rules.conf"
    copies = [work / "pair" / f"disk{i}.qcow2" for i in range(2)]
    (work / "pair").mkdir(parents=True, exist_ok=True)
    target = wp.change.target
    for fault in faults:
        for img, pre in zip(images, pres, strict=True):
            img.write_bytes(pre.read_bytes())
        conf.write_text(rules(fault))
        disks = tuple(blkdebug_blockdev(img, conf, f"disk{i}") if i == on else
                      plain_blockdev(img, f"disk{i}") for i, img in enumerate(images))
        vmrun = run_path(system, wp, disks, work)
        op, reported, crash = vmrun.result, vmrun.reported, vmrun.crash
        problems = [f"the operation crashed: {crash}"] if crash else []
        problems += vmrun.problems or []
        control = is_control(fault, writes, flushes)
        listed = []
        for i, (img, before) in enumerate(zip(images, befores, strict=True)):
            obs = observe(run, img, patched, peers, work)
            rep = reported if reported == 0 or i == len(images) - 1 else None
            problems += [f"disk{i}: {p}" for p in verify(before, wp.change, obs, reported=rep,
                                                         final=control, identity=identity)]
            listed.append(obs.view is not None and target in obs.view.names())
        if reported == 1 and wp.change.kind is OpKind.CREATE and any(listed):
            problems.append(f"the save failed, yet {target} is left on disks {listed}")
        if control and op.returncode != 0:
            problems.append(f"no request failed, yet it exited {op.returncode}: "
                            f"{op.first_lines()}")
        if not crash:
            for img, copy in zip(images, copies, strict=True):
                copy.write_bytes(img.read_bytes())
            _, again = pair_check(system, copies, wp, tuple(listed), work / "pair", identity)
            problems += [f"then in a VM: {p}" for p in again]
        out.runs.append(FaultRun(fault, op.returncode, op.first_lines(2), problems, control))
        if problems and keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            name = fault.label().replace(" ", "-").replace("#", "")
            for i, img in enumerate(images):
                (keep / f"{wp.name}-on-disk{on}-{name}-disk{i}.qcow2").write_bytes(
                    img.read_bytes())
            (keep / f"{wp.name}-on-disk{on}-{name}.conf").write_text(rules(fault))
    for img in images + copies:
        img.unlink(missing_ok=True)
    out.seconds = time.monotonic() - t0
    return out

"""The crash-state explorer: run a write path on blklogwrites, rebuild the image at every
crash state of its log (crashstates), and check each distinct one (invariants)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import crashstates as cs
from . import dmlog
from .invariants import ImageView, verify
from .observe import Runner, Tool, observe
from .scenario import WritePath, blklogwrites_opts


@dataclass
class Failure:
    state: str  # label
    problems: list[str]
    image: str | None = None  # where the image was kept

    def to_json(self) -> dict:
        return {"state": self.state, "problems": self.problems, "image": self.image}


@dataclass
class Replay:
    """What rebuilds any state of the explored log (not in the JSON): the pre-operation
    bytes, the log, and each distinct state with the snapshots the reader listed in it
    (None: unreadable) and whether it broke an invariant."""

    pre: bytes
    log: dmlog.Log
    distinct: list[tuple[cs.CrashState, list[str] | None, bool]] = field(default_factory=list)
    final: cs.CrashState | None = None  # every write persisted: what the operation left

    def image(self, state: cs.CrashState) -> bytes:
        return cs.image_bytes(self.pre, self.log, state)


@dataclass
class PathResult:
    path: str
    op_exit: int = 0
    log: dict = field(default_factory=dict)  # counts of the log's entries
    epochs: list[int] = field(default_factory=list)  # volatile writes per flush epoch
    states: int = 0  # crash states generated
    by_kind: dict = field(default_factory=dict)
    distinct: int = 0  # distinct images checked
    final_checked: int = 0  # states checked as the complete operation (per disk: 1 each)
    inconsistent: int = 0  # passed, but check found leaks or harmless flag mismatches
    check_exit2: int = 0  # of those, check exited 2 (only OFLAG_COPIED on unshared clusters)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    replay: Replay | None = None  # disk0's
    replays: list[Replay] = field(default_factory=list)  # one per disk

    def to_json(self) -> dict:
        return {"path": self.path, "op_exit": self.op_exit, "log": self.log,
                "epochs": self.epochs, "states": self.states, "by_kind": self.by_kind,
                "distinct_images": self.distinct, "final_checked": self.final_checked,
                "harmless_inconsistent": self.inconsistent,
                "check_exit2_harmless": self.check_exit2,
                "failed_states": len(self.failures),
                "failures": [f.to_json() for f in self.failures[:20]],
                "seconds": round(self.seconds, 1), "notes": self.notes}


def sample_keys(keys: list[str], count: int, seed: int) -> set[str]:
    """``count`` of the distinct ``keys`` (all if there are not more), drawn with ``seed``
    from them in their first-seen order."""
    distinct = list(dict.fromkeys(keys))
    if count >= len(distinct):
        return set(distinct)
    return set(random.Random(seed).sample(distinct, count))


def explore(run: Runner, wp: WritePath, pre: Path, before: ImageView, patched: Tool,
            peers: list[Tool], work: Path, bound: cs.Bound, keep: Path | None = None,
            max_states: int | None = None, identity: bool = True,
            runner: Tool | None = None, system: str | None = None,
            sample: int | None = None, seed: int = 0,
            more: tuple[tuple[Path, ImageView], ...] = ()) -> PathResult:
    """Explore ``wp`` run by ``runner`` (default ``patched``; a VM path by ``system``) on
    a copy of ``pre``, the image it starts from (scenario.prepare), whose view is
    ``before``; every state is observed with ``patched`` and ``peers``. ``identity``: the
    runner carries the series (invariants.verify). ``sample``: check only that many of the
    distinct images (drawn with ``seed``) and the final one (the smoke's long VM saves).
    ``more``: the other disks of a VM path (disk1, ...: their pre-operation image and its
    view); each disk is on its own blklogwrites, and each log is explored as disk0's is
    (its states labelled with the disk), with ``res.replays`` one per disk."""
    runner = runner or patched
    t0 = time.monotonic()
    res = PathResult(wp.name)
    work.mkdir(parents=True, exist_ok=True)
    disks = [(pre, before), *more]
    images = [work / ("op.qcow2" if i == 0 else f"op-disk{i}.qcow2") for i in range(len(disks))]
    logs = [work / ("op.log" if i == 0 else f"op-disk{i}.log") for i in range(len(disks))]
    pres = [p.read_bytes() for p, _ in disks]
    for img, log_path, data in zip(images, logs, pres, strict=True):
        img.write_bytes(data)
        log_path.write_bytes(b"")
    status_problems = []
    if wp.vm:  # qemu-system: HMP/QMP steps on the disks on blklogwrites
        from .vmops import blklogwrites_blockdev, run_path
        blockdevs = tuple(blklogwrites_blockdev(img, log_path, f"disk{i}")
                          for i, (img, log_path) in enumerate(zip(images, logs, strict=True)))
        vmrun = run_path(system, wp, blockdevs if len(blockdevs) > 1 else blockdevs[0], work)
        op, status_problems = vmrun.result, vmrun.problems or []
    else:
        op = run.run(wp.argv(runner, blklogwrites_opts(images[0], logs[0])))
    res.op_exit = op.returncode
    if op.crash or op.returncode not in (0, ) or status_problems:
        res.failures.append(Failure("the operation itself", [
            f"exit {op.returncode}: {op.first_lines()}" + (f" ({op.crash})" if op.crash else "")
            ] + status_problems))
        return res
    for i, (img, log_path, data, (_, view)) in enumerate(
            zip(images, logs, pres, disks, strict=True)):
        replay = _explore_log(res, run, wp, data, log_path, img, view, op.returncode,
                              patched, peers, work, bound, keep, max_states, identity,
                              sample, seed, f"disk{i} " if len(disks) > 1 else "")
        if replay is None:
            return res
        res.replays.append(replay)
    res.replay = res.replays[0]
    for p in images:
        p.unlink(missing_ok=True)
    res.seconds = time.monotonic() - t0
    return res


def _explore_log(res: PathResult, run: Runner, wp: WritePath, pre_bytes: bytes,
                 log_path: Path, image: Path, before: ImageView, op_exit: int, patched: Tool,
                 peers: list[Tool], work: Path, bound: cs.Bound, keep: Path | None,
                 max_states: int | None, identity: bool, sample: int | None, seed: int,
                 prefix: str) -> Replay | None:
    """Every crash state of one disk's log (``prefix`` labels its states), into ``res``;
    the disk's Replay, or None when the log does not replay to the image the operation
    left (a failure in ``res``)."""
    log = dmlog.parse_file(log_path)
    replay = Replay(pre_bytes, log)
    if not prefix:
        res.log = log.counts()
        res.epochs = [len(e.volatile) for e in cs.epochs(log)]
    else:
        res.log[prefix.strip()] = log.counts()
        res.epochs += [len(e.volatile) for e in cs.epochs(log)]
    after = image.read_bytes()
    full = cs.image_bytes(pre_bytes, log, cs.CrashState(len(log.entries)))
    # check -r truncates the file at the end (through the filter, not logged): compare
    # what both have
    common = min(len(full), len(after))
    if full[:common] != after[:common] or any(after[common:]):
        res.failures.append(Failure(f"{prefix}replay", [
            "replaying the whole log on the pre-operation image does not give the image the "
            "operation left: the log or its replay is wrong"]))
        return None
    seen: dict[str, list[str]] = {}
    chosen = None
    # the final state: every write persisted (the log ends with flushes, which change no
    # byte, so no state's boundary is the log's end)
    replay.final = cs.CrashState(cs.last_write_end(log))
    states = list(cs.states(log, bound))
    keys = [cs.digest(cs.image_bytes(pre_bytes, log, st)) for st in states]
    if sample is not None:
        chosen = sample_keys(keys, sample, seed)
        res.notes.append(f"{prefix}sampled: {len(chosen)} of the {len(set(keys))} distinct "
                         f"images checked (seed {seed}), and the final one")
    state_img = work / "state.qcow2"
    for st, key in zip(states, keys, strict=True):
        res.states += 1
        res.by_kind[st.kind] = res.by_kind.get(st.kind, 0) + 1
        final = st.boundary >= replay.final.boundary and not st.omitted and not st.torn
        if key in seen and not final:
            continue
        if chosen is not None and key not in chosen and not final:
            continue
        data = cs.image_bytes(pre_bytes, log, st)
        if max_states is not None and len(replay.distinct) >= max_states:
            res.notes.append(f"{prefix}stopped at {max_states} distinct images")
            break
        state_img.write_bytes(data)
        obs = observe(run, state_img, patched, peers, work)
        problems = verify(before, wp.change, obs, final=final,
                          reported=op_exit if final else None, identity=identity)
        res.final_checked += final
        if not problems and any(c.code != 0 for c in obs.checks.values()):
            res.inconsistent += 1
            if any(c.code == 2 for c in obs.checks.values()):
                res.check_exit2 += 1
        if key not in seen:
            res.distinct += 1
            replay.distinct.append(
                (st, obs.view.names() if obs.view else None, bool(problems)))
        seen[key] = problems
        if problems:
            kept = None
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                disk = f"-{prefix.strip()}" if prefix else ""
                kept_path = keep / f"{wp.name}{disk}-{res.distinct}.qcow2"
                kept_path.write_bytes(data)
                kept = str(kept_path)
            res.failures.append(Failure(f"{prefix}{st.label()}", problems, kept))
    state_img.unlink(missing_ok=True)
    return replay

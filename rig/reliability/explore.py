"""The crash-state explorer: run a write path on blklogwrites, rebuild the image at every
crash state of its log (crashstates), and check each distinct one (invariants)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import crashstates as cs
from . import dmlog
from .invariants import ImageView, verify
from .observe import Runner, Tool, observe
from .scenario import WritePath, blklogwrites_opts, prepare


@dataclass
class Failure:
    state: str  # label
    problems: list[str]
    image: str | None = None  # where the image was kept

    def to_json(self) -> dict:
        return {"state": self.state, "problems": self.problems, "image": self.image}


@dataclass
class PathResult:
    path: str
    op_exit: int = 0
    log: dict = field(default_factory=dict)  # counts of the log's entries
    epochs: list[int] = field(default_factory=list)  # volatile writes per flush epoch
    states: int = 0  # crash states generated
    by_kind: dict = field(default_factory=dict)
    distinct: int = 0  # distinct images checked
    inconsistent: int = 0  # passed, but check found leaks or harmless flag mismatches
    check_exit2: int = 0  # of those, check exited 2 (only OFLAG_COPIED on unshared clusters)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"path": self.path, "op_exit": self.op_exit, "log": self.log,
                "epochs": self.epochs, "states": self.states, "by_kind": self.by_kind,
                "distinct_images": self.distinct, "harmless_inconsistent": self.inconsistent,
                "check_exit2_harmless": self.check_exit2,
                "failed_states": len(self.failures),
                "failures": [f.to_json() for f in self.failures[:20]],
                "seconds": round(self.seconds, 1), "notes": self.notes}


def explore(run: Runner, wp: WritePath, base: Path, before: ImageView, patched: Tool,
            peers: list[Tool], work: Path, bound: cs.Bound, keep: Path | None = None,
            max_states: int | None = None, identity: bool = True,
            runner: Tool | None = None, system: str | None = None) -> PathResult:
    """Explore ``wp`` run by ``runner`` (default ``patched``) on a copy of ``base`` (whose
    view is ``before``); every state is observed with ``patched`` and ``peers``.
    ``identity``: the runner carries the series (invariants.verify)."""
    runner = runner or patched
    t0 = time.monotonic()
    res = PathResult(wp.name)
    work.mkdir(parents=True, exist_ok=True)
    pre = prepare(base, wp.prep, work / "pre.qcow2")
    pre_bytes = pre.read_bytes()
    image, log_path = work / "op.qcow2", work / "op.log"
    image.write_bytes(pre_bytes)
    log_path.write_bytes(b"")
    if wp.vm:  # qemu-system: HMP/QMP steps on the disk on blklogwrites
        from .vmkill import run_vm_op
        op = run_vm_op(system, image, log_path, wp.vm, work)
    else:
        op = run.run(wp.argv(runner, blklogwrites_opts(image, log_path)))
    res.op_exit = op.returncode
    if op.crash or op.returncode not in (0, ):
        res.failures.append(Failure("the operation itself", [
            f"exit {op.returncode}: {op.first_lines()}" + (f" ({op.crash})" if op.crash else "")]))
        return res
    log = dmlog.parse_file(log_path)
    res.log = log.counts()
    res.epochs = [len(e.volatile) for e in cs.epochs(log)]
    after = image.read_bytes()
    full = cs.image_bytes(pre_bytes, log, cs.CrashState(len(log.entries)))
    # check -r truncates the file at the end (through the filter, not logged): compare
    # what both have
    common = min(len(full), len(after))
    if full[:common] != after[:common] or any(after[common:]):
        res.failures.append(Failure("replay", [
            "replaying the whole log on the pre-operation image does not give the image the "
            "operation left: the log or its replay is wrong"]))
        return res
    seen: dict[str, list[str]] = {}
    state_img = work / "state.qcow2"
    for st in cs.states(log, bound):
        res.states += 1
        res.by_kind[st.kind] = res.by_kind.get(st.kind, 0) + 1
        data = cs.image_bytes(pre_bytes, log, st)
        key = cs.digest(data)
        final = st.boundary == len(log.entries) and not st.omitted and not st.torn
        if key in seen and not final:
            continue
        if max_states is not None and res.distinct >= max_states:
            res.notes.append(f"stopped at {max_states} distinct images")
            break
        state_img.write_bytes(data)
        obs = observe(run, state_img, patched, peers, work)
        problems = verify(before, wp.change, obs, final=final,
                          reported=op.returncode if final else None, identity=identity)
        if not problems and any(c.code != 0 for c in obs.checks.values()):
            res.inconsistent += 1
            if any(c.code == 2 for c in obs.checks.values()):
                res.check_exit2 += 1
        if key not in seen:
            res.distinct += 1
        seen[key] = problems
        if problems:
            kept = None
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                kept_path = keep / f"{wp.name}-{res.distinct}.qcow2"
                kept_path.write_bytes(data)
                kept = str(kept_path)
            res.failures.append(Failure(st.label(), problems, kept))
    for p in (state_img, image):
        p.unlink(missing_ok=True)
    res.seconds = time.monotonic() - t0
    return res

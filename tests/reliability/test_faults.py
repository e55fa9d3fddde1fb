"""Part 2: fault injection with blkdebug (rig/reliability/faults.py and blkdebug.py).

Every write and every flush of each qemu-img write path fails once (EIO; the full run also
ENOSPC and the first occurrences of qcow2's metadata events). Afterwards: the operation
failed cleanly (no crash) or succeeded, it never reports a failure after it committed nor
success without committing, nothing committed is lost, and check finds nothing that puts
data at risk (rig/reliability/invariants.py). The same for the VM paths (HMP savevm / loadvm
/ delvm, QMP snapshot-save / -load / -delete in qemu-system, rig/reliability/vmops.py),
where the VM must also run afterwards (a failed load may leave it in restore-vm) and a load
must restore the RAM the snapshot saved; the smoke injects into one of each kind
(hmp-savevm, qmp-snapshot-load, hmp-delvm), at every index too.
"""

from __future__ import annotations

import pytest

from rig.reliability import known
from rig.reliability.faults import (
    count_requests,
    count_requests_disk,
    inject,
    inject_disk,
    plan,
)
from rig.reliability.modes import mode_of
from rig.reliability.observe import observe
from rig.reliability.scenario import BY_NAME, PATHS, prepare, prepare_disks


def pytest_generate_tests(metafunc):
    if "wp" not in metafunc.fixturenames:
        return
    mode = mode_of(metafunc.config)
    paths = [*PATHS, *(BY_NAME[n] for n in mode.fault_vm_paths)]
    cases = [pytest.param(b, p, None, id=f"{b}-{p.name}") for b in mode.fault_builds
             for p in paths]
    # two disks: the fault on disk1 (disk0 may have taken the change) and on disk0
    cases += [pytest.param("patched", BY_NAME[n], on, id=f"patched-{n}-on-disk{on}")
              for n in mode.fault_2disk_paths for on in (1, 0)]
    metafunc.parametrize("build,wp,on", cases)


def test_faults(build, wp, on, mode, tools, bases, run, test_dir, scratch, summary, settle):
    base = bases()
    runner = tools.build(build)
    system = str(tools.systems(build))
    if wp.disks == 2:
        _faults_2disks(build, wp, on, mode, tools, base, run, test_dir, scratch, summary,
                       settle, system)
        return
    pre = prepare(base.path, wp.prep, scratch / "pre.qcow2", system=str(tools.system),
                  io=tools.patched.io)
    before = base.view if not wp.prep else \
        observe(run, pre, tools.patched, [tools.debian], scratch).view
    writes, flushes = count_requests(run, wp, pre, runner, scratch, system=system)
    faults = plan(writes, flushes, mode.fault_errnos, mode.fault_events)
    result = inject(run, wp, pre, before, faults, runner, tools.patched, [tools.debian],
                    scratch, writes=writes, flushes=flushes, identity=build == "patched",
                    keep=test_dir / "failed-runs", system=system)
    _settle(result, wp, build, summary, settle, {"vm": bool(wp.vm)}, "")


def _faults_2disks(build, wp, on, mode, tools, base, run, test_dir, scratch, summary, settle,
                   system):
    """A two-disk VM path with every fault on disk ``on`` (faults.inject_disk)."""
    pres = prepare_disks(base.path, wp.prep, [scratch / f"pre-disk{i}.qcow2" for i in (0, 1)],
                         system=str(tools.system), io=tools.patched.io)
    befores = [observe(run, p, tools.patched, [tools.debian], scratch).view for p in pres]
    writes, flushes = count_requests_disk(run, wp, pres, scratch, system, on)
    faults = plan(writes, flushes, mode.fault_errnos, mode.fault_events)
    result = inject_disk(run, wp, pres, befores, faults, tools.patched, [tools.debian],
                         scratch, on=on, writes=writes, flushes=flushes, system=system,
                         identity=build == "patched", keep=test_dir / "failed-runs")
    _settle(result, wp, build, summary, settle, {"vm": True, "disks": 2,
                                                 "fault_on": f"disk{on}"},
            f"on disk{on} ", key=f"{build}/{wp.name}/on-disk{on}")


def _settle(result, wp, build, summary, settle, extra: dict, where: str,
            key: str | None = None) -> None:
    """Record the path's results and end the test (the settle fixture)."""
    data = result.to_json()
    data.update(build=build, **extra)
    problems = [f"{r.fault.label()} (exit {r.exit}): {p}" for r in result.failures
                for p in r.problems]
    part = f"faults:{wp.name}"
    ids = known.classify(part, problems) if problems else None
    data["known_bugs"] = sorted(ids) if ids else []
    summary.add("faults", key or f"{build}/{wp.name}", data)
    settle(part, problems, f"{len(result.failures)} of {len(result.runs)} injected faults "
                           f"{where}in {wp.name} ({build}) break an invariant", build)

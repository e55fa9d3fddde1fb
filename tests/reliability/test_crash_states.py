"""Part 1: the crash-state explorer (rig/reliability/explore.py; crashstates.py there for the
bound).

Each write path of qemu-img (snapshot -c/-a/-d, check -r all) runs once on the pre-operation
image through blklogwrites; every crash state of its log is rebuilt on a copy of that image
and checked (rig/reliability/invariants.py). The smoke explores the patched build with 64
KiB clusters, and HMP delvm and QMP snapshot-delete in its qemu-system; the full run also
the stock build (which failures are upstream's), 4 KiB clusters, and every VM path
(rig/reliability/vmops.py: HMP savevm / loadvm / delvm, QMP snapshot-save / -load /
-delete). The smoke also explores HMP loadvm, and QMP snapshot-save on a seeded sample of
its distinct images.

A save's crash states are also loaded: in each distinct state, a fresh VM loads the new
snapshot where the state lists it, else the snapshot that was current before the save (vm0);
it must load, the VM run and hold the RAM that snapshot saved. The smoke loads a seeded
sample (Mode.loadvm_states), the full run every distinct state.
"""

from __future__ import annotations

import pytest

from rig.reliability import crashstates as cs
from rig.reliability.explore import explore
from rig.reliability.invariants import OpKind
from rig.reliability.modes import mode_of
from rig.reliability.observe import observe
from rig.reliability.scenario import BY_NAME, PATHS, prepare, prepare_disks
from rig.reliability.vmops import load_states, pair_states

BOUND = cs.Bound()


def pytest_generate_tests(metafunc):
    """The smoke explores what its mode names; --full adds the rest."""
    if "wp" not in metafunc.fixturenames:
        return
    mode = mode_of(metafunc.config)
    cases = [pytest.param(b, c, p, id=f"{b}-{c // 1024}k-{p.name}")
             for b in mode.crash_builds for c in mode.crash_cluster_sizes for p in PATHS]
    cases += [pytest.param("patched", 65536, BY_NAME[n], id=f"patched-64k-{n}")
              for n in mode.crash_vm_paths + mode.crash_2disk_paths]
    metafunc.parametrize("build,cluster_size,wp", cases)


def test_crash_states(build, cluster_size, wp, mode, tools, bases, run, test_dir, scratch,
                      summary, settle):
    base = bases(cluster_size)
    before = base.view
    more = ()
    if wp.disks > 1:
        pre, *others = prepare_disks(base.path, wp.prep, [scratch / f"prep-disk{i}.qcow2"
                                                          for i in range(wp.disks)],
                                     system=str(tools.system), io=tools.patched.io)
        views = [observe(run, p, tools.patched, [tools.debian], scratch).view
                 for p in (pre, *others)]
        before, more = views[0], tuple(zip(others, views[1:], strict=True))
    else:
        pre = prepare(base.path, wp.prep, scratch / "prep.qcow2", system=str(tools.system),
                      io=tools.patched.io)
        if wp.prep:  # what the path starts from differs from the base: observe it
            before = observe(run, pre, tools.patched, [tools.debian], scratch).view
    result = explore(run, wp, pre, before, tools.patched, [tools.debian], scratch,
                     BOUND, keep=test_dir / "failed-states", identity=build == "patched",
                     runner=tools.build(build), system=str(tools.system),
                     sample=mode.crash_vm_sample.get(wp.name) if wp.vm else None,
                     seed=mode.seed, more=more)
    data = result.to_json()
    data.update(build=build, cluster_size=cluster_size, bound=BOUND.describe())
    problems = [f"{f.state}: {p}" for f in result.failures for p in f.problems]
    if wp.disks == 2 and len(result.replays) == 2:
        pairs = pair_states(result.replays, wp, str(tools.system), scratch / "pairs",
                            mode.pairs_per_class, mode.seed, identity=build == "patched")
        data["pairs"] = pairs.to_json()
        problems += [f"two disks in a VM: {p}" for p in pairs.problems]
    if wp.vm and wp.disks == 1 and wp.change.kind is OpKind.CREATE and \
            result.replay is not None:
        loads = load_states(result.replay, wp.change.target, str(tools.system),
                            scratch / "load", mode.loadvm_states, mode.seed)
        data["loadvm"] = loads.to_json()
        problems += [f"loadvm of a crash state: {p}" for p in loads.problems]
    part = f"crash:{wp.name}"
    ids = None
    if problems:
        from rig.reliability import known
        ids = known.classify(part, problems)
    data["known_bugs"] = sorted(ids) if ids else []
    summary.add("crash", f"{build}/{cluster_size // 1024}k/{wp.name}", data)
    settle(part, problems, f"{len(result.failures)} of {result.distinct} distinct crash "
                           f"states of {wp.name} ({build}) break an invariant", build)

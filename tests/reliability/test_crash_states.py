"""Part 1: the crash-state explorer (rig/reliability/explore.py; crashstates.py there for
the bound).

Each write path of qemu-img (snapshot -c/-a/-d, check -r all) runs once on the
pre-operation image through blklogwrites; every crash state of its log is rebuilt on a copy
of that image and checked (rig/reliability/invariants.py). The smoke explores the patched
build with 64 KiB clusters, and HMP delvm and QMP snapshot-delete in its qemu-system; the
full run also the stock build (which failures are upstream's), 4 KiB clusters, and HMP savevm and
QMP snapshot-save (their VM state makes an epoch of 35 writes: about 700 distinct images
each).
"""

from __future__ import annotations

import pytest

from rig.reliability import crashstates as cs
from rig.reliability.explore import explore
from rig.reliability.modes import mode_of
from rig.reliability.observe import observe
from rig.reliability.scenario import BY_NAME, PATHS, prepare

BOUND = cs.Bound()


def pytest_generate_tests(metafunc):
    """The smoke explores what its mode names; --full adds the rest."""
    if "wp" not in metafunc.fixturenames:
        return
    mode = mode_of(metafunc.config)
    cases = [pytest.param(b, c, p, id=f"{b}-{c // 1024}k-{p.name}")
             for b in mode.crash_builds for c in mode.crash_cluster_sizes for p in PATHS]
    cases += [pytest.param("patched", 65536, BY_NAME[n], id=f"patched-64k-{n}")
              for n in mode.crash_vm_paths]
    metafunc.parametrize("build,cluster_size,wp", cases)


def test_crash_states(build, cluster_size, wp, tools, bases, run, test_dir, scratch, summary,
                      settle):
    base = bases(cluster_size)
    before = base.view
    if wp.prep:  # what the path starts from differs from the base: observe it
        pre = prepare(base.path, wp.prep, scratch / "prep.qcow2")
        before = observe(run, pre, tools.patched, [tools.debian], scratch).view
    result = explore(run, wp, base.path, before, tools.patched, [tools.debian], scratch,
                     BOUND, keep=test_dir / "failed-states", identity=build == "patched",
                     runner=tools.build(build), system=str(tools.system))
    data = result.to_json()
    data.update(build=build, cluster_size=cluster_size, bound=BOUND.describe())
    problems = [f"{f.state}: {p}" for f in result.failures for p in f.problems]
    part = f"crash:{wp.name}"
    ids = None
    if problems:
        from rig.reliability import known
        ids = known.classify(part, problems)
    data["known_bugs"] = sorted(ids) if ids else []
    summary.add("crash", f"{build}/{cluster_size // 1024}k/{wp.name}", data)
    settle(part, problems, f"{len(result.failures)} of {result.distinct} distinct crash "
                           f"states of {wp.name} ({build}) break an invariant")

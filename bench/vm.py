"""VM benchmarks, patched beside stock, on the rig's own VM launcher.

- a VM usable after start: QEMU launched with -incoming from the cached booted state
  (rig/bootcache.py, as every test's `vm`), until the restored guest printed a
  heartbeat (asked for at once over the console: VM.heartbeat), median over N starts
  alternating between the builds, with where the time goes (monitors connected, state
  loaded and guest resumed, heartbeat seen);
- savevm / loadvm of the booted test guest (HMP, on the paused VM), median of a few rounds;
- query-vm-snapshots with N snapshots on 2 qcow2 devices (patched only):
  the snapshots are made with savevm on a paused 16 MiB machine, so making
  1,000 of them costs seconds, not the guest's RAM each time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import images  # noqa: E402
from harness.core.errors import BuildMissing, EnvironmentProblem  # noqa: E402
from rig import bootcache, builds  # noqa: E402
from rig import errors as rig_errors  # noqa: E402
from rig.machine import DEFAULT_PROFILE, VM, accel_from_env  # noqa: E402


def _build(name: str) -> builds.QemuBuild:
    try:
        return builds.resolve(name)
    except rig_errors.BuildMissing as exc:
        raise BuildMissing(str(exc), hint="run `python3 build.py`") from exc


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.monotonic()
        fn()
        times.append(time.monotonic() - start)
    return statistics.median(times)


def savevm_loadvm(guest, workdir: Path, reps: int) -> dict[str, dict[str, float]]:
    """Both builds' VMs run at the same time and the operations alternate
    between them, so both see the same machine load; medians per operation."""
    vms = {}
    times: dict[str, dict[str, list[float]]] = {}
    try:
        for name in ("patched", "stock"):
            build = _build(name)
            (workdir / name).mkdir(parents=True, exist_ok=True)
            disk = images.make_disk(build.img, workdir / name / "disk.qcow2", "qcow2", "64M")
            vm = VM(build, guest, workdir / name, disk=disk, name=f"bench-{name}")
            vms[name] = vm.launch()
            times[name] = {"savevm": [], "loadvm": []}
        for vm in vms.values():
            vm.console.wait_for(guest.ready_marker, timeout=180)
            vm.console.wait_counter(timeout=30)
        # ABBA: the build that goes first alternates, so neither always runs its operation
        # right after the other's (which leaves work behind: cache writeback, the guest
        # catching up)
        def rounds():
            for i in range(reps):
                order = list(vms.items())
                yield i, (order if i % 2 == 0 else order[::-1])

        # The guest writes and fsyncs its disk five times a second: each operation runs on
        # a paused VM (stop and cont untimed), so that it does not also time the drain of
        # whatever guest I/O happens to be in flight (up to a whole fsync, either build)
        def timed(vm, line: str) -> float:
            vm.hmp.cmd("stop")
            start = time.monotonic()
            vm.hmp.cmd(line, timeout=300)
            took = time.monotonic() - start
            vm.hmp.cmd("cont")
            return took

        for i, order in rounds():
            for name, vm in order:
                times[name]["savevm"].append(timed(vm, f"savevm b{i}"))
        for _, order in rounds():
            for name, vm in order:
                times[name]["loadvm"].append(timed(vm, "loadvm b0"))
    finally:
        for vm in vms.values():
            vm.shutdown()
    return {name: {op: statistics.median(v) for op, v in ops.items()}
            for name, ops in times.items()}


def query_vm_snapshots(guest, workdir: Path, n: int, reps: int = 20) -> float:
    build = _build("patched")
    workdir.mkdir(parents=True, exist_ok=True)
    second = images.make_disk(build.img, workdir / "disk1.qcow2", "qcow2", "16M")
    disk = images.make_disk(build.img, workdir / "disk0.qcow2", "qcow2", "16M")
    profile = replace(DEFAULT_PROFILE, memory="16M", nics=())
    extra = ("-S",
             "-blockdev", f"driver=file,filename={second},node-name=disk1-file",
             "-blockdev", "driver=qcow2,file=disk1-file,node-name=disk1")
    with VM(build, guest, workdir, disk=disk, profile=profile, name="bench-query",
            extra_args=extra) as vm:
        for i in range(n):
            vm.qmp.hmp(f"savevm q{i}")
        result = vm.qmp.cmd("query-vm-snapshots")
        assert len(result["snapshots"]) == n, len(result["snapshots"])
        assert all(sorted(d["node-name"] for d in s["devices"]) == ["disk0", "disk1"]
                   for s in result["snapshots"])
        return _median_time(lambda: vm.qmp.cmd("query-vm-snapshots"), reps)


def _guest():
    try:
        return images.ensure_guest(log=lambda m: None)
    except images.ImageError as exc:
        raise EnvironmentProblem(f"cannot build the test guest: {exc}",
                                 hint="run `python3 build.py images`") from exc


def fast_start(guest, workdir: Path, starts: int) -> dict[str, dict[str, list[float]]]:
    """{build: {"monitors"|"incoming"|"usable": [seconds per start]}}: ``starts`` fast
    starts per build, the builds alternating (ABBA), each VM with a fresh disk."""
    names = ("patched", "stock")
    entries = {name: bootcache.booted(_build(name), guest, workdir / f"boot-{name}",
                                      DEFAULT_PROFILE, accel_from_env()) for name in names}
    times: dict[str, dict[str, list[float]]] = {n: {"monitors": [], "incoming": [],
                                                    "usable": []} for n in names}
    try:
        for i in range(starts):
            for name in (names if i % 2 == 0 else names[::-1]):
                build = _build(name)
                directory = workdir / f"start-{name}-{i}"
                directory.mkdir(parents=True)
                disk = images.make_disk(build.img, directory / "disk.qcow2", "qcow2", "64M")
                vm = VM(build, guest, directory, disk=disk, incoming=entries[name].state)
                try:
                    start = time.monotonic()
                    vm.launch()
                    vm.heartbeat()
                    vm.timings["usable"] = time.monotonic() - start
                finally:
                    vm.shutdown()
                for key in times[name]:
                    times[name][key].append(vm.timings[key])
    finally:
        for entry in entries.values():
            entry.close()
    return times


def run_start(starts: int) -> list[dict]:
    guest = _guest()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        res = fast_start(guest, Path(tmp), starts)
    labels = {"monitors": "QMP and HMP connected", "incoming": "state loaded, guest resumed",
              "usable": "VM usable: a heartbeat after RESUME"}
    for key, label in labels.items():
        p, s = (res[b][key] for b in ("patched", "stock"))
        rows.append({"name": f"fast start: {label} (median of {starts}; min-max)",
                     "patched": f"{statistics.median(p) * 1000:.0f} ms "
                                f"({min(p) * 1000:.0f}-{max(p) * 1000:.0f})",
                     "stock": f"{statistics.median(s) * 1000:.0f} ms "
                              f"({min(s) * 1000:.0f}-{max(s) * 1000:.0f})",
                     "target": "<= 300 ms" if key == "usable" else ""})
    return rows


def run(n: int, reps: int) -> list[dict]:
    guest = _guest()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vm-") as tmp:
        res = savevm_loadvm(guest, Path(tmp) / "saveload", reps)
        for op in ("savevm", "loadvm"):
            p, s = res["patched"][op], res["stock"][op]
            rows.append({"name": f"{op} of the booted test guest (median of {reps})",
                         "patched": f"{p * 1000:.0f} ms", "stock": f"{s * 1000:.0f} ms",
                         "ratio": f"{p / s:.3f}", "target": "<= 1.05"})
        q = query_vm_snapshots(guest, Path(tmp) / "query", n)
        rows.append({"name": f"query-vm-snapshots, {n} snapshots on 2 devices (median)",
                     "patched": f"{q * 1000:.1f} ms", "target": "< 100 ms"})
    return rows

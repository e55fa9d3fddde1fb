"""Part 3: kill -9 of qemu-system during savevm and snapshot-save (rig/reliability/vmkill.py).

The kill points are drawn at random (seeded: --seed, default 13, so a run is reproducible)
from 0 to 1.2x the duration of an uninterrupted save of the same kind, so that some kills
land after the save completed. After each kill the image must meet the crash invariants
(rig/reliability/invariants.py, with the save as a snapshot create), and after a restart
of QEMU on it a new snapshot, if listed, must load (loadvm: its VM state is complete).
The smoke does a few runs, the full run >= 100 (--kill-runs).
"""

from __future__ import annotations

import random
import shutil
import time

from rig.reliability import known, vmkill
from rig.reliability.invariants import Change, OpKind, verify
from rig.reliability.observe import observe

TAG = "killed"


def test_kill_during_save(mode, tools, bases, require, run, test_dir, scratch, summary,
                          settle):
    base = bases()
    fill = vmkill.fill_file(scratch / "ram.bin", mode.seed)
    image = scratch / "vm.qcow2"
    firmware = tools.system.parent / "qemu-bundle" / "usr" / "local" / "share" / "qemu"
    if not (firmware / "bios-256k.bin").exists():
        require.missing(f"{firmware}/bios-256k.bin is missing: `python3 build.py` links the "
                        "firmware into the build")

    durations = {}
    for kind in vmkill.KINDS:  # calibration: an uninterrupted save of each kind
        shutil.copyfile(base.path, image)
        vm = vmkill.VM(str(tools.system), image, fill, test_dir).launch()
        try:
            durations[kind] = vmkill.timed_save(vm, kind, TAG)
        finally:
            vm.quit()

    rnd = random.Random(mode.seed)
    runs, problems, completed, absent = [], [], 0, 0
    t0 = time.monotonic()
    for i in range(mode.kill_runs):
        kind = vmkill.KINDS[i % len(vmkill.KINDS)]
        delay = rnd.uniform(0, 1.2 * durations[kind])
        shutil.copyfile(base.path, image)
        vm = vmkill.VM(str(tools.system), image, fill, test_dir).launch()
        hmp = None
        try:
            hmp = vmkill.start_save(vm, kind, TAG)
            time.sleep(delay)
        finally:
            vm.kill()
            if hmp is not None:
                hmp.close()
        obs = observe(run, image, tools.patched, [tools.debian], scratch)
        found = verify(base.view, Change(OpKind.CREATE, TAG), obs)
        new = obs.view.by_name(TAG) if obs.view else None
        if new is not None:
            completed += 1
            if new.vm_state_size == 0:
                found.append(f"{TAG} is listed without VM state")
            vm = vmkill.VM(str(tools.system), image, fill, test_dir).launch()
            try:
                out = vm.hmp(f"loadvm {TAG}")
                if out.strip():
                    found.append(f"after a restart, loadvm {TAG}: {out.strip()}")
            except vmkill.VMError as exc:
                found.append(f"after a restart, loadvm {TAG}: {exc}")
            finally:
                vm.quit()
        else:
            absent += 1
        label = f"run {i} ({kind}, kill after {delay * 1000:.0f} ms)"
        runs.append({"run": i, "kind": kind, "delay_ms": round(delay * 1000, 1),
                     "snapshot": "complete" if new is not None else "absent",
                     "record": obs.view.record if obs.view else None, "problems": found})
        problems += [f"{label}: {p}" for p in found]
        if found:
            keep = test_dir / "failed-runs"
            keep.mkdir(exist_ok=True)
            shutil.copyfile(image, keep / f"run-{i}.qcow2")
    data = {"runs": len(runs), "seed": mode.seed,
            "save_seconds": {k: round(v, 3) for k, v in durations.items()},
            "snapshot_complete": completed, "snapshot_absent": absent,
            "failed_runs": sum(1 for r in runs if r["problems"]),
            "seconds": round(time.monotonic() - t0, 1),
            "failures": [r for r in runs if r["problems"]][:20]}
    ids = known.classify("kill", problems) if problems else None
    data["known_bugs"] = sorted(ids) if ids else []
    summary.add("kill", "savevm+snapshot-save", data)
    settle("kill", problems, f"{data['failed_runs']} of {len(runs)} kill -9 runs break an "
                             "invariant")

"""libvirt manages a snapshot tree of the patched QEMU; after every step the image's tree
and current snapshot (read from the disk file by rig/qcow2.py) are libvirt's.

The scenario (rig/libvirt/scenario.py): nine snapshots made with reverts in between; deletes of an
inner snapshot, of the current one (a leaf, then one with a child), of a plain leaf and of a
root with children; a QEMU restart; one more snapshot. libvirt names snapshots, the image
tags them: the trees are compared by name, parents through the UUIDs in the qcow2 table
(SPEC.md §1), the current one through the image's current-snapshot record (valid only when
its table pointer matches the header). SPEC.md §1 reparents the children of a deleted
snapshot as libvirt does, so every difference is a failure, named per step; the scenario's
own model says which side is wrong. The whole table lands in steps.txt and libvirt.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import images
from rig import qcow2
from rig.console import Console
from rig.libvirt import lineage, scenario
from rig.libvirt.daemon import Daemon
from rig.libvirt.domain import DomainSpec, domain_xml
from rig.libvirt.summary import table
from rig.libvirt.virsh import CommandLog, Virsh, VirshError, monitor_commands, qemu_starts
from rig.machine import DEFAULT_PROFILE

DOMAIN = "snaptree"
BOOT_TIMEOUT = 120.0


def run_step(virsh: Virsh, step: scenario.Step, console: Console) -> None:
    if step.op == "create":
        virsh("snapshot-create-as", DOMAIN, step.name)
    elif step.op == "revert":
        virsh("snapshot-revert", DOMAIN, step.name)
    elif step.op == "delete":
        virsh("snapshot-delete", DOMAIN, step.name)
    elif step.op == "restart":
        virsh("destroy", DOMAIN)
        mark = console.mark()
        virsh("start", DOMAIN)
        console.wait_counter(since=mark, timeout=BOOT_TIMEOUT)
    else:
        raise ValueError(step.op)


def test_snapshot_tree(place, patched, guest, test_dir, workspace, steps_summary):
    ws, where = workspace, place.place
    log = CommandLog(test_dir / "commands.log")
    disk = images.make_disk(patched.img, ws / "disk.qcow2", "qcow2", "64M")
    console_path = ws / "console.log"
    xml = domain_xml(DomainSpec(
        name=DOMAIN, emulator=str(patched.system), kernel=str(guest.kernel),
        initrd=str(guest.initrd), cmdline=guest.cmdline, disk=where.inside(disk),
        console=where.inside(console_path)))
    (ws / "domain.xml").write_text(xml)
    # what the emulator, its qemu-bundle links and the guest are (a chroot sees them too)
    firmware = [Path(d) for d in DEFAULT_PROFILE.firmware_dirs if Path(d).is_dir()]
    shared = [patched.build_dir, patched.source_dir, guest.directory, *firmware]
    daemon = Daemon(where, ws, shared=shared, logdir=test_dir, log=log)
    rows: list[dict] = []
    facts: dict = {}
    t_start = time.monotonic()
    try:
        virsh = daemon.start()
        console = Console(console_path, alive=daemon.running, directory=test_dir)
        facts["daemon_ready_seconds"] = round(daemon.seconds_to_ready, 2)
        virsh("define", where.inside(ws / "domain.xml"))
        t0 = time.monotonic()
        virsh("start", DOMAIN)
        console.wait_counter(timeout=BOOT_TIMEOUT)
        facts["boot_seconds"] = round(time.monotonic() - t0, 2)
        seen = (0, 0)
        steps = (scenario.Step("start", None, "the domain boots: no snapshots yet"),
                 *scenario.STEPS)
        wants = [lineage.Tree({}, None), *scenario.expected()]
        for n, (step, want) in enumerate(zip(steps, wants, strict=True)):
            t0 = time.monotonic()
            row = {"n": n, "step": step.label, "why": step.why, "status": "error",
                   "problems": ["did not finish: see the test's exception"], "commands": []}
            rows.append(row)
            log.note(f"step {n}: {step.label} ({step.why})")
            try:
                if step.op != "start":
                    run_step(virsh, step, console)
                image = lineage.from_image(qcow2.read(disk))
                libvirt = virsh.read_tree(DOMAIN)
            except (VirshError, ValueError) as exc:
                row.update(status="error", problems=[f"{type(exc).__name__}: {exc}"],
                           seconds=round(time.monotonic() - t0, 2))
                break
            # what libvirt made QEMU do: monitor commands, and QEMU (re)starts
            sent = monitor_commands(daemon.daemon_log())
            starts = qemu_starts(daemon.qemu_log(DOMAIN))
            row["commands"] = [text for _, text in sorted(sent[seen[0]:] + starts[seen[1]:])]
            seen = (len(sent), len(starts))
            row["problems"] = lineage.compare(image, libvirt, want)
            row.update(status="mismatch" if row["problems"] else "match",
                       image=image.render(), libvirt=libvirt.render(),
                       seconds=round(time.monotonic() - t0, 2))
            log.note(f"step {n}: {row['status']}\nimage:\n{row['image']}\n"
                     f"libvirt:\n{row['libvirt']}")
    finally:
        daemon.stop()
        facts["total_seconds"] = round(time.monotonic() - t_start, 2)
        if rows:
            (test_dir / "steps.txt").write_text(table(rows) + "\n")
        steps_summary(rows, **facts)
    bad = [r for r in rows if r["status"] != "match"]
    if bad or len(rows) != len(steps):
        pytest.fail(
            f"libvirt {where.name} {place.version}: the image and libvirt differ after "
            f"{len(bad)} of {len(rows)} steps ({len(steps) - len(rows)} not run):\n"
            + table(rows) + f"\n(per-step trees in {test_dir / 'commands.log'})",
            pytrace=False)

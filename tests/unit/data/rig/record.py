"""Re-record the monitor outputs tests/unit/test_rig_parsers.py replays (needs the builds).

    .venv/bin/python tests/unit/data/rig/record.py [patched|stock ...]

For each build, starts paused VMs (-S; the guest never runs) with the rig's own VM class and
HMP client, runs the commands below and copies the transcripts here:
  hmp-<build>.raw.log   the bytes exactly as QEMU's readline monitor sent them
  hmp-<build>.log       what the HMP client made of them (echo and escapes removed)
  qmp-<build>.json      {scenario: [query-netdevs answer (or error) right after each
                        `info network`, in order]}
Each VM's section starts with a line "### <name>". The other recordings in this directory
are described in README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(REPO))

import images  # noqa: E402
from rig import builds  # noqa: E402
from rig.machine import VM, MachineProfile  # noqa: E402

NO_NICS = MachineProfile(nics=())

# name -> (profile, extra args, HMP commands; a leading "!" marks a command that must fail)
SCENARIOS = {
    "default": (
        MachineProfile(),
        (),
        ["info network", "netdev_add user,id=hot0,restrict=on", "info network",
         "netdev_del hot0", "!netdev_del no-such-netdev", "!no-such-command", "info status"],
    ),
    "empty": (NO_NICS, (), ["info network"]),
    "hubs": (
        NO_NICS,
        ("-netdev", "user,id=u0,restrict=on", "-netdev", "hubport,id=hp0,hubid=1,netdev=u0",
         "-netdev", "hubport,id=hp1,hubid=1",
         "-device", "virtio-net-pci,netdev=hp1,id=hnic,romfile=",
         "-netdev", "hubport,id=hp2,hubid=1",
         "-object", "filter-buffer,id=f0,netdev=u0,interval=1000000",
         "-net", "nic,model=virtio-net-pci", "-net", "user,restrict=on",
         "-nic", "user,id=n0,model=virtio-net-pci,mac=52:54:00:12:34:77",
         "-netdev", "socket,id=sl,listen=127.0.0.1:47123",
         "-netdev", "socket,id=sc,connect=127.0.0.1:47123",
         "-netdev", "user,id=lonely"),
        ["info network"],
    ),
    "under-nic": (
        NO_NICS,
        (),
        ["netdev_add user,id=doomed", "device_add virtio-net-pci,netdev=doomed,id=orphan,romfile=",
         "netdev_del doomed", "info network"],
    ),
    "snapshots": (
        NO_NICS,
        (),
        ["info snapshots", "savevm first", "savevm second", "info snapshots",
         "!loadvm no-such-snapshot"],
    ),
}  # fmt: skip


def record(build_name: str) -> None:
    build = builds.resolve(build_name)
    guest = images.ensure_guest(log=lambda m: None)
    work = Path(tempfile.mkdtemp(prefix=f"rig-record-{build_name}-"))
    raw_out, log_out, qmp_out = [], [], {}
    for name, (profile, extra, commands) in SCENARIOS.items():
        disk = None
        if name == "snapshots":
            disk = images.make_disk(build.img, work / "disk.qcow2", "qcow2", "64M")
        vm = VM(build, guest, work / name, disk=disk, profile=profile, name="vm",
                extra_args=("-S", *extra))  # fmt: skip
        with vm:
            for command in commands:
                if command.startswith("!"):
                    vm.hmp.cmd_error(command[1:])
                else:
                    vm.hmp.cmd(command)
                if command == "info network":
                    resp = vm.qmp.cmd_raw("query-netdevs")
                    qmp_out.setdefault(name, []).append(resp.get("return", resp.get("error")))
        raw_out.append(f"### {name}\n" + (work / name / "vm-hmp.raw.log").read_text())
        log_out.append(f"### {name}\n" + (work / name / "vm-hmp.log").read_text())
    (HERE / f"hmp-{build_name}.raw.log").write_text("\n".join(raw_out))
    (HERE / f"hmp-{build_name}.log").write_text("\n".join(log_out))
    (HERE / f"qmp-{build_name}.json").write_text(json.dumps(qmp_out, indent=1) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    for b in sys.argv[1:] or ["patched", "stock"]:
        record(b)

"""Cold boot (once) and fast start from the saved booted state."""

from __future__ import annotations

import time

import pytest

from rig.machine import DEFAULT_PROFILE, VM
from rig.timings import record as record_timing


@pytest.mark.coldboot
def test_cold_boot(build, guest, test_dir, make_disk):
    """The guest boots from scratch: modules loaded, disk and NICs seen, workload running."""
    disk = make_disk("cold-disk.qcow2")
    t0 = time.monotonic()
    with VM(build, guest, test_dir, disk=disk, name="cold") as vm:
        m = vm.console.wait_for(
            rf"^{guest.ready_marker} kernel=(\S+) disk=(\S+) nics=(\S*)$", timeout=180
        )
        boot = time.monotonic() - t0
        assert m.group(1) == guest.manifest["kernel_release"]
        assert m.group(2) == "/dev/vda"
        assert len([n for n in m.group(3).split(",") if n]) == len(DEFAULT_PROFILE.nics)
        first = vm.console.wait_counter(timeout=30)
        assert first == 1, "a cold-booted guest starts counting at 1"
        last = vm.console.wait_counter(at_least=first + 2, timeout=30)
        disk_value = vm.disk_counter()
        assert disk_value is not None and disk_value >= last, (
            "the guest writes its counter to the disk"
        )
        assert vm.qmp.cmd("query-status")["status"] == "running"
    assert vm.exitcode == 0, f"QEMU exit code {vm.exitcode} after quit"
    record_timing(f"{build.name}.test_cold_boot_to_ready_seconds", boot)


def test_fast_start(vm, booted_state, build):
    """A VM started from the booted state continues the saved guest, without booting."""
    values = vm.console.counters()
    assert values and values[0] > booted_state.counter, (
        f"counter {values[:1]} does not continue the saved guest (saved at {booted_state.counter})"
    )
    assert "HARNESS-READY" not in vm.console.text(), "a fast-started VM must not boot again"
    assert vm.qmp.cmd("query-status")["status"] == "running"
    migration = vm.qmp.cmd("query-migrate")
    assert migration.get("status") == "completed"
    # the fresh disk receives the restored guest's writes
    later = vm.console.wait_counter(at_least=values[-1] + 1, timeout=30)
    assert vm.disk_counter() >= later
    # how fast it was is data for bench/ and timings.json, not a pass/fail criterion
    record_timing(f"{build.name}.test_fast_start_to_usable_seconds", vm.timings["usable"])

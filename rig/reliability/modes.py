"""How much the reliability suite does: the smoke (CI) or the full run, as data.

``mode_of(config)`` reads a pytest config's options (--full, --seed, --fuzz-seconds,
--kill-runs; tests/reliability/conftest.py adds them) and $QEMU_HARNESS_RELIABILITY.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from rig.reliability import scenario

MODE_ENV = "QEMU_HARNESS_RELIABILITY"


@dataclass(frozen=True)
class Mode:
    """How much each part does: the smoke (CI) or the full run."""

    name: str
    seed: int
    crash_builds: tuple[str, ...]
    crash_cluster_sizes: tuple[int, ...]
    crash_vm_paths: tuple[str, ...]  # scenario.VM_PATHS explored (patched build, 64k)
    crash_vm_sample: dict  # VM path -> distinct crash states checked (absent: every one)
    loadvm_states: int | None  # distinct crash states of a save loaded (None: every one)
    fault_builds: tuple[str, ...]
    fault_errnos: tuple[int, ...]
    fault_events: bool  # also inject at qcow2 events (refblock_update, l1_update, ...)
    fault_vm_paths: tuple[str, ...]  # scenario.VM_PATHS injected into (fault_builds)
    kill_runs: int
    fuzz_examples: int | None  # None: until fuzz_seconds are used up
    fuzz_seconds: float  # the fuzzer's budget (also the smoke's cap: examples past it skip)
    crash_2disk_paths: tuple[str, ...] = ()  # scenario.VM_PATHS_2D explored (patched, 64k)
    pairs_per_class: int | None = 2  # crash-state pairs per class started in a VM (2 disks)
    fault_2disk_paths: tuple[str, ...] = ()  # scenario.VM_PATHS_2D injected into (disk1)


VM_PATHS = tuple(p.name for p in scenario.VM_PATHS)
VM_PATHS_2D = tuple(p.name for p in scenario.VM_PATHS_2D)
SMOKE = Mode("smoke", 13, ("patched",), (65536,),
             ("hmp-delvm", "qmp-snapshot-delete", "hmp-loadvm", "qmp-snapshot-save"),
             {"qmp-snapshot-save": 30, "qmp-snapshot-save-2disks": 20}, 12,
             ("patched",), (5,), False, ("hmp-savevm", "qmp-snapshot-load", "hmp-delvm"),
             4, 40, 60, crash_2disk_paths=("hmp-delvm-2disks", "qmp-snapshot-save-2disks"),
             pairs_per_class=2, fault_2disk_paths=("hmp-savevm-2disks",))
FULL = Mode("full", 13, ("patched", "stock"), (65536, 4096), VM_PATHS, {}, None,
            ("patched", "stock"), (5, 28), True, VM_PATHS, 120, None, 900,
            crash_2disk_paths=VM_PATHS_2D, pairs_per_class=8, fault_2disk_paths=VM_PATHS_2D)


def mode_of(config) -> Mode:
    """The mode a pytest config asks for: --full or $QEMU_HARNESS_RELIABILITY=full, then the
    --seed, --fuzz-seconds and --kill-runs overrides."""
    full = config.getoption("--full") or os.environ.get(MODE_ENV, "").lower() == "full"
    mode = FULL if full else SMOKE
    over = {}
    if config.getoption("--seed") is not None:
        over["seed"] = config.getoption("--seed")
    if config.getoption("--fuzz-seconds") is not None:
        over["fuzz_seconds"] = config.getoption("--fuzz-seconds")
        over["fuzz_examples"] = None
    if config.getoption("--kill-runs") is not None:
        over["kill_runs"] = config.getoption("--kill-runs")
    return Mode(**{**asdict(mode), **over})

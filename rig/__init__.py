"""The QEMU driver ("the rig"): builds, VM launcher, monitors, console, snapshots.

Tests (tests/), benchmarks (bench/) and the recorder of tests/unit/data import it; it
imports nothing from tests/. Subpackages drive the other actors of the suites:
  libvirt/      libvirtd per test, virsh, the domain, the lineage scenario (tests/libvirt)
  peers/        older QEMU releases in chroots, the peer matrix (tests/peers)
  reliability/  crash states, blkdebug faults, kill -9, the fuzzer (tests/reliability)
  pytestplugin  what the suites' conftests share: options, results paths, report hook

One concern per module:
  errors.py     the exception tree (all rig errors derive from RigError)
  builds.py     which QEMU binaries to test (build.py paths --json, env overrides)
  require.py    what a test needs from the machine (builds, tools, firmware, devices): one
                place that skips, or fails under --require-all / CI=true
  machine.py    VM: one context-managed QEMU process (argument lists only), MachineProfile
  qmp.py        QMP client (qemu.qmp) that logs its traffic to the test directory
  hmp.py        HMP client: pexpect on a real readline monitor chardev
  console.py    the guest's serial console (a file), waited on for success/failure patterns
  snapshots.py  snapshot operations spelled for each monitor (HMP savevm/..., QMP jobs)
  procs.py      registry of started QEMU processes for the session-end leak check
  bootcache.py  the booted guest's saved state, cached across sessions and xdist workers
  locks.py      flock and atomic writes for files that parallel workers share
  timings.py    the session's measured durations (timings.json, merged across workers)
"""

"""Fixtures of the real-guest test rig (see rig/__init__.py for the modules).

Run:  .venv/bin/pytest tests/qemu --results-dir out/results [-m "not iotests"] [--builds stock]
      [--require-all]

Fixtures for tests (names are the interface; series tests build on them):
  require        session: lib.require.Requirements, the one place a test asks for a build,
                 tool, firmware or device; a missing one skips, or fails under --require-all
                 (also QEMU_HARNESS_REQUIRE_ALL=1 or CI=true)
  build          session, parametrized over --builds (default patched,stock): a QemuBuild,
                 or require's skip/failure naming `python3 build.py` when that build is missing
  monitor        "hmp" or "qmp" (parametrized)
  guest          session: images.Guest (kernel, initrd, cmdline, manifest)
  test_dir       this test's own directory under <results-dir>/tests/ (named in failure reports)
  build_features session, per build: {feature: present}, probed (rig/features.py) and kept
                 in <results-dir>/features-<build>.json
  booted_state   session, per build: a guest cold-booted once and migrated to a file, cached
                 across sessions and shared by xdist workers (rig/bootcache.py)
  vm_factory     start(name="vm", *, fast=True, disk=None, disk_format="qcow2", profile=...)
                 -> a launched VM (fast: -incoming from booted_state); all shut down at teardown
  vm             a fast-started VM with a fresh qcow2 disk whose guest counter is running
                 (usable: the restored guest printed a heartbeat, asked for at once)
  snapshots      lib.snapshots.SnapshotOps for (vm, monitor): save/load/delete/tags/stop/cont
  make_disk      make_disk(name, fmt="qcow2", size="64M") -> Path in test_dir
Markers: series[(feature, ...)] (a strict xfail, met only by an absent feature, on a build
whose probe lacks a named feature (none named: any); a plain test on a build that has them),
iotests (upstream qemu-iotests). Each test's JUnit record carries its build as property
"build".
"""

from __future__ import annotations

import json
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

import images
from rig import bootcache, builds, features, procs, pytestplugin, timings
from rig.builds import QemuBuild
from rig.locks import write_atomically
from rig.machine import DEFAULT_PROFILE, VM, MachineProfile, accel_from_env
from rig.require import Requirements, required_by
from rig.snapshots import for_monitor
from rig.testdirs import fresh_test_dir
from rig.waiting import reserved_ports

REPO = Path(__file__).resolve().parents[2]
# before any test module imports it: its assertions explain themselves like a test's
pytest.register_assert_rewrite("rig.qimg")

DISK_SIZE = "64M"
LOGS_KEY = pytestplugin.LOGS_KEY
REPORTS_KEY = pytestplugin.REPORTS_KEY
SCRATCH_SUFFIXES = (".qcow2", ".raw", ".mig", ".img")


# -- options, markers, collection ----------------------------------------------------


def pytest_addoption(parser):
    pytestplugin.add_common_options(parser, ("--results-dir", "--require-all", "--keep-scratch"))
    group = parser.getgroup("qemu rig")
    group.addoption(
        "--builds",
        default="patched,stock",
        help="comma-separated builds to test: patched, stock (default both)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "series(*features): tests a feature of the patch series (strict xfail on a build "
        "whose probe lacks it, must pass on a build that has it)",
    )
    config.addinivalue_line(
        "markers", "iotests: runs upstream qemu-iotests (deselect with -m 'not iotests')"
    )
    config.addinivalue_line("markers", "coldboot: boots the guest from scratch")
    # pytest-timeout registers it too; this keeps a venv without the plugin quiet
    config.addinivalue_line("markers", "timeout(seconds): per-test limit (pytest-timeout)")


def _build_names(config) -> list[str]:
    names = [b.strip() for b in config.getoption("--builds").split(",") if b.strip()]
    bad = [b for b in names if b not in builds.BUILDS]
    if bad:
        raise pytest.UsageError(f"--builds: unknown {bad}; use {','.join(builds.BUILDS)}")
    return names


def pytest_generate_tests(metafunc):
    if "build" in metafunc.fixturenames:
        names = _build_names(metafunc.config)
        if "iotests_run" in metafunc.fixturenames:
            # one `check` run per build serves all its iotests: with --dist loadgroup they
            # would go to one worker (a mark given here, at collection: xdist reads the groups
            # before later hooks add marks), but pytest-xdist 3.8 does not group on pytest
            # 9.2 (its issue #1386); iotests_run itself makes a second worker wait instead
            names = [pytest.param(n, marks=pytest.mark.xdist_group(f"iotests-{n}"))
                     for n in names]
        metafunc.parametrize("build", names, indirect=True, scope="session")


# The parameter that says which build a test runs: `build`, or test_qcow2_bad_input's
# `variant` (the patched build and its ASan build).
BUILD_PARAMS = {"build": None, "variant": {"patched": "patched", "asan": "patched-asan"}}


def pytest_collection_modifyitems(config, items):
    # a conftest's collection hook sees every item of the session: only this suite's
    for item in pytestplugin.items_of(items, __file__):
        params = getattr(getattr(item, "callspec", None), "params", {})
        for param, names in BUILD_PARAMS.items():
            if param in params:  # the report reads the build from here, not from test names
                item.user_properties.append(("build", (names or {}).get(params[param],
                                                                         params[param])))
                break
        marker = item.get_closest_marker("series")
        if marker is None:
            continue
        if "build" not in params:
            raise pytest.UsageError(f"{item.nodeid}: a series test must use the `build` fixture")
        try:
            features.needed(marker.args)
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}")


@pytest.fixture(autouse=True)
def _series_expectation(request):
    """A series test is a strict xfail on a build whose probe lacks a feature it needs; only
    an absent feature (features.ABSENT) meets it, so its assertions are real everywhere."""
    marker = request.node.get_closest_marker("series")
    if marker is None:
        return
    build = request.getfixturevalue("build")
    lacking = features.lacking(features.needed(marker.args),
                               request.getfixturevalue("build_features"))
    if lacking:
        probed = request.getfixturevalue("results_dir") / f"features-{build.name}.json"
        request.applymarker(pytest.mark.xfail(
            strict=True, raises=features.ABSENT,
            reason=f"the {build.name} build lacks series feature(s) {', '.join(lacking)} "
                   f"(probe: {probed})"))


# -- failure report names the test's directory ---------------------------------------


pytest_runtest_makereport = pytestplugin.logs_report_hook(
    "qemu rig logs", "command lines, console, qmp/hmp traffic")


def pytest_sessionstart(session):
    if pytestplugin.is_controller(session.config):  # once per run, before any worker writes
        timings.clear(pytestplugin.results_dir(session.config) / "timings.json")


def pytest_sessionfinish(session, exitstatus):
    left = procs.kill_leftovers()
    results = getattr(session.config, "_rig_results", None)
    if results is not None:
        timings.write(results / "timings.json")
    if left:
        msg = "QEMU processes left running by the rig (killed now): " + ", ".join(
            f"pid {pid} ({label})" for pid, label in left
        )
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr:
            tr.write_line("ERROR: " + msg, red=True)
        else:
            print("ERROR: " + msg, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


record_timing = timings.record


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def results_dir(pytestconfig) -> Path:
    path = pytestplugin.results_dir(pytestconfig)
    path.mkdir(parents=True, exist_ok=True)
    pytestconfig._rig_results = path
    return path


@pytest.fixture(scope="session")
def require(pytestconfig) -> Requirements:
    return Requirements(required_by(pytestconfig.getoption("--require-all")))


@pytest.fixture(scope="session")
def build(request, require) -> QemuBuild:
    if accel_from_env() == "kvm":
        require.kvm()
    return require.build(request.param)


@pytest.fixture(scope="session")
def build_features(build, results_dir) -> dict[str, bool]:
    # each xdist worker probes in its own scratch directory; all write the same answer
    found = features.probe(build, results_dir / "features" / build.name / pytestplugin.worker_id())
    write_atomically(results_dir / f"features-{build.name}.json",
                     json.dumps(found, indent=2) + "\n")
    return found


@pytest.fixture(params=["hmp", "qmp"])
def monitor(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def guest(results_dir):
    log_path = results_dir / "images.log"
    with open(log_path, "a") as log:
        t0 = time.monotonic()
        g = images.ensure_guest(log=lambda m: print(m, file=log, flush=True))
        record_timing("guest_image_seconds", time.monotonic() - t0)
    return g


@pytest.fixture
def ports():
    """``ports(n[, kind])``: n free 127.0.0.1 ports held for the whole test, so that nothing
    else takes them before QEMU binds them (QEMU binds with SO_REUSEADDR, as the holder)."""
    with ExitStack() as stack:
        yield lambda n, kind=socket.SOCK_STREAM: stack.enter_context(reserved_ports(n, kind))


@pytest.fixture
def test_dir(request, results_dir):
    path = fresh_test_dir(request, results_dir, LOGS_KEY)
    yield path
    reports = request.node.stash.get(REPORTS_KEY, {})
    # passed, or failed as expected (xfail): the scratch files show nothing new
    passed = "call" in reports and all(r.passed or hasattr(r, "wasxfail") for r in reports.values())
    if passed and not request.config.getoption("--keep-scratch"):
        _remove_scratch(path)


def _remove_scratch(directory: Path) -> None:
    """Disk images and states are large; logs stay. Failed tests keep everything."""
    for f in directory.rglob("*"):
        if f.is_file() and f.suffix in SCRATCH_SUFFIXES:
            f.unlink()


def _make_disk(build: QemuBuild, path: Path, fmt: str = "qcow2", size: str = DISK_SIZE) -> Path:
    return images.make_disk(build.img, path, fmt, size)


@pytest.fixture
def make_disk(build, test_dir):
    def make(name: str, fmt: str = "qcow2", size: str = DISK_SIZE) -> Path:
        return _make_disk(build, test_dir / name, fmt, size)

    return make


class BootedState:
    """A guest cold-booted once, migrated into ``path`` (lib/bootcache.py keeps it)."""

    def __init__(self, path: Path, profile: MachineProfile, boot_seconds: float, counter: int):
        self.path = path
        self.profile = profile
        self.boot_seconds = boot_seconds
        self.counter = counter


@pytest.fixture(scope="session")
def booted_state(request, build, guest, results_dir) -> BootedState:
    """The saved state of a booted guest for ``build``: from the cache (lib/bootcache.py:
    keyed by binary, guest, profile, accelerator and firmware; shared by xdist workers and
    sessions), else cold-booted now, its logs in <results>/booted-state/<build>/."""
    logs = results_dir / "booted-state" / build.name
    t0 = time.monotonic()
    entry = bootcache.booted(build, guest, logs, DEFAULT_PROFILE, accel_from_env(),
                             record=record_timing)
    record_timing(f"{build.name}.booted_state_seconds", time.monotonic() - t0)
    write_atomically(logs / "state.json", json.dumps(
        {**entry.meta, "cache": str(entry.directory)}, indent=2) + "\n")
    yield BootedState(entry.state, DEFAULT_PROFILE, entry.meta["boot_seconds"],
                      entry.meta["counter_at_save"])
    entry.close()


@pytest.fixture
def vm_factory(request, build, guest, test_dir):
    started: list[VM] = []

    def start(
        name: str = "vm",
        *,
        fast: bool = True,
        disk: Path | None = None,
        disk_format: str = "qcow2",
        profile: MachineProfile = DEFAULT_PROFILE,
        extra_args: tuple[str, ...] = (),
    ) -> VM:
        if disk is None:
            disk = _make_disk(build, test_dir / f"{name}-disk.{disk_format}", disk_format)
        incoming = None
        if fast:
            state = request.getfixturevalue("booted_state")
            if profile != state.profile:
                raise ValueError("a fast-started VM must use the profile of the booted state")
            incoming = state.path
        vm = VM(
            build,
            guest,
            test_dir,
            disk=disk,
            profile=profile,
            incoming=incoming,
            name=name,
            extra_args=extra_args,
        )
        started.append(vm)
        t0 = time.monotonic()
        vm.launch()
        if fast:  # usable: the restored guest printed a heartbeat after RESUME
            vm.heartbeat(timeout=30)
            vm.timings["usable"] = time.monotonic() - t0
        return vm

    yield start
    for vm in reversed(started):
        vm.shutdown()
    (test_dir / "timings.json").write_text(
        json.dumps({v.name: v.timings for v in started}, indent=2) + "\n"
    )
    for vm in started:
        assert not vm.is_running(), f"QEMU {vm.pid} still running after shutdown"


@pytest.fixture
def vm(vm_factory, build) -> VM:
    v = vm_factory()
    record_timing(f"{build.name}.fast_start_to_usable_seconds.last", v.timings["usable"])
    return v


@pytest.fixture
def snapshots(vm, monitor):
    return for_monitor(monitor, vm)

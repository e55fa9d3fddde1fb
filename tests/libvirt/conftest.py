"""libvirt drives the patched QEMU: the machine's libvirt (Debian 12: 9.0, HMP savevm/
loadvm/delvm) and trixie's (11.3, QMP snapshot-* jobs) in a chroot (`build.py libvirt`).

Run:  python3 build.py test --suite libvirt      (prepares the chroot, then this suite)
      .venv/bin/pytest tests/libvirt [--libvirts host,trixie] [--require-all]

Needs root (mount namespaces, chroot), the patched build (`build.py`), the guest
(`build.py images`), the machine's libvirt (`build.py setup`) and trixie's chroot
(`build.py libvirt`). Without one a test is skipped with the command that provides it; with
--require-all, QEMU_HARNESS_REQUIRE_ALL=1 or CI=true it fails instead.

Fixtures: place (session, parametrized over --libvirts: where that libvirt runs and its
version), patched (the QemuBuild), guest, test_dir, workspace (a fresh directory the daemon
sees, removed afterwards), steps_summary (records a test's step table for libvirt.json).
Results: <results-dir>/tests/<module>/<test>/ (commands.log, domain.xml, steps.txt, the
daemon's and QEMU's logs, console.log; the disk image when the test failed) and
--matrix-json (default <results-dir>/libvirt.json): every step's outcome per libvirt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import images
from harness.stages import libvirt as hlibvirt
from rig import (
    builds,
    pytestplugin,
)
from rig.libvirt import daemon as lvdaemon
from rig.libvirt import summary
from rig.libvirt.daemon import Place
from rig.require import Requirements, required_by
from rig.testdirs import fresh_test_dir, safe_name

REPO = Path(__file__).resolve().parents[2]

LOGS_KEY = pytestplugin.LOGS_KEY
REPORTS_KEY = pytestplugin.REPORTS_KEY
STEPS_DIR = "libvirt-steps"  # one JSON per test under the results dir (xdist workers too)


def pytest_addoption(parser):
    pytestplugin.add_common_options(parser)
    group = parser.getgroup("libvirt")
    group.addoption("--libvirts", default=",".join(hlibvirt.LIBVIRTS),
                    help=f"the libvirts to drive (default {','.join(hlibvirt.LIBVIRTS)})")


def _results(config) -> Path:
    return pytestplugin.results_dir(config)


def _summary_path(config) -> Path:
    return pytestplugin.summary_path(config, "libvirt.json")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller: nothing stale from before
        shutil.rmtree(_results(config) / STEPS_DIR, ignore_errors=True)
        _summary_path(config).unlink(missing_ok=True)


def pytest_generate_tests(metafunc):
    if "place" in metafunc.fixturenames:
        names = [x.strip() for x in metafunc.config.getoption("--libvirts").split(",")
                 if x.strip()]
        bad = [n for n in names if n not in hlibvirt.LIBVIRTS]
        if bad:
            raise pytest.UsageError(f"--libvirts: unknown {bad}; use "
                                    f"{','.join(hlibvirt.LIBVIRTS)}")
        metafunc.parametrize("place", names, indirect=True, scope="session")


pytest_runtest_makereport = pytestplugin.logs_report_hook(
    "libvirt logs", "commands.log, steps.txt, libvirt-*.log, console.log")


def pytest_sessionfinish(session, exitstatus):
    left = lvdaemon.stop_all()
    if left:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "ERROR: libvirt daemons left running by a test (stopped now): " + ", ".join(left)
        if tr:
            tr.write_line(msg, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if hasattr(session.config, "workerinput"):
        return
    data = summary.merge(_results(session.config) / STEPS_DIR)
    if data is not None:
        path = _summary_path(session.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def require(pytestconfig) -> Requirements:
    return Requirements(required_by(pytestconfig.getoption("--require-all")))


@pytest.fixture(scope="session")
def results_dir(pytestconfig) -> Path:
    path = _results(pytestconfig)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class LibvirtPlace:
    place: Place
    version: str
    chroot: object | None = None  # harness.stages.peers.PeerRoot


@pytest.fixture(scope="session")
def place(request, require) -> LibvirtPlace:
    name = request.param
    if os.geteuid() != 0:
        require.missing("libvirtd runs in a mount namespace of its own (trixie's in a "
                        "chroot): run the libvirt suite as root")
    require.tool("unshare", "util-linux")
    require.tool("mount", "mount")
    if hlibvirt.LIBVIRTS[name].chroot is None:
        version = hlibvirt.host_version()
        if version is None or shutil.which("virsh") is None:
            require.missing("the machine's libvirt is not installed: `python3 build.py setup` "
                            f"(apt-get install {' '.join(hlibvirt.HOST_PACKAGES)})")
        return LibvirtPlace(Place(name), version)
    root = hlibvirt.locate(name)
    if root is None:
        require.missing(f"libvirt {name} (a chroot) is not built: `python3 build.py libvirt`")
    return LibvirtPlace(Place(name, root.root), root.version, root)


@pytest.fixture(scope="session")
def patched(require) -> builds.QemuBuild:
    build = require.build("patched")
    require.firmware(build)  # libvirt passes no -L: QEMU finds it in its qemu-bundle
    return build


@pytest.fixture(scope="session")
def guest(results_dir, require):
    with open(results_dir / "images.log", "a") as log:
        try:
            return images.ensure_guest(log=lambda m: print(m, file=log, flush=True))
        except images.ImageError as exc:
            require.missing(f"no test guest: {exc} (`python3 build.py images`)")


_safe = safe_name


def passed(request) -> bool:
    reports = request.node.stash.get(REPORTS_KEY, {})
    return "call" in reports and all(r.passed for r in reports.values())


@pytest.fixture
def test_dir(request, results_dir) -> Path:
    path = fresh_test_dir(request, results_dir, LOGS_KEY)
    return path


@pytest.fixture
def workspace(request, place, test_dir):
    """A fresh directory the daemon sees (in a chroot: under its /work); removed afterwards,
    its disk images and console copied to the test directory first when the test failed (or
    with --keep-scratch)."""
    if place.chroot is not None:
        base = place.place.root / "work"
        base.mkdir(exist_ok=True)
    else:
        base = Path("/tmp")  # short: unix socket paths are limited to 108 bytes
    ws = Path(tempfile.mkdtemp(prefix="lv-", dir=base))
    try:
        yield ws
    finally:
        keep = not passed(request) or request.config.getoption("--keep-scratch")
        for f in ws.glob("*"):
            if f.is_file() and (keep or f.suffix not in (".qcow2",)) and f.suffix in (
                    ".qcow2", ".log", ".xml"):
                shutil.copyfile(f, test_dir / f.name)
        shutil.rmtree(ws, ignore_errors=True)


@pytest.fixture
def steps_summary(place, results_dir):
    """record(rows, **facts): this test's step table, for libvirt.json."""
    def record(rows: list[dict], **facts) -> None:
        summary.write_steps(results_dir / STEPS_DIR, place.place.name,
                            {"version": place.version, **facts}, rows)
    return record

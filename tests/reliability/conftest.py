"""The reliability suite (issue 13): crash states, fault injection, kill -9, a fuzzer.

Run:  python3 build.py test --suite reliability            (smoke: < 5 min, CI)
      python3 build.py test --suite reliability --full     (the full run, with budgets)
      .venv/bin/pytest tests/reliability [--full] [--seed N] [--fuzz-seconds S]
                       [--kill-runs N] [--keep-scratch]

The full mode is also selected by QEMU_HARNESS_RELIABILITY=full. Results:
<results-dir>/reliability.json (the report's table), per-test directories under
<results-dir>/reliability/tests/ with the images of failed states.

Fixtures: mode (session: Mode, the budgets), tools (session: Tools: patched, stock, Debian's
7.2), base (session: the pre-operation image and its view), summary (session: Summary),
test_dir, run (a Runner per test), known (a callable that turns a test's failures into a
strict xfail when they are all known bugs).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from rig import pytestplugin
from rig.reliability import known as known_bugs
from rig.reliability import scenario
from rig.reliability.modes import MODE_ENV, Mode, mode_of
from rig.reliability.observe import DEBIAN_IMG, Runner, Tool, observe
from rig.reliability.summary import Summary
from rig.require import Requirements, required_by
from rig.testdirs import fresh_test_dir, safe_name

REPO = Path(__file__).resolve().parents[2]

LOGS_KEY = pytestplugin.LOGS_KEY
REPORTS_KEY = pytestplugin.REPORTS_KEY


def pytest_addoption(parser):
    pytestplugin.add_common_options(parser)
    group = parser.getgroup("reliability")
    group.addoption("--full", action="store_true",
                    help=f"the full run (also {MODE_ENV}=full): both builds, more errnos and "
                         "events, >= 100 kill runs, the fuzzer for --fuzz-seconds")
    group.addoption("--seed", type=int, default=None, help="seed of the kill points and "
                    "the fuzzer (default 13: runs are reproducible)")
    group.addoption("--fuzz-seconds", type=float, default=None,
                    help="the fuzzer's time budget (smoke 60, full 900)")
    group.addoption("--kill-runs", type=int, default=None,
                    help="kill -9 runs (smoke 4, full 120)")


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test limit (pytest-timeout)")


def pytest_collection_modifyitems(config, items):
    """The fuzzer runs for its budget: give it that much more than pytest-timeout's 900 s."""
    mode = mode_of(config)
    for item in items:
        if item.name.startswith("test_fuzz") and "reliability" in str(item.path):
            item.add_marker(pytest.mark.timeout(int(mode.fuzz_seconds) + 900))


def _results(config) -> Path:
    return pytestplugin.results_dir(config)


def _summary_path(config) -> Path:
    return pytestplugin.summary_path(config, "reliability.json")


@pytest.fixture(scope="session")
def mode(pytestconfig) -> Mode:
    return mode_of(pytestconfig)


@pytest.fixture(scope="session")
def summary(pytestconfig, mode) -> Summary:
    s = Summary(_summary_path(pytestconfig), asdict(mode))
    pytestconfig._reliability_summary = s
    return s


def pytest_sessionfinish(session, exitstatus):
    s = getattr(session.config, "_reliability_summary", None)
    if s is not None:
        s.sections["bugs"] = [asdict(b) for b in known_bugs.KNOWN]
        s.sections["fixed_bugs"] = [{"id": b.id, "fixed_by": b.fixed_by}
                                    for b in known_bugs.FIXED]
        s.write()


pytest_runtest_makereport = pytestplugin.logs_report_hook("reliability logs", "commands, images")


@pytest.fixture(scope="session")
def results_dir(pytestconfig) -> Path:
    """<results-dir> (build.py passes out/results/reliability), or its reliability/ when
    run by hand with the default out/results."""
    path = _results(pytestconfig)
    if path.name != "reliability":
        path = path / "reliability"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def scratch_root(tmp_path_factory) -> Path:
    """Crash-state images are written and read thousands of times: tmpfs when there is one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile
        path = Path(tempfile.mkdtemp(prefix="qemu-reliability-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("scratch")


_safe = safe_name


@pytest.fixture
def test_dir(request, results_dir) -> Path:
    path = fresh_test_dir(request, results_dir, LOGS_KEY)
    yield path
    reports = request.node.stash.get(REPORTS_KEY, {})
    passed = "call" in reports and all(r.passed for r in reports.values())
    if passed and not request.config.getoption("--keep-scratch"):
        for f in path.rglob("*.qcow2"):
            f.unlink()


@pytest.fixture
def scratch(scratch_root, request) -> Path:
    path = scratch_root / _safe(request.node.nodeid)
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run(test_dir) -> Runner:
    r = Runner()
    yield r
    (test_dir / "last-commands.log").write_text(r.transcript(last=40))


# -- the binaries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    patched: Tool
    system: Path  # the patched qemu-system-x86_64
    stock: Tool | None
    debian: Tool  # Debian's qemu-img 7.2: every state must open there too
    stock_system: Path | None = None

    def build(self, name: str) -> Tool:
        tool = {"patched": self.patched, "stock": self.stock}[name]
        if tool is None:
            pytest.skip(f"no {name} build")
        return tool

    def systems(self, name: str) -> Path:
        """The qemu-system-x86_64 of build ``name`` (the VM paths)."""
        system = {"patched": self.system, "stock": self.stock_system}[name]
        if system is None:
            pytest.skip(f"no {name} build")
        return system


@pytest.fixture(scope="session")
def require(pytestconfig) -> Requirements:
    return Requirements(required_by(pytestconfig.getoption("--require-all")))


@pytest.fixture(scope="session")
def tools(require, mode) -> Tools:
    patched = require.build("patched")
    stock = stock_system = None
    if "stock" in mode.crash_builds + mode.fault_builds:
        s = require.build("stock")
        stock, stock_system = Tool("stock", str(s.img), str(s.io)), s.system
    require.executable(Path(DEBIAN_IMG), package="qemu-utils",
                       why=" (every crash state must open in an older deployed qemu-img)")
    return Tools(Tool("patched", str(patched.img), str(patched.io)), patched.system, stock,
                 Tool("qemu-img 7.2", DEBIAN_IMG), stock_system)


@dataclass(frozen=True)
class Base:
    path: Path
    view: object  # invariants.ImageView
    cluster_size: int


_BASES: dict[int, Base] = {}


@pytest.fixture(scope="session")
def bases(tools, results_dir):
    """bases(cluster_size) -> Base: the pre-operation image (scenario.py), made once."""

    def get(cluster_size: int = 65536) -> Base:
        if cluster_size not in _BASES:
            directory = results_dir / "base"
            directory.mkdir(parents=True, exist_ok=True)
            run = Runner()
            path = directory / f"base-{cluster_size}.qcow2"
            try:
                scenario.make_base(run, tools.patched, path, cluster_size)
            except scenario.SetupError as exc:
                pytest.fail(f"the patched build cannot make the pre-operation image: {exc}")
            obs = observe(run, path, tools.patched, [tools.debian], directory)
            if obs.view is None or obs.view.record != "valid" or \
                    any(s.uuid is None for s in obs.view.snapshots):
                pytest.fail(f"the pre-operation image {path} lacks UUIDs or a valid record: "
                            f"{obs.view}")
            _BASES[cluster_size] = Base(path, obs.view, cluster_size)
        return _BASES[cluster_size]

    return get


# -- known bugs ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def settle():
    """``settle(part, problems, what, build)`` ends a test: pass when there are no problems;
    a strict xfail naming the bugs when every problem is a known bug of ``part``; on stock,
    an xfail naming them when every problem is an upstream bug the stable-fixes series
    fixes (the full run runs stock to tell upstream's failures from the series'); fail
    otherwise. A known bug of ``part`` that did not show fails too (it is fixed: remove it
    from rig/reliability/known.py)."""
    def settle(part: str, problems: list[str], what: str, build: str = "patched") -> None:
        expected = known_bugs.expected(part)
        if not problems:
            if expected:
                pytest.fail(f"{what}: known bug(s) {', '.join(b.id for b in expected)} no "
                            "longer show: remove them from rig/reliability/known.py",
                            pytrace=False)
            return
        ids = known_bugs.classify(part, problems)
        if ids:
            pytest.xfail(f"known bug(s) {', '.join(sorted(ids))} "
                         "(tests/reliability/bugs/BUGS.md)")
        fixed = known_bugs.classify_fixed(part, problems) if build == "stock" else None
        if fixed:
            pytest.xfail(f"upstream bug(s) {', '.join(sorted(fixed))} of the stock build, "
                         "fixed by the stable-fixes series (tests/reliability/bugs/BUGS.md)")
        pytest.fail(f"{what}:\n" + "\n".join(f"  - {p}" for p in problems[:40])
                    + (f"\n  ... {len(problems) - 40} more" if len(problems) > 40 else ""),
                    pytrace=False)
    return settle

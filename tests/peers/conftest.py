"""The peer matrix: older QEMU releases (harness/stages/peers.py chroots) on images the
series wrote, and the series on images they wrote.

Run:  python3 build.py test --suite peers     (prepares the peers, then this suite, -n auto)
      .venv/bin/pytest tests/peers --writers debian   (no build yet: Debian's 7.2 as
                                                     writer, identity injected)
Options: --writers patched,stock,debian (default patched,stock); --designs record32,autoclear16
(how a writer without the series gets its identity injected; default record32); --peers
bullseye,... (default all); --matrix-json PATH (default <results-dir>/matrix.json).

Fixtures: writer (session, parametrized: Writer), peer (session, parametrized: Tools of a
chroot), base (a template image made by the writer, per worker), cmds (this test's command
log), test_dir. Marker `series`: xfail strict on writers without the series.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.stages import peers as hpeers
from rig import pytestplugin
from rig.peers import cells
from rig.peers import image as im
from rig.peers import matrix as mx
from rig.peers.tools import CommandError, Commands, Tools
from rig.require import Requirements, required_by
from rig.testdirs import fresh_test_dir, safe_name

REPO = Path(__file__).resolve().parents[2]

WRITERS = ("patched", "stock", "debian")
LOGS_KEY = pytestplugin.LOGS_KEY
REPORTS_KEY = pytestplugin.REPORTS_KEY


def pytest_addoption(parser):
    pytestplugin.add_common_options(parser, ("--results-dir", "--keep-scratch", "--matrix-json"))
    group = parser.getgroup("peer matrix")
    group.addoption(
        "--writers",
        default="patched,stock",
        help=f"who writes the images: {','.join(WRITERS)} (default patched,stock)",
    )
    group.addoption(
        "--designs",
        default="record32",
        help="identity layout injected for writers without the series: "
        "record32 (the redesign), autoclear16 (today's series)",
    )
    group.addoption(
        "--peers",
        default=",".join(hpeers.PEERS),
        help=f"older QEMU releases to run (default {','.join(hpeers.PEERS)})",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "series: tests a feature of the patch series (xfail strict on writers without it)",
    )
    if not hasattr(config, "workerinput"):  # the controller: nothing stale from before
        cells.clear(_results(config))
        _matrix_json(config).unlink(missing_ok=True)


def _results(config) -> Path:
    return pytestplugin.results_dir(config)


def _matrix_json(config) -> Path:
    return pytestplugin.summary_path(config, "matrix.json")


def _csv(config, name: str, allowed) -> list[str]:
    items = [x.strip() for x in config.getoption(name).split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise pytest.UsageError(f"{name}: unknown {bad}; use {','.join(allowed)}")
    return items


@dataclass(frozen=True)
class WriterParam:
    name: str  # patched / stock / debian
    design: mx.Design  # what a writer without the series gets injected

    @property
    def id(self) -> str:
        return self.name if self.name == "patched" else f"{self.name}-{self.design.value}"


def pytest_generate_tests(metafunc):
    cfg = metafunc.config
    if "writer" in metafunc.fixturenames:
        designs = [mx.Design(d) for d in _csv(cfg, "--designs", ("record32", "autoclear16"))]
        params = []
        for name in _csv(cfg, "--writers", WRITERS):
            for d in [mx.Design.RECORD32] if name == "patched" else designs:
                params.append(WriterParam(name, d))
        metafunc.parametrize(
            "writer", params, ids=[p.id for p in params], indirect=True, scope="session"
        )
    if "peer" in metafunc.fixturenames:
        names = _csv(cfg, "--peers", tuple(hpeers.PEERS))
        metafunc.parametrize("peer", names, indirect=True, scope="session")


def pytest_collection_modifyitems(config, items):
    # a conftest's collection hook sees every item of the session: only this suite's
    for item in pytestplugin.items_of(items, __file__):
        if item.get_closest_marker("series") is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or "writer" not in callspec.params:
            raise pytest.UsageError(f"{item.nodeid}: a series test must use `writer`")
        if callspec.params["writer"].name != "patched":
            item.add_marker(
                pytest.mark.xfail(
                    strict=True,
                    raises=AssertionError,
                    reason="series feature: absent from a writer without the series",
                )
            )


# -- per-test directory, failure report names it ---------------------------------------------


pytest_runtest_makereport = pytestplugin.logs_report_hook("peer matrix logs", "commands.log")


def passed(request) -> bool:
    reports = request.node.stash.get(REPORTS_KEY, {})
    return "call" in reports and all(r.passed or hasattr(r, "wasxfail") for r in reports.values())


@pytest.fixture(scope="session")
def results_dir(pytestconfig) -> Path:
    path = _results(pytestconfig)
    path.mkdir(parents=True, exist_ok=True)
    return path


_safe = safe_name


@pytest.fixture
def test_dir(request, results_dir) -> Path:
    path = fresh_test_dir(request, results_dir, LOGS_KEY)
    yield path
    # passed, or failed as expected (xfail): the images show nothing new; logs stay
    if passed(request) and not request.config.getoption("--keep-scratch"):
        shutil.rmtree(path / "images", ignore_errors=True)


@pytest.fixture
def cmds(test_dir) -> Commands:
    return Commands(test_dir / "commands.log")


@pytest.fixture
def workspace(request, peer, test_dir):
    """workspace(label): a fresh directory inside the peer's chroot, always removed; when the
    block raises (a failed assertion, a failed command) its images are copied to
    <test_dir>/images first (kept for failed tests, or all with --keep-scratch)."""

    @contextmanager
    def make(label: str):
        with peer.chroot.workspace(label) as ws:
            try:
                yield ws
            except BaseException:
                im.keep_copy(ws.host, test_dir / "images")
                raise
            if request.config.getoption("--keep-scratch"):
                im.keep_copy(ws.host, test_dir / "images")

    return make


# -- writers and peers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    param: WriterParam
    tools: Tools

    @property
    def id(self) -> str:
        return self.param.id


@pytest.fixture(scope="session")
def require() -> Requirements:
    """tests/qemu's capability checks: a missing one skips, or fails under CI=true or
    QEMU_HARNESS_REQUIRE_ALL=1 (`build.py test --require-all`)."""
    return Requirements(required_by(False))


@pytest.fixture(scope="session")
def writer(request, require) -> Writer:
    param: WriterParam = request.param
    if param.name == "debian":
        tools = Tools.of_debian()
        if tools is None:
            require.missing("no /usr/bin/qemu-img: apt-get install qemu-utils (the debian "
                            "writer)")
        return Writer(param, tools)
    from rig import builds
    from rig.errors import BuildMissing

    try:
        return Writer(param, Tools.of_build(builds.resolve(param.name)))
    except BuildMissing as exc:
        require.missing(f"{exc} (or run the matrix with `--writers debian` as a stand-in)")


@pytest.fixture(scope="session")
def peer(request, require) -> Tools:
    name = request.param
    if os.geteuid() != 0:
        require.missing("the peers run under chroot(2): run the peers suite as root")
    root = hpeers.locate(hpeers.PEERS[name])
    if root is None:
        require.missing(f"peer {name} is not built: run `python3 build.py peers`")
    return Tools.of_peer(root)


_BASES: dict[str, im.Base] = {}


@pytest.fixture
def base(writer, results_dir) -> im.Base:
    """The writer's template image (made once per worker and writer, copied per test)."""
    if writer.id not in _BASES:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        directory = results_dir / "templates" / f"{writer.id}-{worker}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        cmds = Commands(directory / "commands.log")
        try:
            _BASES[writer.id] = im.make_base(cmds, writer.tools, directory, writer.param.design)
        except CommandError as exc:
            pytest.fail(f"the writer {writer.tools.label} cannot make the base image: {exc}")
    return _BASES[writer.id]


# -- the summary: out/results/peers.json --------------------------------------------------------


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    cells.merge(_results(config), _matrix_json(config))

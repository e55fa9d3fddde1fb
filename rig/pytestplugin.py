"""What every QEMU suite's conftest (tests/qemu, peers, libvirt, reliability) shares, written
once: the common command-line options, where results go, and the report hook that stores each
phase's report and names a failing test's directory.

A suite's conftest uses it like this:

    def pytest_addoption(parser):
        pytestplugin.add_common_options(parser, summary="<results-dir>/NAME.json")
        ...the suite's own options...

    pytest_runtest_makereport = pytestplugin.logs_report_hook("SUITE logs", "what is in there")

and reads ``pytestplugin.results_dir(config)`` / ``pytestplugin.summary_path(config, "NAME.json")``;
its test-directory fixture stores the directory under ``LOGS_KEY`` (rig/testdirs.py)
and reads the phase reports under ``REPORTS_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LOGS_KEY = pytest.StashKey[Path]()
REPORTS_KEY = pytest.StashKey[dict]()

COMMON_OPTIONS = {
    "--results-dir": dict(default="out/results",
                          help="where per-test logs go (default out/results)"),
    "--keep-scratch": dict(action="store_true",
                           help="keep the disk images of passed tests (logs are always kept)"),
    "--require-all": dict(action="store_true",
                          help="a missing build, tool, firmware or device fails the test "
                               "instead of skipping it (also with QEMU_HARNESS_REQUIRE_ALL=1 "
                               "or CI=true)"),
    "--matrix-json": dict(default=None,
                          help="where the suite's summary goes (default: a JSON file named "
                               "after the suite under --results-dir)"),
}


def add_common_options(parser, names=tuple(COMMON_OPTIONS)) -> None:
    """Add the common options a suite uses; a session that collects several suites gets each
    once (the first conftest adds it, the others find it there)."""
    group = parser.getgroup("qemu rig")
    for name in names:
        try:
            group.addoption(name, **COMMON_OPTIONS[name])
        except ValueError:  # already added by another suite's conftest in this session
            pass


def worker_id() -> str:
    """This process's pytest-xdist worker ("gw0", "gw1", ...), "main" without xdist: for
    scratch paths that two workers must not share."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def is_controller(config) -> bool:
    """True in the process that runs the session (no xdist, or xdist's controller), false in
    an xdist worker: for what must happen once per run (clearing last run's files)."""
    return not hasattr(config, "workerinput")


def results_dir(config) -> Path:
    """--results-dir, relative to where pytest was started."""
    path = Path(config.getoption("--results-dir"))
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def summary_path(config, default_name: str) -> Path:
    """--matrix-json, else ``default_name`` under the results directory."""
    out = config.getoption("--matrix-json")
    path = Path(out) if out else results_dir(config) / default_name
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def logs_report_hook(title: str, contents: str):
    """A pytest_runtest_makereport hookwrapper: keeps each phase's report in the item's
    stash (REPORTS_KEY, for the fixtures that keep or clean a test's files), records the
    test directory as a JUnit property, and names it in a failing test's report."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        rep = outcome.get_result()
        item.stash.setdefault(REPORTS_KEY, {})[rep.when] = rep
        logs = item.stash.get(LOGS_KEY, None)
        if logs is not None and rep.when == "call":
            item.user_properties.append(("logs", str(logs)))
        if logs is not None and rep.failed:
            rep.sections.append((title, f"test directory ({contents}): {logs}"))

    return pytest_runtest_makereport


def items_of(items, conftest_file: str) -> list:
    """The items a suite's conftest judges: a conftest's pytest_collection_modifyitems sees
    every item of the session (`pytest tests`), so the items of the other suites under
    tests/ are left out (items outside tests/, as a plugin's unit test makes, are kept)."""
    here = Path(conftest_file).resolve().parent
    tests = here.parent

    def mine(item) -> bool:
        path = Path(item.path).resolve()
        return path.is_relative_to(here) or not path.is_relative_to(tests)
    return [item for item in items if mine(item)]

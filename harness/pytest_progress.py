"""A pytest plugin that tells `build.py test` how far a suite is: one JSON line per finished
test on the pipe named by $QEMU_HARNESS_PROGRESS_FD (harness/stages/testrun.py)::

    {"done": 57, "total": 250, "passed": 50, "failed": 2, "skipped": 1, "xfailed": 4}

``build.py test`` loads it (``-p harness.pytest_progress``) and reads the pipe in a thread,
which turns each line into the suite stage's progress ('qemu: 57/250 tests, 2 failed');
without the variable (pytest run by hand) the plugin does nothing. A test is done at its
teardown report, and failed when any of its phases failed (an error in setup or teardown
too). Under pytest-xdist only the controller reports (it receives every worker's reports);
the total is the first worker's collection. Events, not polling: a line is written when
pytest reports a test.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from harness.stages.testrun import PROGRESS_FD_ENV


class Reporter:
    def __init__(self, fd: int):
        os.set_inheritable(fd, False)  # QEMU and the other children do not hold the pipe
        self._out = os.fdopen(fd, "w", buffering=1)
        self.total: int | None = None
        self.counts = {"done": 0, "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0}
        self._outcome: dict[str, str] = {}

    def pytest_collection_finish(self, session) -> None:
        self.total = len(session.items)
        self._emit()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        if self.total is None:
            self.total = len(ids)
            self._emit()

    def pytest_runtest_logreport(self, report) -> None:
        rank = {"passed": 0, "skipped": 1, "xfailed": 2, "failed": 3}
        if report.failed:
            outcome = "failed"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            outcome = "passed"
        seen = self._outcome.get(report.nodeid, "passed")
        self._outcome[report.nodeid] = max(seen, outcome, key=rank.__getitem__)
        if report.when == "teardown":
            self.counts["done"] += 1
            self.counts[self._outcome.pop(report.nodeid)] += 1
            self._emit()

    def pytest_unconfigure(self, config) -> None:
        try:
            self._out.close()
        except OSError:
            pass

    def _emit(self) -> None:
        if self.total is None or self._out.closed:
            return
        try:
            self._out.write(json.dumps({**self.counts, "total": self.total}) + "\n")
        except OSError:  # the harness went away: the tests go on without progress
            self._out = open(os.devnull, "w")


def pytest_configure(config) -> None:
    # taken out of the environment: a pytest that a test runs (or an xdist worker) must
    # not write to whatever its own descriptor of that number is
    fd = os.environ.pop(PROGRESS_FD_ENV, None)
    if not fd or hasattr(config, "workerinput"):
        return
    try:
        if not stat.S_ISFIFO(os.fstat(int(fd)).st_mode):
            return
        reporter = Reporter(int(fd))
    except (ValueError, OSError):  # not a descriptor of ours: no progress, tests run
        return
    config.pluginmanager.register(reporter, "harness-progress")

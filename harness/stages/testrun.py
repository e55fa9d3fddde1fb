"""Run the test suites in the project venv, results under out/results.

While a suite runs, its stage reports how far it is ('qemu: 57/250 tests, 2 failed'): pytest
loads harness/pytest_progress.py, which writes a JSON line per finished test to a pipe whose
write end the harness passes it (``PROGRESS_FD_ENV`` names the descriptor); ``SuiteWatch``
reads the other end in a thread (blocking reads, no polling) and calls ``log.progress``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass

from harness.core.config import BASELINE_ENV, Layout
from harness.core.errors import TestsFailed, UsageError
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog, run
from harness.stages.setup import venv_python

# pytest's exit codes (pytest.ExitCode) the harness tells apart
PYTEST_OK, PYTEST_USAGE, PYTEST_NO_TESTS = 0, 4, 5
# What `build.py test --require-all` sets for the suites that run QEMU (tests/qemu reads it,
# like its --require-all option): a missing build, tool or firmware fails instead of skipping.
REQUIRE_ALL_ENV = "QEMU_HARNESS_REQUIRE_ALL"
# the descriptor of the progress pipe's write end in the suite's pytest (pytest_progress.py)
PROGRESS_FD_ENV = "QEMU_HARNESS_PROGRESS_FD"


@dataclass(frozen=True)
class Suite:
    name: str
    paths: tuple[str, ...]
    markers: str | None = None
    extra: tuple[str, ...] = ()
    # a JSON summary the suite writes under out/results (the report renders it)
    summary_json: str | None = None


# pytest-xdist, one worker per CPU (`-- -n 0` after the suite's arguments runs it serially)
PARALLEL = ("-n", "auto")

SUITES = {
    "unit": Suite("unit", ("tests/unit",), extra=PARALLEL),
    # every test has its own directory, ports and disks; the booted state is made once and
    # shared by the workers (rig/bootcache.py)
    "qemu": Suite("qemu", ("tests/qemu",), markers="not iotests", extra=PARALLEL),
    # serially: one `check` run per build serves all its iotests (under -n, the first
    # worker that needs it runs it and the others wait: tests/qemu/test_iotests.py)
    "iotests": Suite("iotests", ("tests/qemu",), markers="iotests"),
    # older QEMU releases (build.py peers) on images the series wrote, and the reverse;
    # pytest-xdist, one worker per CPU: each cell is a dozen short-lived QEMU processes
    "peers": Suite("peers", ("tests/peers",), extra=PARALLEL,
                   summary_json="peers.json"),
    # libvirt (the machine's 9.0, trixie's 11.3 in a chroot: build.py libvirt) drives the
    # patched QEMU through a snapshot tree; the image's tree and libvirt's after each step.
    # One worker per CPU: each libvirt's run is one long test with its own TCG guest
    "libvirt": Suite("libvirt", ("tests/libvirt",), extra=PARALLEL,
                     summary_json="libvirt.json"),
    # crash states, fault injection, kill -9, the fuzzer (tests/reliability/conftest.py):
    # the smoke; RELIABILITY_ENV=full (`build.py test --suite reliability --full`) the full run
    "reliability": Suite("reliability", ("tests/reliability",),
                         summary_json="reliability.json"),
}
RELIABILITY_ENV = "QEMU_HARNESS_RELIABILITY"


def pytest_argv(layout: Layout, suite: Suite, extra: tuple[str, ...] = ()) -> list[str]:
    results = layout.results
    argv = [str(venv_python(layout)), "-m", "pytest", *suite.paths,
            f"--junitxml={results / ('junit-' + suite.name + '.xml')}",
            "-o", f"junit_suite_name={suite.name}", "-o", "junit_family=xunit1", "-ra",
            # reports each finished test to the suite's progress (inert without the pipe)
            "-p", "harness.pytest_progress"]
    if suite.name != "unit":
        argv.append(f"--results-dir={results / suite.name}")
    if suite.summary_json:
        argv.append(f"--matrix-json={results / suite.summary_json}")
    if suite.markers:
        argv += ["-m", suite.markers]
    return argv + list(suite.extra) + list(extra)


def suite_text(suite: str, counts: dict) -> str:
    """'qemu: 57/250 tests, 2 failed' (+ skipped when any)."""
    text = f"{suite}: {counts['done']}/{counts['total']} tests, {counts['failed']} failed"
    if counts.get("skipped"):
        text += f", {counts['skipped']} skipped"
    return text


class SuiteWatch:
    """The reading end of harness/pytest_progress.py's pipe, for one suite's pytest::

        with SuiteWatch("qemu", log) as watch:
            run(argv, log, env={**env, **watch.env}, pass_fds=watch.fds)

    A thread reads the plugin's lines as they come and reports them with ``log.progress``;
    leaving the block closes our copy of the write end, waits for the reader to see the end
    of the pipe, and ends the progress line."""

    # how long to wait for the end of the pipe once pytest exited: only a stray process that
    # inherited the write end could hold it open (the plugin makes it non-inheritable)
    JOIN_SECONDS = 5.0

    def __init__(self, suite: str, log: StageLog):
        self.suite = suite
        self.log = log
        self.env: dict[str, str] = {}
        self.fds: tuple[int, ...] = ()
        self._write: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SuiteWatch:
        read, self._write = os.pipe()
        self.env = {PROGRESS_FD_ENV: str(self._write)}
        self.fds = (self._write,)
        self._thread = threading.Thread(target=self._read, args=(read,), daemon=True,
                                        name=f"progress-{self.suite}")
        self._thread.start()
        return self

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, encoding="utf-8", errors="replace") as pipe:
            for raw in pipe:
                try:
                    counts = json.loads(raw)
                    self.log.progress(counts["done"], counts["total"],
                                      suite_text(self.suite, counts))
                except (ValueError, KeyError, TypeError):
                    continue  # not the plugin's line: ignored

    def __exit__(self, *exc) -> None:
        os.close(self._write)
        self._thread.join(self.JOIN_SECONDS)
        self.log.progress_done()


def run_suite(layout: Layout, suite: Suite, log: StageLog,
              extra: tuple[str, ...] = (), env: dict | None = None,
              require_all: bool = False) -> str:
    """pytest for one suite; ``env`` for the test processes (the selected
    baseline, so that their `build.py paths` asks for the same one)."""
    layout.results.mkdir(parents=True, exist_ok=True)
    env = dict(env or {})
    if require_all and suite.name != "unit":  # the suites that run QEMU
        env[REQUIRE_ALL_ENV] = "1"
    with SuiteWatch(suite.name, log) as watch:
        res = run(pytest_argv(layout, suite, extra), log, cwd=layout.root, check=False,
                  env={**env, **watch.env}, pass_fds=watch.fds)
    tail = [ln for ln in res.stdout.splitlines() if ln.strip()][-1:] or ["no output"]
    summary = tail[0].strip("= ")
    if res.returncode == PYTEST_NO_TESTS and extra:
        return f"{suite.name}: no test selected by {' '.join(extra)}"
    if res.returncode == PYTEST_USAGE:
        raise UsageError(f"pytest refused the {suite.name} suite's arguments: {summary}",
                         hint="check the arguments after `--` (`.venv/bin/pytest --help`)")
    if res.returncode != PYTEST_OK:
        raise TestsFailed(f"{suite.name} tests failed: {summary}",
                          hint=f"per-test logs under {layout.results / suite.name}; "
                               f"JUnit XML in {layout.results}")
    return f"{suite.name}: {summary}"


def closing_line(layout: Layout, suites: list[str]) -> str:
    """One plain summary over the suites' JUnit files: 'tests: N passed, N failed,
    N xfailed, N skipped' (+ N flaky: passed only when retried). An expected failure
    (a series test on a build without the series) is not a pass: it is counted apart."""
    from harness.stages.report import junit_counts
    total: Counter = Counter()
    for name in suites:
        for counts in (junit_counts(layout.results / f"junit-{name}.xml",
                                    split_builds=False) or {}).values():
            total.update(counts)
    flaky = f", {total['flaky']} flaky" if total["flaky"] else ""
    return (f"tests: {total['passed']} passed, {total['failed']} failed{flaky}, "
            f"{total['xfailed']} xfailed, {total['skipped']} skipped")


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteRequest:
    suite: str = "unit"
    pytest_args: tuple[str, ...] = ()
    require_all: bool = False  # a missing capability fails instead of skipping
    full: bool = False  # the reliability suite's full run


def stage(ctx: Context, request: SuiteRequest, log: StageLog) -> Outcome:
    env = {BASELINE_ENV: ctx.baseline.name}
    if request.full:
        env[RELIABILITY_ENV] = "full"
    return Outcome(run_suite(ctx.layout, SUITES[request.suite], log, request.pytest_args,
                             env=env, require_all=request.require_all))


def stages_for(suites: list[str]) -> list[Stage]:
    """One stage per suite, `test-NAME`, each with its own log."""
    return [Stage(f"test-{name}", stage, f"the {name} suite", SuiteRequest) for name in suites]

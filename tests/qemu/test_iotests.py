"""Upstream qemu-iotests (the snapshot-related list) against each build, one item per iotest.

`check -tap -qcow2 <tests>` runs once per build (session fixture); its TAP output, stderr
(diffs of failing tests) and scratch files are kept under <results-dir>/iotests/<build>/.
Deselect with -m "not iotests".
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import pytest

from rig.errors import FeatureAbsent
from rig.iotests import IOTESTS, SERIES_IOTEST_FEATURES, SERIES_IOTESTS, IotestsRun, parse_tap
from rig.locks import locked, write_atomically
from rig.timings import record as record_timing

TIMEOUT = int(os.environ.get("QEMU_HARNESS_IOTESTS_TIMEOUT", "1800"))
JOBS = os.environ.get("QEMU_HARNESS_IOTESTS_JOBS", "1")
RETRY_MAX = 3


def _run_id(config) -> str:
    """What the pytest-xdist workers of one run share (their testrunuid); without xdist, this
    process's own."""
    return getattr(config, "workerinput", {}).get("testrunuid") or _PROCESS_RUN_ID


_PROCESS_RUN_ID = uuid.uuid4().hex


@pytest.fixture(scope="session")
def iotests_run(build, results_dir, require, pytestconfig) -> IotestsRun:
    """One `check` run per build and pytest run. Under pytest-xdist every worker that gets one
    of the build's iotests asks for it: the first runs `check` under a lock and keeps the
    outcome in run.json, the others wait on the lock and read that (--dist loadgroup would
    keep them on one worker, but does not group on pytest 9.2: pytest-xdist issue #1386)."""
    directory = results_dir / "iotests" / build.name
    directory.mkdir(parents=True, exist_ok=True)
    run_id = _run_id(pytestconfig)
    with locked(results_dir / "iotests" / f".{build.name}.lock"):
        try:
            done = IotestsRun.from_json((directory / "run.json").read_text(), run_id)
        except (OSError, ValueError, KeyError):
            done = None
        if done is None:
            done = _iotests_run(build, directory, require)
            write_atomically(directory / "run.json", done.to_json(run_id))
    return done


def _iotests_run(build, directory: Path, require) -> IotestsRun:
    check = require.iotests_check(build)
    require.firmware(build)
    t0 = time.monotonic()
    in_tree = build.source_dir / "tests" / "qemu-iotests" / "tests"
    absent = frozenset(t for t in SERIES_IOTESTS if not (in_tree / t).exists())
    tests = IOTESTS + [t for t in SERIES_IOTESTS if t not in absent]
    rc, cmd, results = _run_check(check, directory, "check", tests)
    # Some iotests race under CPU load (e.g. 153: a QEMU still holds its image lock while the
    # next step starts). Rerun what failed once, alone; both outputs are kept and the item
    # reports the flake. A broken build (many failures) is not retried.
    failed = [t for t in tests if results.get(t) != "pass"]
    retried: dict[str, str] = {}
    if failed and len(failed) <= RETRY_MAX:
        _, _, retried = _run_check(check, directory, "check-retry", failed)
    elapsed = time.monotonic() - t0
    record_timing(f"{build.name}.iotests_seconds", elapsed)
    return IotestsRun(directory, rc, results, elapsed, cmd, retried, absent)


def _run_check(
    check: Path, directory: Path, name: str, tests
) -> tuple[int, list[str], dict[str, str]]:
    sock_dir = tempfile.mkdtemp(prefix="qh-io-", dir="/tmp")
    env = dict(os.environ, TEST_DIR=str(directory / f"scratch-{name}"), SOCK_DIR=sock_dir)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    cmd = [sys.executable, str(check), "-tap", "-qcow2", "-j", JOBS, *tests]
    (directory / f"{name}.command").write_text(
        f"cd {shlex.quote(str(check.parent))} && {shlex.join(cmd)}\n"
    )
    with (
        open(directory / f"{name}.tap", "w") as out,
        open(directory / f"{name}.stderr", "w") as err,
    ):
        try:
            rc = subprocess.run(
                cmd,
                cwd=check.parent,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                timeout=TIMEOUT,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            err.write(f"\n[rig: check killed after {TIMEOUT}s]\n")
    shutil.rmtree(sock_dir, ignore_errors=True)
    return rc, cmd, parse_tap((directory / f"{name}.tap").read_text())


@pytest.mark.iotests
@pytest.mark.timeout(2 * TIMEOUT + 600)  # the first item waits for check, and its rerun
@pytest.mark.parametrize(
    "iotest", IOTESTS + [pytest.param(t, marks=pytest.mark.series(*SERIES_IOTEST_FEATURES[t]))
                         for t in SERIES_IOTESTS]
)
def test_iotest(iotests_run, iotest, record_property):
    if iotest in iotests_run.absent:
        raise FeatureAbsent(f"iotest {iotest} is not in this build's tree "
                            f"(tests/qemu-iotests/tests/{iotest})")
    first = iotests_run.results.get(iotest)
    status = iotests_run.retried.get(iotest, first) if first != "pass" else first
    where = f"(output in {iotests_run.directory}: check.tap, check.stderr, check-retry.*)"
    assert status is not None, (
        f"check printed no result for {iotest} (exit {iotests_run.returncode}) {where}"
    )
    assert status != "not run", f"iotest {iotest} was not run on this build {where}"
    assert status == "pass", f"iotest {iotest}: {status} {where}"
    if first != "pass":
        # not a plain pass: the report and build.py's closing line count it as flaky
        record_property("flaky", f"first run: {first}; passed on rerun")
        warnings.warn(f"iotest {iotest} failed its first run, passed alone {where}", stacklevel=1)

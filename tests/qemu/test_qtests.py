"""QEMU's own qtests that the series adds, built and run against each build.

Marked `iotests` (QEMU's own test suites run with -m iotests) and `series`:
the test does not exist in a tree without the series (FeatureAbsent there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.errors import FeatureAbsent

QTESTS = ("query-netdevs-test",)


@pytest.mark.iotests
@pytest.mark.series("query-netdevs")
@pytest.mark.timeout(1800)  # ninja builds the qtest first
@pytest.mark.parametrize("qtest", QTESTS)
def test_qtest(build, qtest, test_dir):
    source = build.source_dir / "tests" / "qtest" / f"{qtest}.c"
    if not source.exists():
        raise FeatureAbsent(f"{source} is not in the {build.name} tree")
    ninja = Path(sys.executable).parent / "ninja"
    target = f"tests/qtest/{qtest}"
    env = dict(os.environ, CCACHE_BASEDIR=str(build.source_dir), CCACHE_NOHASHDIR="1",
               PATH=f"{ninja.parent}:{os.environ.get('PATH', '')}")
    made = subprocess.run([str(ninja) if ninja.exists() else "ninja", "-C", str(build.build_dir),
                           target], env=env, capture_output=True, text=True, check=False)
    (test_dir / "ninja.log").write_text(made.stdout + made.stderr)
    assert made.returncode == 0, f"ninja {target} failed (log: {test_dir / 'ninja.log'})"
    run = subprocess.run([str(build.build_dir / target), "--tap", "-k"],
                         env=dict(os.environ, QTEST_QEMU_BINARY=str(build.system)),
                         capture_output=True, text=True, timeout=600, check=False)
    (test_dir / "qtest.tap").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, f"{qtest} failed (TAP: {test_dir / 'qtest.tap'})"
    assert "\nok " in "\n" + run.stdout and "not ok" not in run.stdout

"""`build.py test`: every requested suite runs, the first failure decides the exit code,
a summary per suite — with a fake venv python standing in for pytest (no QEMU build)."""

from __future__ import annotations

import json
import sys

import pytest

import build as cli
from harness.core.config import Layout
from harness.stages import testrun

FAKE_PYTEST = '''#!{python}
"""Stands in for `python -m pytest`: writes the suite's JUnit file, prints pytest's last
line and exits as tests/unit/test_testrun.py tells it (FAKE_PYTEST in the environment)."""
import json, os, sys
args = sys.argv[3:]
suite = "unit" if "tests/unit" in args else "iotests" if "iotests" in args else "qemu"
plan = json.loads(os.environ["FAKE_PYTEST"])[suite]
with open(os.environ["FAKE_PYTEST_CALLS"], "a") as f:
    f.write(json.dumps(args + ["env:" + os.environ.get("QEMU_HARNESS_REQUIRE_ALL", "")])
            + "\\n")
junit = next(a.split("=", 1)[1] for a in args if a.startswith("--junitxml="))
with open(junit, "w") as f:
    f.write("<testsuites><testsuite>" + plan["cases"] + "</testsuite></testsuites>")
print(plan["line"])
sys.exit(plan["rc"])
'''
PASS = '<testcase name="a"/>'
FAIL = '<testcase name="b"><failure message="x"/></testcase>'
XFAIL = '<testcase name="c"><skipped type="pytest.xfail" message="series"/></testcase>'


@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    python = layout.venv_bin("python3")
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTEST.format(python=sys.executable))
    python.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("FAKE_PYTEST_CALLS", str(calls))
    monkeypatch.delenv("QEMU_HARNESS_REQUIRE_ALL", raising=False)

    def plan(**suites):
        monkeypatch.setenv("FAKE_PYTEST", json.dumps(suites))

    def ran():
        return [json.loads(line) for line in calls.read_text().splitlines()]
    return layout, plan, ran


def test_a_failing_suite_does_not_hide_the_next(fake_venv, capsys):
    """It used to stop at the unit failure: the QEMU results were never produced."""
    layout, plan, ran = fake_venv
    plan(unit={"rc": 1, "cases": PASS + FAIL, "line": "=== 1 failed, 1 passed in 0.1s ==="},
         qemu={"rc": 4, "cases": "", "line": "ERROR: usage: bad option"},
         iotests={"rc": 0, "cases": PASS + XFAIL, "line": "== 1 passed, 1 xfailed in 3s =="})
    assert cli.main(["test", "--iotests"], layout=layout) == 7  # the first failure's code
    assert [a[0] for a in ran()] == ["tests/unit", "tests/qemu", "tests/qemu"]
    out = capsys.readouterr().out
    table = out[out.index("stage        result"):]
    assert "test-unit    FAILED" in table and "unit tests failed: 1 failed, 1 passed" in table
    assert "test-qemu    FAILED" in table and "pytest refused the qemu suite's" in table
    assert "test-iotests ok" in table and "iotests: 1 passed, 1 xfailed in 3s" in table
    assert out.rstrip().splitlines()[-1] == "tests: 2 passed, 1 failed, 1 xfailed, 0 skipped"


def test_all_suites_pass(fake_venv, capsys):
    layout, plan, ran = fake_venv
    ok = {"rc": 0, "cases": PASS, "line": "== 1 passed in 0.1s =="}
    plan(unit=ok, qemu=ok)
    assert cli.main(["test"], layout=layout) == 0
    assert [a[0] for a in ran()] == ["tests/unit", "tests/qemu"]
    assert all(a[-1] == "env:" for a in ran())
    assert capsys.readouterr().out.rstrip().endswith(
        "tests: 2 passed, 0 failed, 0 xfailed, 0 skipped")


def test_a_filter_that_selects_nothing_in_one_suite_is_not_a_failure(fake_venv, capsys):
    """`build.py test -- -k snapshot` (README): the unit suite has no such test."""
    layout, plan, ran = fake_venv
    plan(unit={"rc": 5, "cases": "", "line": "=== 120 deselected in 0.3s ==="},
         qemu={"rc": 0, "cases": PASS, "line": "== 1 passed in 9s =="})
    assert cli.main(["test", "--", "-k", "snapshot"], layout=layout) == 0
    assert "no test selected by -k snapshot" in capsys.readouterr().out
    plan(unit={"rc": 5, "cases": "", "line": "=== no tests ran in 0.3s ==="},
         qemu={"rc": 0, "cases": PASS, "line": "== 1 passed in 9s =="})
    assert cli.main(["test"], layout=layout) == 7  # without a filter an empty suite fails


def test_require_all_reaches_the_qemu_suites(fake_venv):
    layout, plan, ran = fake_venv
    ok = {"rc": 0, "cases": PASS, "line": "== 1 passed in 0.1s =="}
    plan(unit=ok, qemu=ok, iotests=ok)
    assert cli.main(["test", "--iotests", "--require-all"], layout=layout) == 0
    unit, qemu, iotests = ran()
    assert unit[-1] == "env:"  # the unit suite's own tests are not the rig's
    assert qemu[-1] == iotests[-1] == "env:1"  # QEMU_HARNESS_REQUIRE_ALL=1


def test_pytest_argv_per_suite(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    python = layout.venv_bin("python3")
    python.parent.mkdir(parents=True)
    python.write_text("")
    unit = testrun.pytest_argv(layout, testrun.SUITES["unit"])
    assert unit[1:4] == ["-m", "pytest", "tests/unit"]
    assert not any(a.startswith("--results-dir") for a in unit)
    qemu = testrun.pytest_argv(layout, testrun.SUITES["qemu"], ("-k", "x"))
    assert f"--results-dir={layout.results / 'qemu'}" in qemu
    assert qemu[-6:] == ["-m", "not iotests", "-n", "auto", "-k", "x"]
    assert unit[-2:] == ["-n", "auto"]  # both cores: pytest-xdist

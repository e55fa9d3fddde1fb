"""rig/require.py: a missing capability skips, or fails when the run requires
everything (--require-all, QEMU_HARNESS_REQUIRE_ALL=1, CI=true) — no QEMU build needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.config import ROOT
from rig import builds
from rig.require import Requirements, required_by

SKIPPED = pytest.skip.Exception
FAILED = pytest.fail.Exception


@pytest.fixture(autouse=True)
def no_ci(monkeypatch):
    """CI runs these tests with CI=true: each test says which environment it means."""
    for var in ("CI", "QEMU_HARNESS_REQUIRE_ALL", *builds.ENV.values()):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("option, env, expected", [
    (False, {}, None),
    (True, {}, "--require-all"),
    (False, {"CI": "true"}, "CI=true"),
    (False, {"CI": "1"}, "CI=1"),
    (False, {"CI": "false"}, None),
    (False, {"QEMU_HARNESS_REQUIRE_ALL": "1"}, "QEMU_HARNESS_REQUIRE_ALL=1"),
    (False, {"QEMU_HARNESS_REQUIRE_ALL": "0", "CI": ""}, None),
])
def test_required_by(option, env, expected):
    assert required_by(option, env) == expected


def test_missing_tool_skips_with_the_package_to_install():
    with pytest.raises(SKIPPED) as exc:
        Requirements(None).tool("no-such-tool-xyz", package="no-such-package")
    assert "apt-get install no-such-package" in str(exc.value)


def test_missing_tool_fails_when_everything_is_required():
    with pytest.raises(FAILED) as exc:
        Requirements("CI=true").tool("no-such-tool-xyz", package="no-such-package")
    msg = str(exc.value)
    assert msg.startswith("missing capability: no-such-tool-xyz is not installed")
    assert "CI=true: every capability is required" in msg
    assert exc.value.pytrace is False


def test_present_tool_is_returned():
    assert Requirements("CI=true").tool("sh", package="dash").endswith("/sh")


def _fake_build(tmp_path: Path, name: str, *, check=True, firmware=True) -> Path:
    bdir = tmp_path / name / "build"
    bdir.mkdir(parents=True)
    for exe in ("qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd"):
        (bdir / exe).write_text("#!/bin/sh\n")
        (bdir / exe).chmod(0o755)
    if check:
        (bdir / "tests" / "qemu-iotests").mkdir(parents=True)
        (bdir / "tests" / "qemu-iotests" / "check").write_text("")
    if firmware:
        fw = bdir / "qemu-bundle" / "usr" / "local" / "share" / "qemu"
        fw.mkdir(parents=True)
        (fw / "bios-256k.bin").write_text("")
    paths = tmp_path / f"{name}.json"
    paths.write_text(json.dumps({
        "qemu-system-x86_64": str(bdir / "qemu-system-x86_64"), "qemu-img": str(bdir / "qemu-img"),
        "qemu-io": str(bdir / "qemu-io"), "qemu-nbd": str(bdir / "qemu-nbd"),
        "build-dir": str(bdir), "source-dir": str(tmp_path / name)}))
    return paths


@pytest.mark.parametrize("name", ["patched", "stock", "patched-asan"])
def test_build_from_paths_json(tmp_path, monkeypatch, name):
    monkeypatch.setenv(builds.ENV[name], str(_fake_build(tmp_path, name)))
    b = Requirements("CI=true").build(name)
    assert b.name == name and b.img == tmp_path / name / "build" / "qemu-img"


def test_missing_build_skips_or_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("QEMU_HARNESS_STOCK_PATHS", str(tmp_path / "absent.json"))
    with pytest.raises(SKIPPED, match="QEMU_HARNESS_STOCK_PATHS=.*cannot read paths JSON"):
        Requirements(None).build("stock")
    with pytest.raises(FAILED, match="--require-all: every capability"):
        Requirements("--require-all").build("stock")


def test_asan_build_is_found_through_build_py():
    assert builds.build_command("patched-asan")[-3:] == ["paths", "--json", "--asan"]
    assert builds.build_command("stock")[-1] == "--stock"


def test_iotests_check_and_firmware(tmp_path, monkeypatch):
    monkeypatch.setenv("QEMU_HARNESS_PATHS", str(_fake_build(tmp_path, "patched")))
    monkeypatch.setenv("QEMU_HARNESS_STOCK_PATHS",
                       str(_fake_build(tmp_path, "stock", check=False, firmware=False)))
    req = Requirements("CI=true")
    good, bare = req.build("patched"), req.build("stock")
    assert req.iotests_check(good).name == "check"
    assert req.firmware(good).name == "qemu"
    with pytest.raises(FAILED, match="--enable-tools"):
        req.iotests_check(bare)
    with pytest.raises(FAILED, match="bios-256k.bin is missing"):
        req.firmware(bare)
    with pytest.raises(SKIPPED, match="bios-256k.bin is missing"):
        Requirements(None).firmware(bare)


def test_no_test_skips_around_require():
    """Every skip for a missing build, tool, firmware or device goes through require (so
    CI=true turns it into a failure); those left are the user's own --builds choice and an
    operation an old peer release does not have."""
    allowed = {"the bad-input tests exercise the patched build (--builds has no patched)",
               "has no `{op.doc}` (QEMU"}
    found = []
    for path in sorted((ROOT / "tests" / "qemu").rglob("*.py")) + \
            sorted((ROOT / "tests" / "peers").rglob("*.py")):
        if path.name == "require.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pytest\.skip\(|mark\.skipif|importorskip", line) and \
                    not any(a in line for a in allowed):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def _run_rig(tmp_path, env, *args):
    """The real tests/qemu conftest on one test whose build is missing."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rsE",
         "tests/qemu/test_qcow2_identity.py", "-k", "test_create_records_uuid_parent_and_current",
         "--builds", "stock", f"--results-dir={tmp_path / 'results'}",
         f"--junitxml={tmp_path / 'junit.xml'}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items()
                if k not in ("CI", "QEMU_HARNESS_REQUIRE_ALL")},
             "QEMU_HARNESS_STOCK_PATHS": str(tmp_path / "absent.json"), **env})
    return proc.returncode, proc.stdout + proc.stderr


def test_rig_skips_a_missing_build_by_default(tmp_path):
    rc, out = _run_rig(tmp_path, {})
    assert rc == 0, out
    assert "1 skipped" in out and "cannot read paths JSON" in out


@pytest.mark.parametrize("env, args, by", [
    ({"CI": "true"}, (), "CI=true"),
    ({}, ("--require-all",), "--require-all"),
    ({"QEMU_HARNESS_REQUIRE_ALL": "1"}, (), "QEMU_HARNESS_REQUIRE_ALL=1"),
])
def test_rig_fails_a_missing_build_when_everything_is_required(tmp_path, env, args, by):
    rc, out = _run_rig(tmp_path, env, *args)
    assert rc == 1, out
    assert "1 error" in out and "missing capability" in out and by in out, out

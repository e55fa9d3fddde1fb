"""rig/features.py and the `series` expectation in tests/qemu/conftest.py, with
fake qemu-img / qemu-system-x86_64 that answer the probe as stock or patched QEMU do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from harness.core.config import ROOT
from harness.stages.report import junit_counts
from rig import features
from rig.builds import QemuBuild

# `qemu-img snapshot -l` headers: stock 10.0.13, and with the series (patch 0007's 267.out)
STOCK_LIST = """Snapshot list:
ID        TAG               VM_SIZE                DATE     VM_CLOCK     ICOUNT
1         probe                 0 B 2026-11-25 22:12:50 0000:00:00.000          0
"""
PATCHED_LIST = """Snapshot list:
ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT UUID \
                                PARENT_UUID
1       probe                 0 B 2026-11-25 22:12:50  0000:00:00.000          0 \
45637577-364f-4aa2-839b-0f05fd33aa46 --
"""
BASE_COMMANDS = ["qmp_capabilities", "query-commands", "quit", "query-block"]
SERIES_COMMANDS = ["query-vm-snapshots", "query-netdevs"]

FAKE_IMG = '''#!{python}
import sys
args = sys.argv[1:]
if args[0] == "create":
    open(args[-2], "w").write("")
elif args[:2] == ["snapshot", "-c"]:
    pass
elif args[:2] == ["snapshot", "-l"]:
    sys.stdout.write({listing!r})
else:
    sys.exit("fake qemu-img: unexpected " + " ".join(args))
'''
FAKE_SYSTEM = '''#!{python}
import json, sys
assert sys.argv[-2:] == ["-qmp", "stdio"], sys.argv
print(json.dumps({{"QMP": {{"version": {{}}, "capabilities": []}}}}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)["execute"]
    if cmd == "query-commands":
        print(json.dumps({{"return": [{{"name": c}} for c in {commands!r}]}}), flush=True)
    else:
        print('{{"return": {{}}}}', flush=True)
    if cmd == "quit":
        print('{{"timestamp": {{}}, "event": "SHUTDOWN", "data": {{}}}}', flush=True)
        break
'''


def fake_build(tmp_path, name: str, listing: str, commands: list[str]) -> QemuBuild:
    bdir = tmp_path / name / "build"
    bdir.mkdir(parents=True)
    for exe, text in (("qemu-img", FAKE_IMG.format(python=sys.executable, listing=listing)),
                      ("qemu-system-x86_64", FAKE_SYSTEM.format(python=sys.executable,
                                                                commands=commands))):
        (bdir / exe).write_text(text)
        (bdir / exe).chmod(0o755)
    return QemuBuild(name, bdir / "qemu-system-x86_64", bdir / "qemu-img", bdir / "qemu-io",
                     bdir / "qemu-nbd", bdir, tmp_path / name, "test")


def paths_json(tmp_path, build: QemuBuild):
    path = tmp_path / f"{build.name}.json"
    path.write_text(json.dumps({
        "qemu-system-x86_64": str(build.system), "qemu-img": str(build.img),
        "qemu-io": str(build.io), "qemu-nbd": str(build.nbd),
        "build-dir": str(build.build_dir), "source-dir": str(build.source_dir)}))
    return path


def test_listing_columns():
    assert features.lists_uuids(PATCHED_LIST) is True
    assert features.lists_uuids(STOCK_LIST) is False
    with pytest.raises(features.ProbeError):
        features.lists_uuids("qemu-img: Could not open 'x'\n")


def test_qmp_commands():
    out = ('{"QMP": {"version": {}}}\n{"return": {}}\n'
           '{"return": [{"name": "query-netdevs"}, {"name": "quit"}]}\n{"return": {}}\n')
    assert features.qmp_commands(out) == {"query-netdevs", "quit"}
    with pytest.raises(features.ProbeError):
        features.qmp_commands('{"QMP": {}}\n{"error": {"class": "GenericError"}}\n')


def test_needed_and_lacking():
    assert features.needed(()) == tuple(features.FEATURES)
    assert features.needed(("query-netdevs",)) == ("query-netdevs",)
    with pytest.raises(ValueError, match="unknown series feature"):
        features.needed(("query-netdev",))
    have = {"snapshot-uuid": True, "query-vm-snapshots": False, "query-netdevs": True}
    assert features.lacking(features.needed(()), have) == ["query-vm-snapshots"]
    assert features.lacking(("query-netdevs",), have) == []


def test_absent_is_not_an_assertion():
    """The expected failure of a series test is an absent feature, never a failed assert."""
    from rig.errors import FeatureAbsent, QMPCommandError
    assert not issubclass(AssertionError, features.ABSENT)
    assert issubclass(FeatureAbsent, features.ABSENT) and issubclass(KeyError, features.ABSENT)
    assert issubclass(QMPCommandError, features.ABSENT)


@pytest.mark.parametrize("listing, commands, expected", [
    (STOCK_LIST, BASE_COMMANDS, dict.fromkeys(features.FEATURES, False)),
    (PATCHED_LIST, BASE_COMMANDS + SERIES_COMMANDS, dict.fromkeys(features.FEATURES, True)),
    (PATCHED_LIST, BASE_COMMANDS + ["query-vm-snapshots"],
     {"snapshot-uuid": True, "query-vm-snapshots": True, "query-netdevs": False}),
])
def test_probe_a_build(tmp_path, listing, commands, expected):
    build = fake_build(tmp_path, "b", listing, commands)
    assert features.probe(build, tmp_path / "work") == expected
    assert list((tmp_path / "work").iterdir()) == []  # the probe image is removed


def test_probe_of_a_broken_tool_is_an_error_not_an_absent_feature(tmp_path):
    build = fake_build(tmp_path, "b", STOCK_LIST, BASE_COMMANDS)
    build.img.write_text("#!/bin/sh\necho 'qemu-img: crashed' >&2\nexit 134\n")
    with pytest.raises(features.ProbeError, match="exited 134"):
        features.probe(build, tmp_path / "work")


SERIES_TESTS = '''
import pytest

from rig.errors import QMPCommandError

pytestmark = pytest.mark.series("query-netdevs")


def test_absent_feature(build):
    """What a series test meets on a build without it: an unknown QMP command."""
    if build.name == "stock":
        raise QMPCommandError("query-netdevs", None, {"class": "CommandNotFound"})


def test_assertion(build):
    """A failed assert is a failure on every build: nothing excuses it."""
    assert build.name == "patched"


def test_passes_anyway(build):
    """Passes on a build without the feature: it tests nothing of the series (strict)."""


@pytest.mark.series("snapshot-uuid")
def test_other_feature(build):
    """patched-ish has snapshot UUIDs but lacks query-netdevs: a plain test there."""
    assert build.name in ("patched", "patched-ish")
'''


def run_rig(tmp_path, builds: dict[str, QemuBuild], *paths):
    """The real tests/qemu conftest (as a plugin) on ``paths`` and a copy of
    tests/qemu/test_features.py, with the fake builds."""
    shutil.copy(ROOT / "tests/qemu/test_features.py", tmp_path / "test_features_copy.py")
    paths = (*paths, tmp_path / "test_features_copy.py")
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "QEMU_HARNESS_REQUIRE_ALL")}
    env["QEMU_HARNESS_PATHS"] = str(paths_json(tmp_path, builds["patched"]))
    env["QEMU_HARNESS_STOCK_PATHS"] = str(paths_json(tmp_path, builds["stock"]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.qemu.conftest",
         "-q", "-rA", f"--rootdir={tmp_path}", f"--results-dir={tmp_path / 'results'}",
         f"--junitxml={junit}", "-o", "junit_family=xunit1", *map(str, paths)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        kind = ("failed" if case.find("failure") is not None or case.find("error") is not None
                else "xfailed" if case.find("skipped") is not None else "passed")
        outcomes[(case.get("name").split("[")[0], props.get("build"))] = kind
    return proc, outcomes, junit


def test_series_expectation_follows_the_probe_not_the_name(tmp_path):
    tests = tmp_path / "test_fake_series.py"
    tests.write_text(SERIES_TESTS)
    rig = {"patched": fake_build(tmp_path, "patched", PATCHED_LIST,
                                 BASE_COMMANDS + SERIES_COMMANDS),
           "stock": fake_build(tmp_path, "stock", STOCK_LIST, BASE_COMMANDS)}
    proc, outcomes, junit = run_rig(tmp_path, rig, tests)
    out = proc.stdout + proc.stderr
    assert outcomes == {
        ("test_absent_feature", "patched"): "passed",
        ("test_absent_feature", "stock"): "xfailed",
        ("test_assertion", "patched"): "passed",
        ("test_assertion", "stock"): "failed",  # it was an xfail: AssertionError excused
        ("test_passes_anyway", "patched"): "passed",
        ("test_passes_anyway", "stock"): "failed",  # XPASS(strict)
        ("test_other_feature", "patched"): "passed",
        ("test_other_feature", "stock"): "failed",  # lacks snapshot-uuid: assertion is real
        ("test_probe_matches_the_build", "patched"): "passed",
        ("test_probe_matches_the_build", "stock"): "passed",
    }, out
    assert "stock build lacks series feature(s) query-netdevs" in out
    assert json.loads((tmp_path / "results" / "features-stock.json").read_text()) == \
        dict.fromkeys(features.FEATURES, False)
    counts = junit_counts(junit)
    assert counts["patched"]["passed"] == 5 and counts["stock"]["xfailed"] == 1


def test_a_patched_build_that_lost_a_feature_is_caught(tmp_path):
    """The probe excuses the series tests of a feature the patched build lost; the probe's
    own test does not."""
    tests = tmp_path / "test_fake_series.py"
    tests.write_text(SERIES_TESTS)
    rig = {"patched": fake_build(tmp_path, "patched", PATCHED_LIST,
                                 BASE_COMMANDS + ["query-vm-snapshots"]),
           "stock": fake_build(tmp_path, "stock", STOCK_LIST, BASE_COMMANDS)}
    proc, outcomes, _ = run_rig(tmp_path, rig, tests)
    assert proc.returncode == 1
    assert outcomes[("test_probe_matches_the_build", "patched")] == "failed"
    assert outcomes[("test_other_feature", "patched")] == "passed"
    assert "the patched build lacks series feature(s) ['query-netdevs']" in proc.stdout


def test_series_marker_with_an_unknown_feature_is_a_usage_error(tmp_path):
    tests = tmp_path / "test_typo.py"
    tests.write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.series("query-netdev")
        def test_typo(build):
            pass
    '''))
    rig = {"patched": fake_build(tmp_path, "patched", PATCHED_LIST, BASE_COMMANDS),
           "stock": fake_build(tmp_path, "stock", STOCK_LIST, BASE_COMMANDS)}
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.qemu.conftest",
         f"--rootdir={tmp_path}", f"--results-dir={tmp_path / 'r'}", str(tests)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "QEMU_HARNESS_PATHS": str(paths_json(tmp_path, rig["patched"]))})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "unknown series feature(s) ['query-netdev']" in proc.stdout + proc.stderr
    assert not junit.exists()

"""Which features of the series a build has: probed once per build, not guessed from its name.

A test of a series feature is marked ``@pytest.mark.series`` (all features) or
``@pytest.mark.series("query-netdevs", ...)`` (the ones it needs). On a build whose probe
lacks one of them the test is a strict xfail that only an absent feature satisfies
(``ABSENT``: a missing QMP member or snapshot field, an unknown command or argument — never
an AssertionError), so every assertion a series test makes is real on every build; a test
that passes there fails (strict). On a build that has them all it is a plain test.
tests/qemu/test_features.py checks the probe itself: the patched build has every feature,
the stock build none.

FEATURES (name -> how it is probed):
  snapshot-uuid       `qemu-img snapshot -l` lists UUID and PARENT_UUID columns
  query-vm-snapshots  QMP `query-commands` names query-vm-snapshots
  query-netdevs       QMP `query-commands` names query-netdevs
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import commands
from .builds import QemuBuild
from .errors import MonitorError, RigError

FEATURES = {
    "snapshot-uuid": "qemu-img snapshot -l lists UUID and PARENT_UUID columns",
    "query-vm-snapshots": "QMP has query-vm-snapshots",
    "query-netdevs": "QMP has query-netdevs",
}
# What a series test raises on a build without the feature (rig.errors.FeatureAbsent is a
# LookupError): the expected failure. Anything else (an AssertionError, a VM that does not
# start) is a real failure on every build.
ABSENT = (LookupError, MonitorError)


class ProbeError(RigError):
    """The probe itself failed (a tool crashed, QMP said nothing): not an absent feature."""


def lists_uuids(listing: str) -> bool:
    """Does a `qemu-img snapshot -l` listing have the series' UUID columns?"""
    for line in listing.splitlines():
        cols = line.split()
        if cols[:2] == ["ID", "TAG"]:
            return "UUID" in cols and "PARENT_UUID" in cols
    raise ProbeError(f"no table header in `qemu-img snapshot -l` output:\n{listing}")


def qmp_commands(stdout: str) -> set[str]:
    """The command names in the `query-commands` reply of a QMP-over-stdio session."""
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        ret = json.loads(line).get("return")
        if isinstance(ret, list) and ret and all("name" in c for c in ret):
            return {c["name"] for c in ret}
    raise ProbeError(f"no query-commands reply in QMP output:\n{stdout[-2000:]}")


def _run(argv: list, stdin: str | None = None) -> str:
    try:
        proc = commands.run(argv, input=stdin, timeout=120)
    except OSError as exc:
        raise ProbeError(f"{' '.join(map(str, argv))}: {exc}") from exc
    argv = proc.argv
    if proc.timed_out:
        raise ProbeError(f"{' '.join(argv)}: timed out after 120 s")
    if proc.returncode != 0:
        raise ProbeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def probe(build: QemuBuild, workdir: Path) -> dict[str, bool]:
    """{feature: present} for ``build`` (scratch files in ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    image = workdir / "probe.qcow2"
    image.unlink(missing_ok=True)
    _run([build.img, "create", "-q", "-f", "qcow2", image, "1M"])
    _run([build.img, "snapshot", "-c", "probe", image])
    listing = _run([build.img, "snapshot", "-l", image])
    image.unlink()
    session = [{"execute": "qmp_capabilities"}, {"execute": "query-commands"},
               {"execute": "quit"}]
    commands = qmp_commands(_run(
        [build.system, "-M", "none", "-nodefaults", "-display", "none", "-no-user-config",
         "-qmp", "stdio"], stdin="".join(json.dumps(c) + "\n" for c in session)))
    return {
        "snapshot-uuid": lists_uuids(listing),
        "query-vm-snapshots": "query-vm-snapshots" in commands,
        "query-netdevs": "query-netdevs" in commands,
    }


def needed(marker_args: Iterable[str]) -> tuple[str, ...]:
    """The features a `series` marker names (none named: all of them)."""
    names = tuple(marker_args) or tuple(FEATURES)
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown series feature(s) {unknown}; known: {list(FEATURES)}")
    return names


def lacking(names: Iterable[str], have: Mapping[str, bool]) -> list[str]:
    """Which of ``names`` the probed build does not have."""
    return [n for n in names if not have.get(n, False)]

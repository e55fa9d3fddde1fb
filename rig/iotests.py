"""QEMU's iotests as the iotests suite runs them: which ones, which the series adds (and
the features each needs), and the reader of `check -tap` output."""

from __future__ import annotations

import json
import re
from pathlib import Path

IOTESTS = (
    "007 014 015 029 058 060 061 062 066 068 080 103 112 153 176 178 201 217 244 261 "
    "267 271 286 qcow2-internal-snapshots"
).split()
# The iotests the series adds (tests/qemu-iotests/tests/ of a tree with the series) and the
# features each needs (none named: the whole series; the stable fixes' iotests come with
# fixes the series carries, which no feature probe tells apart).
SERIES_IOTEST_FEATURES = {
    "qcow2-check-keep-snapshots": (),
    "loadvm-tag-not-id": (),
    "qcow2-snapshot-l1-overlap": (),
    "qcow2-snapshot-write-errors": (),
    "savevm-vmstate-flush-error": (),
    "qcow2-corrupt-node": (),
    "qcow2-snapshot-uuid": ("snapshot-uuid",),
    "qcow2-current-snapshot": ("snapshot-uuid",),
    "qcow2-snapshot-old-writer": ("snapshot-uuid",),
    "savevm-lineage": ("snapshot-uuid", "query-vm-snapshots"),
}
SERIES_IOTESTS = tuple(SERIES_IOTEST_FEATURES)

_TAP = re.compile(r"^(ok|not ok) qcow2 (\S+)(?:\s+#\s*(SKIP|TODO)\b(.*))?$", re.M)


class IotestsRun:
    def __init__(
        self,
        directory: Path,
        returncode: int,
        results: dict[str, str],
        elapsed: float,
        command: list[str],
        retried: dict[str, str],
        absent: frozenset[str] = frozenset(),
    ):
        self.retried = retried  # results of the one rerun of what failed first
        self.absent = absent  # series iotests this build's tree does not have
        self.directory = directory
        self.returncode = returncode
        self.results = results  # test name -> "pass" | "fail" | "not run"
        self.elapsed = elapsed
        self.command = command

    def to_json(self, run_id: str) -> str:
        return json.dumps({"run": run_id, "directory": str(self.directory),
                           "returncode": self.returncode, "results": self.results,
                           "elapsed": self.elapsed, "command": self.command,
                           "retried": self.retried, "absent": sorted(self.absent)}, indent=1)

    @classmethod
    def from_json(cls, text: str, run_id: str) -> IotestsRun | None:
        data = json.loads(text)
        if data.get("run") != run_id:
            return None  # another pytest run's
        return cls(Path(data["directory"]), data["returncode"], data["results"],
                   data["elapsed"], data["command"], data["retried"], frozenset(data["absent"]))


def parse_tap(text: str) -> dict[str, str]:
    results = {}
    for m in _TAP.finditer(text):
        ok, name, directive = m.group(1), m.group(2), m.group(3)
        results[name] = "not run" if directive == "SKIP" else ("pass" if ok == "ok" else "fail")
    return results

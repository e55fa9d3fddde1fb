"""Per-test result directories, one place for every suite's conftest (qemu, peers,
libvirt, reliability): out/results/<suite>/tests/<module>/<test>/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest


def safe_name(nodeid: str) -> str:
    """A test id as a directory name (parameters kept, at most 120 characters)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", nodeid.split("::", 1)[-1]).strip("_")[:120]


def fresh_test_dir(request, results_dir: Path, logs_key: pytest.StashKey) -> Path:
    """The test's directory, emptied, and remembered under ``logs_key`` so the
    report hook can name it when the test fails."""
    mod = Path(request.node.nodeid.split("::")[0]).stem
    path = results_dir / "tests" / mod / safe_name(request.node.nodeid)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    request.node.stash[logs_key] = path
    return path

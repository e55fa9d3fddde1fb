"""Replay every input the fuzzer kept (regressions/*.json + its image): each fz.OPS command
on its own copy, with the patched build (its ASan build when there is one). A crash, hang or
sanitizer report fails, unless the input names an open known bug (known.py): then a strict
xfail, and the test fails once the bug no longer shows (remove it from known.py and set
"bug" to null in the JSON: the input stays as a regression test)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.reliability import known
from tests.reliability.lib import fuzzimage as fz
from tests.reliability.lib.observe import Runner

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
CASES = sorted(REGRESSIONS.glob("*.json"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_regression(case, tools, scratch, summary):
    meta = json.loads(case.read_text())
    image = scratch / "regression.qcow2"
    image.write_bytes(gzip.decompress((REGRESSIONS / meta["image"]).read_bytes()))
    run = Runner(timeout=20)
    crashes = []
    for label, args, writes in fz.OPS:
        target = image
        if writes:
            target = scratch / "op.qcow2"
            shutil.copyfile(image, target)
        spec_first = "1"
        entries = meta.get("spec", {}).get("entries") or []
        if entries:
            try:
                name = bytes.fromhex(entries[0]["name"]["hex"]).decode()
                if name and name.isprintable() and not name.startswith("-"):
                    spec_first = name
            except (UnicodeDecodeError, KeyError, ValueError):
                pass
        res = run.run([tools.patched.img, *(a.replace("{first}", spec_first) for a in args),
                       str(target)])
        if res.crash:
            crashes.append(res.crash_text(label))
    summary.add("regressions", case.stem, {"bug": meta.get("bug"), "crashes": len(crashes)})
    bug = meta.get("bug")
    open_bug = bug in {b.id for b in known.KNOWN}
    if not crashes:
        if open_bug:
            pytest.fail(f"{bug} no longer crashes on {case.name}: remove it from known.py "
                        "and set \"bug\" to null there", pytrace=False)
        return
    ids = known.classify("fuzz", crashes)
    if open_bug and ids == {bug}:
        pytest.xfail(f"known bug {bug} (tests/reliability/bugs/BUGS.md)")
    pytest.fail("\n".join(crashes), pytrace=False)

"""Replay every input the fuzzer kept (regressions/*.json + its image): each fz.OPS command
on its own copy, with the patched build's ASan build when there is one, else the patched
build (an input kept for a sanitizer report then needs the ASan build: skipped, or failed
under --require-all). A crash, hang or
sanitizer report fails, unless the input names an open known bug (known.py): then a strict
xfail, and the test fails once the bug no longer shows (remove it from known.py and set
"bug" to null in the JSON: the input stays as a regression test).

And every open known bug's stand-alone reproducer (bugs/), on the patched build: a strict
xfail while it shows, a failure once it does not (fixed: remove it from known.py); and every
fixed bug's, which the patched build passes and stock fails."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rig import builds
from rig.errors import BuildMissing
from rig.reliability import fuzzimage as fz
from rig.reliability import known
from rig.reliability.observe import Runner

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
BUGS = Path(__file__).resolve().parent / "bugs"
CASES = sorted(REGRESSIONS.glob("*.json"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_regression(case, tools, require, scratch, summary):
    meta = json.loads(case.read_text())
    img = tools.patched.img
    try:
        img = str(builds.resolve("patched-asan").img)
    except BuildMissing as exc:
        if any("sanitizer" in c for c in meta.get("crashes", [])):
            require.missing(f"{case.name} needs the ASan build: {exc}")
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
        res = run.run([img, *(a.replace("{first}", spec_first) for a in args), str(target)])
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
    if open_bug and ids and bug in ids:  # (on the ASan build an input may hit others too)
        pytest.xfail(f"known bug(s) {', '.join(sorted(ids))} (tests/reliability/bugs/BUGS.md)")
    pytest.fail("\n".join(crashes), pytrace=False)


# Defined only while a bug is open (none is): an empty parameter list would be a skip.
@pytest.mark.parametrize("bug", known.KNOWN, ids=[b.id for b in known.KNOWN])
def _known_bug_reproducer(bug, tools, require):
    build = tools.patched
    if bug.asan:
        try:
            build = builds.resolve("patched-asan")
        except BuildMissing as exc:
            require.missing(f"{bug.reproducer} needs the ASan build: {exc}")
    res = subprocess.run(["sh", str(BUGS / bug.reproducer), str(build.img), str(build.io)],
                         capture_output=True, text=True, timeout=120, check=False)
    if res.returncode == 1:
        pytest.xfail(f"{bug.id} ({bug.origin}) still shows: {res.stdout.strip()[-300:]}")
    if res.returncode == 0:
        pytest.fail(f"{bug.id} no longer shows with {bug.reproducer}: it is fixed, remove it "
                    "from rig/reliability/known.py", pytrace=False)
    pytest.fail(f"{bug.reproducer} exited {res.returncode}:\n{res.stdout}\n{res.stderr}",
                pytrace=False)


if known.KNOWN:
    test_known_bug_reproducer = _known_bug_reproducer


def _reproduce(script: str, build) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(BUGS / script), str(build.img), str(build.io)],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("script", sorted(known.reproducers()))
def test_fixed_bug_reproducer(script, tools, require):
    """A fixed bug's reproducer: the patched build passes it (exit 0), and stock, which has
    the bug, fails it (exit 1), so the reproducer still reproduces what it was written for."""
    bugs = known.reproducers()[script]
    ids, asan = "/".join(b.id for b in bugs), any(b.asan for b in bugs)
    if asan:
        try:
            patched = builds.resolve("patched-asan")
        except BuildMissing as exc:
            require.missing(f"{script} needs the ASan build: {exc}")
    else:
        patched = tools.patched
    res = _reproduce(script, patched)
    assert res.returncode == 0, \
        f"{ids} shows again on the patched build (fixed by " \
        f"{'; '.join(sorted({b.fixed_by for b in bugs}))}):\n" \
        f"{res.stdout[-2000:]}{res.stderr[-2000:]}"
    if asan or tools.stock is None:
        return  # no ASan build of stock; without stock the patched side is the test
    res = _reproduce(script, tools.stock)
    assert res.returncode == 1, \
        f"{script} no longer shows {ids} on stock (exit {res.returncode}):\n" \
        f"{res.stdout[-2000:]}{res.stderr[-2000:]}"

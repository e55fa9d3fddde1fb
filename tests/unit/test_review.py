"""checkpatch, hygiene, per-patch build and the report — no QEMU build."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import commit_change, copy_of_template, git, import_fake, make_stack

from harness.core.config import Layout
from harness.core.git import Git
from harness.core.runner import NullLog
from harness.stages import bisect, export, report, series
from harness.stages import checkpatch as review

DATA = Path(__file__).parent / "data"

GOOD = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Test Author <author@example.invalid>
Date: Wed, 1 Jan 2020 00:00:00 +0000
Subject: [PATCH 1/2] qcow2: keep snapshot UUIDs across table rewrites

Rewriting the snapshot table dropped the new extra data fields, so every
snapshot lost its identity on the next snapshot create.

Signed-off-by: Test Author <author@example.invalid>
---
 block/qcow2-snapshot.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/block/qcow2-snapshot.c b/block/qcow2-snapshot.c
--- a/block/qcow2-snapshot.c
+++ b/block/qcow2-snapshot.c
@@ -1 +1,2 @@
 int snapshot;
+int uuid;
"""


def test_recorded_checkpatch_output_is_parsed():
    errors, warnings = review.parse_checkpatch((DATA / "checkpatch-terse.txt").read_text())
    assert errors == ["line 17: trailing whitespace",
                      "line 19: trailing statements should be on next line",
                      "line 19: braces {} are necessary for all arms of this statement",
                      "line 24: Missing Signed-off-by: line(s)"]
    assert warnings == []
    errors, warnings = review.parse_checkpatch(
        (DATA / "checkpatch-terse-warning.txt").read_text())
    assert warnings == ["line 19: line over 80 characters"] and len(errors) == 2


def test_checkpatch_runs_once_per_patch_like_b4(tmp_path, log):
    """A stand-in checkpatch.pl replays the recorded output and records its argv."""
    src = tmp_path / "qemu"
    (src / "scripts").mkdir(parents=True)
    calls = tmp_path / "calls"
    (src / "scripts" / "checkpatch.pl").write_text(
        f'open(my $c, ">>", "{calls}"); print $c join(" ", @ARGV), "\\n";\n'
        'my $in = do { local $/; <STDIN> };\n'
        f'if ($in =~ /do a thing/) {{ open(my $r, "<", "{DATA}/checkpatch-terse.txt");'
        ' print while <$r>; exit 1 }\nexit 0;\n')
    good = tmp_path / "0001-good.patch"
    good.write_text(GOOD)
    bad = tmp_path / "0002-bad.patch"
    bad.write_text((DATA / "bad.patch").read_text())
    reviews = review.review_patches(src, [good, bad], log)
    assert calls.read_text().splitlines() == ["-q --terse --no-summary --mailback -"] * 2
    assert reviews[0].ok and reviews[0].errors == [] and reviews[0].hygiene == []
    assert len(reviews[1].errors) == 4 and not reviews[1].ok
    assert "no Signed-off-by" in reviews[1].hygiene
    assert "| 0002-bad.patch | 4 | 0 |" in review.table(reviews)


@pytest.mark.parametrize("mutate, problem", [
    (lambda t: t.replace("Signed-off-by: Test Author <author@example.invalid>\n", ""),
     "no Signed-off-by"),
    (lambda t: t.replace("qcow2: keep snapshot UUIDs across table rewrites",
                         "Keep snapshot UUIDs across table rewrites"),
     "subject is not 'subsystem: summary'"),
    (lambda t: t.replace("qcow2: keep snapshot UUIDs across table rewrites",
                         "qcow2: keep snapshot UUIDs across table rewrites, also when the "
                         "table is moved"),
     "columns (< 76)"),
    (lambda t: t.replace("Rewriting the snapshot table dropped the new extra data fields, so "
                         "every\nsnapshot lost its identity on the next snapshot create.\n\n",
                         ""),
     "does not explain why"),
    (lambda t: t.replace("+int uuid;", "+int uuid; "), "whitespace damage"),
])
def test_hygiene_problems(mutate, problem):
    assert review.hygiene(GOOD) == []
    found = review.hygiene(mutate(GOOD))
    assert any(problem in p for p in found), found


def _toy_tree(project):
    import_fake(project)
    tree = project.layout.qemu
    (tree / "configure").write_text(
        "#!/bin/sh\nprintf 'rule cc\\n  command = gcc -Wall -Werror -c $in -o $out\\n"
        "build main.o: cc ../main.c\\n' > build.ninja\n")
    (tree / "main.c").write_text("int main(void) { return 0; }\n")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "toy build")
    git(tree, "tag", "-f", "series-base")
    make_stack(project.layout, [
        ("toy", (), [
            ("main.c", "int f(void);\nint main(void) { return 0; }\n", "toy: declare f"),
            ("main.c", "int f(void)\nint main(void) { return 0; }\n", "toy: break the build"),
            ("main.c", "int f(void);\nint main(void) { return 1; }\n", "toy: fix it again"),
        ]),
        ("alone", (), [("README.rst", "fake qemu, alone\n", "docs: a series on its own")]),
    ])
    export.export_series(project.layout, project.baseline, NullLog())


@pytest.fixture
def toy(project, tmp_path_factory, monkeypatch):
    """A fake imported tree whose 'configure' writes a real build.ninja, and
    two series: 'toy' (three patches, the second breaks the build) and
    'alone', stacked on it but needing nothing."""
    ninja = Path(sys.executable).parent / "ninja"
    if not ninja.exists():
        pytest.skip("ninja is not installed in the venv running the tests "
                    "(python3 build.py setup installs it)")
    monkeypatch.setattr(Layout, "tool", lambda self, name: str(ninja))
    return copy_of_template(project, tmp_path_factory, "toy", _toy_tree)


def test_bisect_finds_the_patch_that_breaks_the_build(toy, log):
    stack = series.read_stack(toy.layout.patches)
    result = bisect.bisect(toy.layout, toy.baseline, stack, log, targets=("main.o",))
    assert [(s.series, s.patch, s.applied, s.built) for s in result.steps] == [
        ("", "series-base", True, True),
        ("toy", "0001-toy-declare-f.patch", True, True),
        ("toy", "0002-toy-break-the-build.patch", True, False),
        ("toy", "0003-toy-fix-it-again.patch", True, True),
        ("alone", "0001-docs-a-series-on-its-own.patch", True, True),
    ]
    assert "the bisect build failed" in result.steps[2].error
    # 'alone' needs nothing: it also applies and builds on series-base alone
    assert [(a.series, a.on, a.applied, a.built) for a in result.alone] == [
        ("alone", "series-base", True, True)]
    assert result.failures() == ["toy/0002-toy-break-the-build.patch"]
    table = bisect.table(result)
    assert "### series toy\n\n| patch |" in table
    assert "| 0002-toy-break-the-build.patch | ok | FAILED | - |" in table
    assert table.index("### series toy") < table.index("### series alone")
    assert "| alone | series-base | ok | ok |" in table
    # qemu/ itself was not touched
    assert git(toy.layout.qemu, "status", "--porcelain", "--untracked-files=no") == ""
    # what the report reads back
    bisect.save(result, toy.layout.results / "bisect.json")
    again = bisect.load(json.loads((toy.layout.results / "bisect.json").read_text()))
    assert bisect.table(again) == table


def test_bisect_stops_at_a_patch_that_does_not_apply(toy, log, tmp_path):
    stack = series.read_stack(toy.layout.patches)
    patches = stack[0].patches
    broken = tmp_path / "0002-broken.patch"
    broken.write_text(patches[1].read_text().replace("int f(void);", "int g(void);"))
    stack[0] = replace(stack[0], patches=(patches[0], broken, patches[2]))
    result = bisect.bisect(toy.layout, toy.baseline, stack, log, targets=("main.o",))
    assert [(s.patch, s.applied) for s in result.steps][-1] == ("0002-broken.patch", False)
    assert len(result.steps) == 3
    assert result.failures() == ["toy/0002-broken.patch"]
    assert result.steps[-1].built is None and result.steps[-1].conflicts == ["main.c"]
    assert "| 0002-broken.patch | NO | - | - |" in bisect.table(result)
    # the bisect tree is left clean for the next run (no `git am` in progress,
    # although this machine has no committer identity configured)
    assert not git(toy.layout.bisect_tree, "status", "--porcelain", "--untracked-files=no")
    assert not Git(toy.layout.bisect_tree).am_in_progress()


def test_a_series_that_needs_more_than_it_says_does_not_apply_alone(toy, log, tmp_path):
    tree = toy.layout.qemu
    commit_change(tree, "main.c", "int f(void);\nint main(void) { return 2; }\n",
                  "toy: return 2")
    late = tmp_path / "0001-toy-return-2.patch"
    late.write_text(git(tree, "format-patch", "-1", "--stdout"))
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    stack = series.read_stack(toy.layout.patches)
    stack.append(series.Series("late", tmp_path, (), (late,)))
    result = bisect.bisect(toy.layout, toy.baseline, stack, log, targets=("main.o",))
    assert result.steps[-1].series == "late" and result.steps[-1].built
    check = result.alone[-1]
    assert (check.series, check.applied, check.built) == ("late", False, None)
    assert check.conflicts == ["main.c"]
    assert check.error == "late/0001-toy-return-2.patch does not apply"
    assert "late on series-base" in result.failures()
    assert "| late | series-base | NO: late/0001-toy-return-2.patch does not apply | - |" \
        in bisect.table(result)


def test_checkpatch_names_the_series_of_each_patch(toy, log, tmp_path):
    (toy.layout.qemu / "scripts").mkdir()
    (toy.layout.qemu / "scripts" / "checkpatch.pl").write_text(
        "my $in = do { local $/; <STDIN> };\nexit 0;\n")
    stack = series.read_stack(toy.layout.patches)
    reviews = review.review_stack(toy.layout.qemu, stack, log)
    assert [(r.series, r.patch) for r in reviews] == [
        ("toy", "0001-toy-declare-f.patch"), ("toy", "0002-toy-break-the-build.patch"),
        ("toy", "0003-toy-fix-it-again.patch"), ("alone", "0001-docs-a-series-on-its-own.patch")]
    table = review.table(reviews)
    assert table.startswith("### series toy\n\n| patch | errors | warnings | hygiene |\n")
    assert "### series alone\n\n| patch | errors | warnings | hygiene |\n|---|---:|---:|---|\n" \
        "| 0001-docs-a-series-on-its-own.patch | 0 | 0 |" in table
    review.save(reviews, tmp_path / "checkpatch.json")
    assert review.load(json.loads((tmp_path / "checkpatch.json").read_text())) == reviews


BUILD = '<properties><property name="build" value="%s"/></properties>'


def test_report_gathers_results_and_names_missing_inputs(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    res = layout.results
    res.mkdir(parents=True)
    review.save([review.PatchReview("0001-a.patch", [], ["line 3: w"], [])],
                res / "checkpatch.json")
    (res / "junit-qemu.xml").write_text(
        '<testsuites><testsuite name="qemu">'
        '<testcase classname="t" name="test_savevm[hmp-patched]">' + BUILD % "patched" +
        '</testcase><testcase classname="t" name="test_savevm[hmp-stock]">' + BUILD % "stock" +
        '</testcase><testcase classname="t" name="test_uuid[qmp-stock]">' + BUILD % "stock" +
        '<skipped type="pytest.xfail" message="series feature"/></testcase>'
        '<testcase classname="t" name="test_uuid[qmp-patched]">' + BUILD % "patched" +
        '<failure message="x"/></testcase>'
        # a name that says nothing about the build (test_qcow2_bad_input's ASan variant)
        '<testcase classname="t" name="test_bad[asan-24]">' + BUILD % "patched-asan" +
        '</testcase></testsuite></testsuites>')
    (res / "junit-iotests.xml").write_text(
        '<testsuites><testsuite name="iotests">'
        '<testcase classname="t" name="test_iotest[stock-153]"><properties>'
        '<property name="build" value="stock"/><property name="flaky" value="first run: fail; '
        'passed on rerun"/></properties></testcase>'
        '<testcase classname="t" name="test_iotest[stock-007]">' + BUILD % "stock" +
        '</testcase></testsuite></testsuites>')
    (res / "bench.json").write_text(json.dumps({"rows": [
        {"name": "qemu-img snapshot -c x1000", "patched": "1.02 s", "stock": "1.00 s",
         "ratio": "1.02", "target": "<= 1.05"}]}))
    stock = layout.stock / "build"
    stock.mkdir(parents=True)
    (stock / "metadata.json").write_text(json.dumps({
        "baseline": {"profile": "10.2.2", "upstream": "10.2.2", "ident": "qemu 1:10.2.2+ds-1",
                     "source": "debian", "orig_sha256": "be05230f" * 8, "base_commit": "c" * 40},
        "head": "c" * 40, "series": [], "built_at": "2026-01-01T00:00:00Z"}))
    from harness.core.config import select_baseline
    path = report.write(layout, select_baseline("10.2.2"))
    md = path.read_text()
    assert "Selected baseline profile: 10.2.2 (QEMU 10.2.2, qemu 1:10.2.2+ds-1)." in md
    assert "- **stock**: baseline 10.2.2 (QEMU 10.2.2): qemu 1:10.2.2+ds-1 (debian" in md
    assert "not the selected" not in md
    md = report.write(layout, select_baseline("10.0.13")).read_text()
    assert "- stock: built from profile 10.2.2, not the selected 10.0.13" in md
    assert "| 0001-a.patch | 0 | 1 | ok |" in md
    assert "| QEMU tests on real guests | patched | 1 | 1 | 0 | 0 | 0 |" in md
    assert "| QEMU tests on real guests | stock | 1 | 0 | 0 | 1 | 0 |" in md
    assert "| QEMU tests on real guests | patched-asan | 1 | 0 | 0 | 0 | 0 |" in md
    assert "| Upstream iotests | stock | 1 | 0 | 1 | 0 | 0 |" in md
    assert "| qemu-img snapshot -c x1000 | 1.02 s | 1.00 s | 1.02 | <= 1.05 |" in md
    assert "Not run: `python3 build.py bisect`." in md
    assert "patched: no build (run `python3 build.py build`)" in md
    html = (res / "report.html").read_text()
    assert "<table>" in html and "<h2>Tests</h2>" in html


def test_closing_line_sums_the_suites(tmp_path):
    from harness.stages import testrun
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    layout.results.mkdir(parents=True)
    (layout.results / "junit-unit.xml").write_text(
        '<testsuites><testsuite><testcase name="a"/><testcase name="b"/></testsuite>'
        '</testsuites>')
    (layout.results / "junit-qemu.xml").write_text(
        '<testsuites><testsuite><testcase name="t[stock]"><skipped type="pytest.xfail" '
        'message="x"/></testcase><testcase name="u"><failure message="f"/></testcase>'
        '<testcase name="v"><skipped message="no ASan build"/></testcase>'
        '<testcase name="w"><properties><property name="flaky" value="rerun"/></properties>'
        '</testcase></testsuite></testsuites>')
    assert testrun.closing_line(layout, ["unit", "qemu", "iotests"]) == \
        "tests: 2 passed, 1 failed, 1 flaky, 1 xfailed, 1 skipped"


def test_report_groups_checkpatch_and_bisect_per_series(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    res = layout.results
    review.save([review.PatchReview("0001-qcow2-fix.patch", ["line 9: e"], [], [],
                                    "stable-fixes"),
                 review.PatchReview("0001-net-a.patch", [], [], [], "query-netdevs")],
                res / "checkpatch.json")
    bisect.save(bisect.BisectResult(
        [bisect.Step("series-base", True, True, 1.0),
         bisect.Step("0001-qcow2-fix.patch", True, True, 2.0, series="stable-fixes"),
         bisect.Step("0001-net-a.patch", True, True, 3.0, series="query-netdevs")],
        [bisect.Alone("query-netdevs", "series-base", True, False, 4.0, "it broke")]),
        res / "bisect.json")
    md = report.write(layout).read_text()
    checkpatch = md.split("## checkpatch and hygiene", 1)[1].split("\n## ", 1)[0]
    assert checkpatch.index("### series stable-fixes") < \
        checkpatch.index("| 0001-qcow2-fix.patch | 1 | 0 | ok |") < \
        checkpatch.index("### series query-netdevs") < checkpatch.index("| 0001-net-a.patch |")
    assert "- stable-fixes/0001-qcow2-fix.patch: ERROR: line 9: e" in checkpatch
    builds = md.split("## Every patch builds", 1)[1].split("\n## ", 1)[0]
    assert "| series-base | ok | ok | - | 1.0 |" in builds
    assert "### series query-netdevs\n\n| patch | applies | builds | tests | seconds |" in builds
    assert "| query-netdevs | series-base | ok | FAILED | 4.0 |" in builds
    assert "<h3>series stable-fixes</h3>" in (res / "report.html").read_text()


def test_report_reads_results_from_before_several_series(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    layout.results.mkdir(parents=True)
    (layout.results / "bisect.json").write_text(json.dumps([
        {"patch": "series-base", "applied": True, "built": True, "seconds": 1.0,
         "tested": None, "error": ""},
        {"patch": "0001-a.patch", "applied": True, "built": False, "seconds": 2.0,
         "tested": None, "error": "x"}]))
    md = report.markdown(layout)
    assert "| 0001-a.patch | ok | FAILED | - | 2.0 |" in md and "### series" not in md


def test_build_metadata_and_report_name_the_series_of_each_commit(exported, log):
    from harness.core.config import PROFILES
    from harness.stages import build as qbuild
    layout = exported.layout
    PROFILES["patched"].build_dir(layout).mkdir()
    meta = qbuild.write_metadata(PROFILES["patched"], layout, [], exported.baseline, log)
    assert [(c["series"], c["subject"]) for c in meta["series"]] == [
        ("stable-fixes", "qcow2: fix a leak"),
        ("snapshot-identity", "qcow2: add snapshot UUIDs"),
        ("snapshot-identity", "docs: describe snapshot UUIDs"),
        ("vm-lineage", "migration: record VM snapshot lineage"),
        ("query-netdevs", "net: remember each backend's configuration"),
        ("query-netdevs", "qapi/net: add query-netdevs")]
    md = report.markdown(layout)
    assert "  - series **snapshot-identity**: 2 patch(es)\n    - `" in md
    assert md.index("**stable-fixes**") < md.index("qcow2: fix a leak") < \
        md.index("**snapshot-identity**") < md.index("docs: describe snapshot UUIDs")

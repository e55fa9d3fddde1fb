"""`port`: the series applied and built patch by patch on another baseline's
tree (fake tarballs, a toy build with real ninja and gcc, no QEMU)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAKE_FILES, git, make_stack, make_tarball

from harness.core.config import Layout
from harness.core.pipeline import Context, Status
from harness.stages import baseline, clean, export, port, report, series

TOY_CONFIGURE = ("#!/bin/sh\nprintf 'rule cc\\n  command = gcc -Wall -Werror -c $in -o $out\\n"
                 "build main.o: cc ../main.c\\n' > build.ninja\n")
TOY = dict(FAKE_FILES, **{"configure": TOY_CONFIGURE,
                          "main.c": "int main(void) { return 0; }\n"})


@pytest.fixture
def ported(project, log, monkeypatch):
    """qemu/ on the toy 10.0.13 with a five-patch series in patches/, and an
    'older' baseline 9.0.0 whose block/qcow2-snapshot.c differs."""
    ninja = Path(sys.executable).parent / "ninja"
    if not ninja.exists():
        pytest.skip("ninja is not installed in the venv running the tests "
                    "(python3 build.py setup installs it)")
    monkeypatch.setattr(Layout, "tool", lambda self, name: str(ninja))
    sha = make_tarball(project.tarball, TOY)
    project.baseline = replace(project.baseline, orig_sha256=sha)
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)
    make_stack(project.layout, [
        ("toy", (), [
            ("main.c", "int f(void);\nint main(void) { return 0; }\n", "toy: declare f"),
            ("main.c", "int f(void)\nint main(void) { return 0; }\n", "toy: break the build"),
            ("main.c", "int f(void);\nint main(void) { return 1; }\n", "toy: fix it again"),
            ("block/qcow2-snapshot.c", "int snapshot;\nint uuid;\n", "qcow2: a snapshot uuid"),
            ("README.rst", "fake qemu\nwith uuids\n", "docs: mention uuids"),
        ]),
    ])
    export.export_series(project.layout, project.baseline, log)

    old_tarball = project.tmp / "qemu_9.0.0+ds.orig.tar.xz"
    old_files = dict(TOY, VERSION="9.0.0\n",
                     **{"block/qcow2-snapshot.c": "int snapshot; /* 9.0 */\n"})
    old = replace(project.baseline, name="9.0.0", upstream_version="9.0.0",
                  upstream_tag="v9.0.0", debian_version="1:9.0.0+ds-1",
                  orig_tarball=old_tarball.name, orig_topdir="qemu-9.0.0",
                  orig_sha256=make_tarball(old_tarball, old_files, topdir="qemu-9.0.0"))
    fixups = project.layout.fixups / "9.0.0"
    fixups.mkdir()
    (fixups / "0001-test.diff").write_text(
        (project.layout.fixups / "10.0.13" / "0001-test.diff").read_text())
    project.old, project.old_tarball = old, old_tarball
    return project


def _run(ported, log, **kw):
    patches = series.read_series(ported.layout.patches)
    return port.port(ported.layout, ported.old, patches, log, targets=("main.o",),
                     tarball=ported.old_tarball, **kw)


def test_port_applies_and_builds_patch_by_patch_until_the_first_conflict(ported, log):
    head = git(ported.layout.qemu, "rev-parse", "HEAD")
    res = _run(ported, log)
    assert [(s.patch, s.applied, s.built, s.conflicts) for s in res.steps] == [
        ("series-base", True, True, []),
        ("0001-toy-declare-f.patch", True, True, []),
        ("0002-toy-break-the-build.patch", True, False, []),
        ("0003-toy-fix-it-again.patch", True, True, []),
        ("0004-qcow2-a-snapshot-uuid.patch", False, None, ["block/qcow2-snapshot.c"]),
        ("0005-docs-mention-uuids.patch", None, None, []),  # not tried
    ]
    assert res.summary() == (
        "3 of 5 patch(es) apply on 9.0.0 (qemu 1:9.0.0+ds-1), 2 build; "
        "0004-qcow2-a-snapshot-uuid.patch does not apply "
        "(conflicts in block/qcow2-snapshot.c)")
    tree = ported.layout.port_tree("9.0.0")
    assert res.tree == str(tree) == str(ported.root / "out/port/9.0.0/qemu")
    # its own import of that profile, with that profile's fix-ups; `git am` aborted
    marker = baseline.read_marker(tree)
    assert marker["profile"] == "9.0.0" and marker["fixups"] == ["0001-test.diff"]
    assert not (tree / ".git" / "rebase-apply").exists()
    assert (tree / "VERSION").read_text() == "9.0.0\n"
    meta = json.loads((tree / "build" / "metadata.json").read_text())
    assert meta["baseline"]["profile"] == "9.0.0"
    # qemu/ was not touched
    assert git(ported.layout.qemu, "rev-parse", "HEAD") == head
    assert baseline.read_marker(ported.layout.qemu)["profile"] == "10.0.13"

    table = port.table(res)
    assert "| series-base | (baseline) | - | yes |" in table
    assert "| 0002-toy-break-the-build.patch | yes | - | FAILED |" in table
    assert "| 0004-qcow2-a-snapshot-uuid.patch | NO | block/qcow2-snapshot.c | - |" in table
    assert "| 0005-docs-mention-uuids.patch | not tried | - | - |" in table


def test_port_again_reuses_the_tree_from_the_baseline(ported, log):
    first = _run(ported, log)
    base = git(ported.layout.port_tree("9.0.0"), "rev-parse", "series-base")
    again = _run(ported, log, build=False)
    assert git(ported.layout.port_tree("9.0.0"), "rev-parse", "series-base") == base
    assert [(s.applied, s.conflicts) for s in again.steps] == \
        [(s.applied, s.conflicts) for s in first.steps]
    assert all(s.built is None for s in again.steps)
    assert again.summary().startswith("3 of 5 patch(es) apply on 9.0.0 (qemu 1:9.0.0+ds-1);")


def test_a_port_tree_of_other_contents_is_imported_again(ported, log):
    _run(ported, log, build=False)
    tree = ported.layout.port_tree("9.0.0")
    marker = tree / ".git" / baseline.MARKER
    marker.write_text(marker.read_text().replace("1:9.0.0+ds-1", "1:9.0.0+ds-0"))
    _run(ported, log, build=False)
    assert "1:9.0.0+ds-1" in marker.read_text()


def test_port_stage_is_not_gating_and_the_report_shows_the_table(ported, log, capsys):
    ctx = Context(layout=ported.layout, baseline=ported.old)
    outcome = port.stage(ctx, port.PortRequest(tarball=ported.old_tarball, no_build=True), log)
    assert outcome.summary.startswith("3 of 5 patch(es) apply on 9.0.0")
    assert "toy/0004-qcow2-a-snapshot-uuid.patch does not apply" in outcome.summary
    # each patch named with its series
    assert "| toy/0004-qcow2-a-snapshot-uuid.patch | NO |" in outcome.text
    data = json.loads((ported.layout.results / "port-9.0.0.json").read_text())
    assert data["profile"] == "9.0.0" and data["build"] is False
    assert {s["series"] for s in data["steps"][1:]} == {"toy"}
    assert data["steps"][4]["conflicts"] == ["block/qcow2-snapshot.c"]
    md = report.write(ported.layout).read_text()
    assert "## Port to 9.0.0" in md
    assert "3 of 5 patch(es) apply on 9.0.0" in md
    assert "`python3 build.py --baseline 9.0.0 port --no-build`" in md
    assert "| toy/0004-qcow2-a-snapshot-uuid.patch | NO | block/qcow2-snapshot.c | - | 0.0 |" \
        in md.replace("| 0.1 |", "| 0.0 |")


def test_port_fails_when_the_baseline_itself_does_not_build(ported, log):
    from harness.core.errors import BuildFailed
    broken = dict(TOY, VERSION="9.0.0\n", **{"main.c": "int main(void) { return 0 }\n"})
    sha = make_tarball(ported.old_tarball, broken, topdir="qemu-9.0.0")
    ported.old = replace(ported.old, orig_sha256=sha)
    ctx = Context(layout=ported.layout, baseline=ported.old)
    # patch 1 no longer applies either; the tree still gets its table
    outcome = port.stage(ctx, port.PortRequest(tarball=ported.old_tarball), log)
    assert outcome.status is Status.FAILED
    assert "0001" in outcome.text  # the table is still shown
    err = outcome.error
    assert isinstance(err, BuildFailed)
    assert "baseline 9.0.0 itself does not build" in err.message
    assert "harness/fixups/9.0.0/" in err.hint and "--no-build" in err.hint
    data = json.loads((ported.layout.results / "port-9.0.0.json").read_text())
    assert data["steps"][0]["built"] is False
    assert all(s["built"] is None for s in data["steps"][1:])


def test_clean_trees_removes_the_port_trees(ported, log):
    _run(ported, log, build=False)
    assert ported.layout.port_dir.exists()
    ctx = Context(layout=ported.layout, baseline=ported.baseline)
    clean.stage(ctx, clean.CleanRequest(trees=True, force=True), log)
    assert not ported.layout.port_dir.exists() and not ported.layout.qemu.exists()


def test_port_command_line():
    import importlib.util

    from harness.core.config import ROOT
    spec = importlib.util.spec_from_file_location("build_cli", ROOT / "build.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.parser().parse_args(["--baseline", "10.0.13", "port", "--no-build", "-j", "2",
                                    "--tarball", "/x/q.tar.xz"])
    assert (args.baseline, args.command, args.no_build, args.jobs, str(args.tarball)) == \
        ("10.0.13", "port", True, 2, "/x/q.tar.xz")
    assert cli.parser().parse_args(["port", "--baseline", "10.0.13"]).baseline == "10.0.13"
    assert cli.parser().parse_args(["--baseline", "10.0.13", "status"]).baseline == "10.0.13"
    assert cli.parser().parse_args(["status"]).baseline is None


def test_port_without_patches_is_a_usage_error(project, log):
    from harness.core.errors import UsageError
    ctx = Context(layout=project.layout, baseline=project.baseline)
    with pytest.raises(UsageError, match="no patches to port"):
        port.stage(ctx, port.PortRequest(), log)


def test_port_tries_an_independent_series_alone_after_a_conflict(ported, log):
    """One series that does not apply does not hide whether an independent one does:
    0005 (as if a series that needs nothing) is tried on the baseline by itself."""
    patches = series.read_series(ported.layout.patches)
    res = _run(ported, log, alone=[[patches[4]]])
    assert [(s.patch, s.applied, s.built) for s in res.steps] == [
        ("series-base", True, True),
        ("0001-toy-declare-f.patch", True, True),
        ("0002-toy-break-the-build.patch", True, False),
        ("0003-toy-fix-it-again.patch", True, True),
        ("0004-qcow2-a-snapshot-uuid.patch", False, None),
        ("0005-docs-mention-uuids.patch", True, True),
    ]
    assert res.applied == 4

"""apply / export of the series on a fake imported tree."""

from __future__ import annotations

import shutil

import pytest
from conftest import commit_change, git

from harness import baseline, series
from harness.errors import PatchConflict, UsageError


@pytest.fixture
def imported(project, log):
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)
    return project


def _write_series(imported, log):
    tree = imported.layout.qemu
    commit_change(tree, "block/qcow2-snapshot.c", "int snapshot;\nint uuid;\n",
                  "qcow2: add snapshot UUIDs")
    commit_change(tree, "docs/uuid.txt", "uuid docs\n", "docs: describe snapshot UUIDs")
    names = series.export_series(imported.layout, imported.baseline, log)
    return names


def test_export_writes_numbered_patches_series_and_cover(imported, log):
    names = _write_series(imported, log)
    patches = imported.layout.patches
    assert names == ["0001-qcow2-add-snapshot-UUIDs.patch",
                     "0002-docs-describe-snapshot-UUIDs.patch"]
    assert (patches / "series").read_text().splitlines() == names
    assert (patches / series.COVER).exists()
    first = (patches / names[0]).read_text()
    assert first.startswith("From 0000000000000000000000000000000000000000")
    assert "Subject: [PATCH 1/2] qcow2: add snapshot UUIDs" in first


def test_apply_then_export_round_trips(imported, log, tmp_path):
    names = _write_series(imported, log)
    cover = imported.layout.patches / series.COVER
    text = cover.read_text().replace(series.SUBJECT_PLACEHOLDER, "snapshot identity")
    cover.write_text(text.replace(series.BLURB_PLACEHOLDER, "Why we do this."))
    saved = {p.name: p.read_text() for p in imported.layout.patches.iterdir()}
    # start again from the baseline and apply patches/
    tree = imported.layout.qemu
    git(tree, "checkout", "-q", "series-base")
    git(tree, "branch", "-D", "series")
    res = series.apply_series(imported.layout, imported.baseline, log)
    assert res.applied == names
    # applying again is a no-op
    assert series.apply_series(imported.layout, imported.baseline, log).applied == []
    series.export_series(imported.layout, imported.baseline, log)
    again = {p.name: p.read_text() for p in imported.layout.patches.iterdir()}
    assert again == saved
    assert "Subject: [PATCH 0/2] snapshot identity" in again[series.COVER]
    assert "Why we do this." in again[series.COVER]


def test_export_drops_patches_that_left_the_series(imported, log):
    _write_series(imported, log)
    git(imported.layout.qemu, "reset", "-q", "--hard", "HEAD~1")
    names = series.export_series(imported.layout, imported.baseline, log)
    assert names == ["0001-qcow2-add-snapshot-UUIDs.patch"]
    assert sorted(p.name for p in imported.layout.patches.glob("000[1-9]*")) == names


def test_conflicting_patch_names_patch_and_files(imported, log, tmp_path):
    _write_series(imported, log)
    tree = imported.layout.qemu
    # the baseline changes under the series: patch 1 no longer applies
    git(tree, "checkout", "-q", "series-base")
    git(tree, "branch", "-D", "series")
    (tree / "block/qcow2-snapshot.c").write_text("int something_else;\n")
    git(tree, "commit", "-q", "-am", "rewrite")
    git(tree, "tag", "-f", "series-base")
    with pytest.raises(PatchConflict) as err:
        series.apply_series(imported.layout, imported.baseline, log)
    msg = err.value.message
    assert "0001-qcow2-add-snapshot-UUIDs.patch does not apply" in msg
    assert "block/qcow2-snapshot.c" in msg
    assert "git -C qemu am --continue" in err.value.hint
    assert err.value.exit_code == 5
    # a second run refuses to pile on the half-done am
    with pytest.raises(PatchConflict, match="still in progress"):
        series.apply_series(imported.layout, imported.baseline, log)


def test_apply_refuses_uncommitted_work(imported, log):
    _write_series(imported, log)
    tree = imported.layout.qemu
    (tree / "README.rst").write_text("my unsaved edit\n")
    with pytest.raises(PatchConflict, match="uncommitted changes"):
        series.apply_series(imported.layout, imported.baseline, log)
    assert (tree / "README.rst").read_text() == "my unsaved edit\n"


def test_diverged_branch_is_kept_unless_reset(imported, log):
    _write_series(imported, log)
    tree = imported.layout.qemu
    commit_change(tree, "new.c", "x\n", "block: unexported work")
    head = git(tree, "rev-parse", "HEAD").strip()
    # patches/ says 2 patches, branch has those 2 + 1 more: that is a prefix,
    # so apply has nothing to do and keeps the extra commit
    assert series.apply_series(imported.layout, imported.baseline, log).applied == []
    git(tree, "reset", "-q", "--hard", "HEAD~2")
    commit_change(tree, "other.c", "y\n", "block: different work")
    with pytest.raises(PatchConflict, match="differ from patches/series"):
        series.apply_series(imported.layout, imported.baseline, log)
    res = series.apply_series(imported.layout, imported.baseline, log, reset=True)
    assert len(res.applied) == 2
    backups = git(tree, "branch", "--list", "series-backup-*").split()
    assert backups, "the diverged branch must be kept"
    assert head != git(tree, "rev-parse", "HEAD").strip()


def test_series_file_naming_missing_patch(imported, log):
    (imported.layout.patches / "series").write_text("0001-gone.patch\n")
    with pytest.raises(UsageError, match="0001-gone.patch"):
        series.apply_series(imported.layout, imported.baseline, log)


def test_empty_series_applies_and_exports(imported, log):
    res = series.apply_series(imported.layout, imported.baseline, log)
    assert res.applied == [] and res.already == 0
    assert series.export_series(imported.layout, imported.baseline, log) == []
    assert (imported.layout.patches / "series").read_text() == ""


def test_apply_before_import(project, log):
    shutil.rmtree(project.layout.qemu, ignore_errors=True)
    with pytest.raises(UsageError, match="not imported"):
        series.apply_series(project.layout, project.baseline, log)


def test_conflicting_files_from_recorded_git_am_output(tmp_path):
    """Each way `git am -3` reports a file it cannot handle (recorded outputs; the
    last is the real series on 10.2.2, where docs/interop/qcow2.txt became .rst)."""
    from harness.git import Git
    tree = tmp_path / "t"
    tree.mkdir()
    git(tree, "init", "-q")
    outputs = {
        "error: patch failed: block/qcow2.c:123\nerror: block/qcow2.c: patch does not apply\n":
            ["block/qcow2.c"],
        "Auto-merging a.c\nCONFLICT (content): Merge conflict in a.c\n"
        "CONFLICT (content): Merge conflict in b.c\n": ["a.c", "b.c"],
        "CONFLICT (modify/delete): docs/x.txt deleted in HEAD and modified in "
        "Add x. Version Add x of docs/x.txt left in tree.\n": ["docs/x.txt"],
        "error: docs/interop/qcow2.txt: does not exist in index\n": ["docs/interop/qcow2.txt"],
        "Applying: docs/interop/qcow2: Specify snapshot UUIDs and the current snapshot\n"
        "error: sha1 information is lacking or useless (docs/interop/qcow2.txt).\n"
        "error: could not build fake ancestor\n": ["docs/interop/qcow2.txt"],
        "fatal: something else\n": [],
    }
    for output, files in outputs.items():
        assert series.conflicting_files(Git(tree), output) == files, output

"""export: per-series format-patch, cover letters, and refusing to lose work."""

from __future__ import annotations

import sys

import pytest
from conftest import commit_change, git, make_stack, snapshot_dir

from harness.core.errors import NotReady, PatchConflict
from harness.stages import export, series

NAMES = ["stable-fixes", "snapshot-identity", "vm-lineage", "query-netdevs"]


def _export(project, log, **kw):
    return export.export_series(project.layout, project.baseline, log, **kw)


def test_export_writes_a_directory_per_series(imported, log):
    make_stack(imported.layout)
    written = _export(imported, log)
    patches = imported.layout.patches
    assert list(written) == NAMES
    assert written["snapshot-identity"] == ["0001-qcow2-add-snapshot-UUIDs.patch",
                                            "0002-docs-describe-snapshot-UUIDs.patch"]
    for name, names in written.items():
        assert (patches / name / "series").read_text().splitlines() == names
        assert (patches / name / series.COVER).exists()
    first = (patches / "snapshot-identity" / written["snapshot-identity"][0]).read_text()
    assert first.startswith("From 0000000000000000000000000000000000000000")
    assert "Subject: [PATCH 1/2] qcow2: add snapshot UUIDs" in first
    assert "Subject: [PATCH 1/1] qcow2: fix a leak" in \
        (patches / "stable-fixes" / "0001-qcow2-fix-a-leak.patch").read_text()
    assert not list(patches.glob(".export-*"))
    # the series list is the developer's: export does not rewrite it
    assert (patches / "series").read_text().startswith("# the series, in order\n")


def test_cover_letters_carry_base_commit_and_prerequisites_like_git(imported, log):
    make_stack(imported.layout)
    _export(imported, log)
    tree, patches = imported.layout.qemu, imported.layout.patches
    base = git(tree, "rev-parse", "series-base").strip()
    # vm-lineage needs snapshot-identity, which needs stable-fixes: everything
    # below it, so the lines are exactly what git format-patch --base writes
    ours = (patches / "vm-lineage" / series.COVER).read_text()
    theirs = git(tree, "format-patch", "--stdout", "--cover-letter", "--no-signature",
                 "--base=series-base", "series-snapshot-identity..series-vm-lineage")
    tail = theirs.split("\n\n\nbase-commit: ", 1)[1].split("\nFrom ", 1)[0]
    assert ours.endswith("\n\n\nbase-commit: " + tail + "\n")
    assert tail.count("prerequisite-patch-id: ") == 3
    # query-netdevs needs nothing: stacked on vm-lineage, posted on the baseline
    netdevs = (patches / "query-netdevs" / series.COVER).read_text()
    assert netdevs.endswith(f"\n\n\nbase-commit: {base}\n")
    assert "prerequisite-patch-id" not in netdevs
    # stable-fixes: its own diffstat, no shortlog of the others
    stable = (patches / "stable-fixes" / series.COVER).read_text()
    assert " block/qcow2-snapshot.c | 1 +\n" in stable and "query-netdevs" not in stable


def test_apply_then_export_round_trips_and_keeps_cover_text(exported, log):
    patches = exported.layout.patches
    cover = patches / "snapshot-identity" / series.COVER
    text = cover.read_text().replace(export.SUBJECT_PLACEHOLDER, "snapshot identity")
    cover.write_text(text.replace(export.BLURB_PLACEHOLDER, "Why we do this."))
    saved = snapshot_dir(patches)
    tree = exported.layout.qemu
    git(tree, "checkout", "-q", "--detach", "series-base")
    for ref in ["series", *(f"series-{n}" for n in NAMES)]:
        git(tree, "branch", "-D", ref)
    assert len(series.apply_series(exported.layout, exported.baseline, log).applied) == 6
    _export(exported, log)
    again = snapshot_dir(patches)
    assert again == saved
    cover_text = again[f"snapshot-identity/{series.COVER}"]
    assert "Subject: [PATCH 0/2] snapshot identity" in cover_text
    assert "Why we do this." in cover_text


def test_rebase_with_update_refs_is_how_a_series_is_edited(exported, log):
    """A fix-up for the first series, squashed in by `git rebase -i`: every
    series-* branch moves with it (apply turned rebase.updateRefs on)."""
    layout = exported.layout
    tree = layout.qemu
    series.apply_series(layout, exported.baseline, log)
    saved = snapshot_dir(layout.patches)
    commit_change(tree, "block/qcow2-refcount.c", "int leak_fixed;\n",
                  "fixup! qcow2: fix a leak")
    git(tree, "rebase", "-q", "-i", "--autosquash", "series-base",
        env={"GIT_SEQUENCE_EDITOR": "true"})
    written = _export(exported, log)
    assert sum(map(len, written.values())) == 6
    changed = {k for k, v in snapshot_dir(layout.patches).items() if saved.get(k) != v}
    # the fix, its cover letter's diffstat, and the prerequisite patch ids of
    # the series that need it
    assert changed == {"stable-fixes/0001-qcow2-fix-a-leak.patch",
                       f"stable-fixes/{series.COVER}", f"snapshot-identity/{series.COVER}",
                       f"vm-lineage/{series.COVER}"}
    assert "+int leak_fixed;" in \
        (layout.patches / "stable-fixes" / "0001-qcow2-fix-a-leak.patch").read_text()


def test_a_patch_moved_to_another_series_is_not_dropped(exported, log):
    tree = exported.layout.qemu
    # docs patch: the last of snapshot-identity, now the first of vm-lineage
    git(tree, "branch", "-f", "series-snapshot-identity", "series-snapshot-identity~1")
    written = _export(exported, log)
    assert written["snapshot-identity"] == ["0001-qcow2-add-snapshot-UUIDs.patch"]
    assert written["vm-lineage"][0] == "0001-docs-describe-snapshot-UUIDs.patch"
    assert not (exported.layout.patches / "snapshot-identity" /
                "0002-docs-describe-snapshot-UUIDs.patch").exists()


def test_other_files_in_a_series_directory_stay(exported, log):
    notes = exported.layout.patches / "vm-lineage" / "NOTES.md"
    notes.write_text("ask about the lineage of partial snapshots\n")
    _export(exported, log)
    assert notes.read_text() == "ask about the lineage of partial snapshots\n"


def test_a_new_series_is_exported_from_its_branch(exported, log):
    layout = exported.layout
    commit_change(layout.qemu, "docs/more.txt", "more\n", "docs: more on UUIDs")
    git(layout.qemu, "branch", "series-docs")
    with open(layout.patches / "series", "a") as index:
        index.write("docs needs snapshot-identity\n")
    written = _export(exported, log)
    assert written["docs"] == ["0001-docs-more-on-UUIDs.patch"]
    assert (layout.patches / "docs" / "series").read_text() == \
        "0001-docs-more-on-UUIDs.patch\n"


def test_nothing_to_export_writes_nothing(imported, log):
    assert _export(imported, log) == {}
    assert list(imported.layout.patches.iterdir()) == []


def test_commits_but_no_series_listed_is_refused(imported, log):
    """Today's export wrote them all to patches/ without a series to go in."""
    commit_change(imported.layout.qemu, "x.c", "x\n", "block: a change")
    with pytest.raises(PatchConflict, match="1 commit\\(s\\) on `series` belong to no "
                                            "series: patches/series lists none"):
        _export(imported, log)
    assert list(imported.layout.patches.iterdir()) == []


# -- refusals (issue 14: export must never throw patches/ away) ---------------------

def _refused(project, log, match):
    before = snapshot_dir(project.layout.patches)
    with pytest.raises(PatchConflict, match=match) as err:
        _export(project, log)
    assert err.value.exit_code == 5
    assert "export --force" in err.value.hint
    assert snapshot_dir(project.layout.patches) == before
    return err.value


def test_refuses_with_head_detached_at_series_base(exported, log):
    git(exported.layout.qemu, "checkout", "-q", "--detach", "series-base")
    err = _refused(exported, log, "refusing to export")
    assert "HEAD is detached at" in err.message


def test_refuses_on_another_branch(exported, log):
    git(exported.layout.qemu, "checkout", "-q", "-b", "experiment", "series-base")
    err = _refused(exported, log, "HEAD is on branch experiment, not on `series`")
    assert "git -C qemu checkout series" in err.message


def test_refuses_after_a_mistaken_reset(exported, log):
    git(exported.layout.qemu, "reset", "-q", "--hard", "series-base")
    _refused(exported, log, "`series` does not contain series-query-netdevs")


def test_refuses_uncommitted_work(exported, log):
    (exported.layout.qemu / "README.rst").write_text("not committed\n")
    _refused(exported, log, r"uncommitted changes in README.rst")


def test_refuses_commits_that_belong_to_no_series(exported, log):
    commit_change(exported.layout.qemu, "x.c", "x\n", "block: orphan")
    err = _refused(exported, log, "1 commit\\(s\\) on `series` after series-query-netdevs "
                                   "belong to no series")
    assert "git -C qemu branch -f series-query-netdevs series" in err.message


def test_refuses_to_drop_patches_unless_forced(exported, log):
    tree = exported.layout.qemu
    # every branch reset to the baseline: the empty export of today's code
    for ref in ["series", *(f"series-{n}" for n in NAMES)]:
        git(tree, "branch", "-f", ref, "series-base") if ref != "series" else \
            git(tree, "reset", "-q", "--hard", "series-base")
    err = _refused(exported, log, "would lose 2 of its 2 patch")
    assert "patches/stable-fixes/ would lose 1 of its 1 patch(es)" in err.message
    assert _export(exported, log, force=True) == {n: [] for n in NAMES}
    assert (exported.layout.patches / "vm-lineage" / "series").read_text() == ""


def test_refuses_to_drop_one_patch_but_an_amended_one_is_replaced(exported, log):
    tree = exported.layout.qemu
    # amend the last patch of query-netdevs: replaced, not dropped
    (tree / "qapi/net.json").write_text("{ 'command': 'query-netdevs', 'data': {} }\n")
    git(tree, "commit", "-q", "-a", "--amend", "--no-edit")
    git(tree, "branch", "-f", "series-query-netdevs")
    assert len(_export(exported, log)["query-netdevs"]) == 2
    # drop it: refused, and named
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    git(tree, "branch", "-f", "series-query-netdevs")
    err = _refused(exported, log, "patches/query-netdevs/ would lose 1 of its 2 patch")
    assert "0002-qapi-net-add-query-netdevs.patch" in err.message
    assert _export(exported, log, force=True)["query-netdevs"] == [
        "0001-net-remember-each-backend-s-configuration.patch"]


def test_refuses_while_a_rebase_is_stopped(exported, log):
    tree = exported.layout.qemu
    git(tree, "rebase", "-q", "-i", "series-base",
        env={"GIT_SEQUENCE_EDITOR": "sed -i 1s/^pick/edit/"})
    with pytest.raises(PatchConflict, match="`git rebase` is still in progress"):
        _export(exported, log, force=True)


def test_branches_that_do_not_stack_are_refused(exported, log):
    tree = exported.layout.qemu
    git(tree, "branch", "-f", "series-vm-lineage", "series-base")
    with pytest.raises(PatchConflict, match="branch series-vm-lineage does not contain "
                                            "series-snapshot-identity"):
        _export(exported, log, force=True)


def test_a_series_without_a_branch_is_named(exported, log):
    git(exported.layout.qemu, "branch", "-D", "series-stable-fixes")
    with pytest.raises(NotReady, match="no branch series-stable-fixes for series "
                                       "stable-fixes") as err:
        _export(exported, log)
    assert err.value.exit_code == 3 and "build.py apply" in err.value.hint


def test_a_failure_half_way_leaves_patches_as_it_was(exported, log, monkeypatch):
    commit_change(exported.layout.qemu, "net/net.c", "int netdevs2;\n", "net: more")
    git(exported.layout.qemu, "branch", "-f", "series-query-netdevs")
    before = snapshot_dir(exported.layout.patches)
    real, calls = export._format, []

    def format_then_fail(git_, r, out, *args):
        calls.append(r.series.name)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(git_, r, out, *args)

    monkeypatch.setattr(export, "_format", format_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _export(exported, log)
    assert snapshot_dir(exported.layout.patches) == before
    assert not list(exported.layout.patches.glob(".export-*"))


def test_a_new_patch_is_moved_into_its_series_by_rebase(exported, log, tmp_path):
    """README: put its pick line before the update-ref line of its series."""
    layout = exported.layout
    tree = layout.qemu
    series.apply_series(layout, exported.baseline, log)
    commit_change(tree, "block/qcow2-refcount.c", "int another;\n", "qcow2: another fix")
    editor = tmp_path / "move-last-pick.py"
    editor.write_text(
        "import sys\n"
        "lines = open(sys.argv[1]).read().splitlines(True)\n"
        "last = max(i for i, line in enumerate(lines) if line.startswith('pick '))\n"
        "pick = lines.pop(last)\n"
        "lines.insert(next(i for i, line in enumerate(lines)\n"
        "                  if line.startswith('update-ref ')), pick)\n"
        "open(sys.argv[1], 'w').write(''.join(lines))\n")
    git(tree, "rebase", "-q", "-i", "series-base",
        env={"GIT_SEQUENCE_EDITOR": f"{sys.executable} {editor}"})
    written = _export(exported, log)
    assert written["stable-fixes"] == ["0001-qcow2-fix-a-leak.patch",
                                       "0002-qcow2-another-fix.patch"]
    assert [len(written[n]) for n in NAMES] == [2, 2, 1, 2]

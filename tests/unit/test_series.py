"""patches/ as several series, and apply onto per-series branches (toy trees)."""

from __future__ import annotations

import shutil

import pytest
from conftest import commit_change, git

from harness.core.errors import NotReady, PatchConflict, UsageError
from harness.core.runner import NullLog
from harness.stages import export, series

NAMES = ["stable-fixes", "snapshot-identity", "vm-lineage", "query-netdevs"]


def _fresh_qemu(project):
    """qemu/ back at series-base, without any series branch."""
    tree = project.layout.qemu
    git(tree, "checkout", "-q", "--detach", "series-base")
    for ref in git(tree, "for-each-ref", "--format=%(refname:short)", "refs/heads").split():
        git(tree, "branch", "-q", "-D", ref)
    git(tree, "checkout", "-q", "-b", "series")


def _write_index(patches, text):
    patches.mkdir(exist_ok=True)
    (patches / "series").write_text(text)


def _series_dir(patches, name, files=("0001-a-b.patch",)):
    (patches / name).mkdir(parents=True)
    for f in files:
        (patches / name / f).write_text("x\n")
    (patches / name / "series").write_text("".join(f + "\n" for f in files))


# -- the layout of patches/ -----------------------------------------------------

def test_read_stack_names_needs_and_patches_in_order(tmp_path):
    patches = tmp_path / "patches"
    _write_index(patches, "# series, in order\nstable-fixes\n\nsnapshot-identity needs "
                          "stable-fixes  # the feature\nquery-netdevs\n")
    _series_dir(patches, "stable-fixes", ["0001-qcow2-fix.patch"])
    _series_dir(patches, "snapshot-identity", ["0001-a-one.patch", "0002-a-two.patch"])
    _series_dir(patches, "query-netdevs", ["0001-net-x.patch"])
    stack = series.read_stack(patches)
    assert [(s.name, s.needs, s.branch) for s in stack] == [
        ("stable-fixes", (), "series-stable-fixes"),
        ("snapshot-identity", ("stable-fixes",), "series-snapshot-identity"),
        ("query-netdevs", (), "series-query-netdevs")]
    assert [p.relative_to(patches).as_posix() for p in series.read_series(patches)] == [
        "stable-fixes/0001-qcow2-fix.patch", "snapshot-identity/0001-a-one.patch",
        "snapshot-identity/0002-a-two.patch", "query-netdevs/0001-net-x.patch"]
    assert not series.stacked_alone(stack, stack[1])
    assert series.stacked_alone(stack, stack[2])
    assert [s.name for s in series.needed(stack, stack[2])] == []


def test_needs_are_followed_through(tmp_path):
    patches = tmp_path / "patches"
    _write_index(patches, "a\nb needs a\nc\nd needs b c\n")
    for name in "abcd":
        _series_dir(patches, name)
    stack = series.read_stack(patches)
    assert [s.name for s in series.needed(stack, stack[3])] == ["a", "b", "c"]
    assert not series.stacked_alone(stack, stack[3])
    assert series.stacked_alone(stack, stack[2])


def test_no_patches_directory_content_is_an_empty_stack(tmp_path):
    (tmp_path / "patches").mkdir()
    assert series.read_stack(tmp_path / "patches") == []
    assert series.read_series(tmp_path / "patches") == []


@pytest.mark.parametrize("index", ["0001-qcow2-a.patch\n0002-qcow2-b.patch\n", None])
def test_old_flat_layout_names_the_commands_that_move_it(tmp_path, index):
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0000-cover-letter.patch").write_text("cover\n")
    (patches / "0001-qcow2-a.patch").write_text("a\n")
    (patches / "0002-qcow2-b.patch").write_text("b\n")
    if index is not None:
        (patches / "series").write_text(index)
    with pytest.raises(UsageError) as err:
        series.read_series(patches)
    assert "old flat layout" in err.value.message
    assert ("mkdir patches/snapshot-identity && git mv patches/[0-9]*.patch patches/series "
            "patches/snapshot-identity/ && echo snapshot-identity > patches/series"
            in err.value.hint)


@pytest.mark.parametrize("index, message", [
    ("a needs b\nb\n", "line 1: a needs b, which is not listed before it"),
    ("a\na\n", "line 2: series a is listed twice"),
    ("a\nb requires a\n", "line 2: expected `NAME [needs NAME ...]`"),
    ("a needs\n", "line 1: expected `NAME [needs NAME ...]`"),
    ("base\n", "'base' cannot name a series"),
    ("a\nnot/a/name\n", "'not/a/name' cannot name a series"),
    ("a\nmissing\n", "there is no patches/missing/series"),
])
def test_bad_series_lists(tmp_path, index, message):
    patches = tmp_path / "patches"
    _write_index(patches, index)
    for name in "ab":
        _series_dir(patches, name)
    with pytest.raises(UsageError, match="patches/series") as err:
        series.read_stack(patches)
    assert message in err.value.message


def test_a_series_directory_not_listed_is_an_error(tmp_path):
    patches = tmp_path / "patches"
    _write_index(patches, "a\n")
    _series_dir(patches, "a")
    _series_dir(patches, "forgotten")
    with pytest.raises(UsageError, match="does not list the series in patches/forgotten/"):
        series.read_stack(patches)


def test_series_file_naming_missing_patch(tmp_path):
    patches = tmp_path / "patches"
    _write_index(patches, "a\n")
    _series_dir(patches, "a")
    (patches / "a" / "series").write_text("0001-a-b.patch\n0002-gone.patch\n")
    with pytest.raises(UsageError, match="patches/a/series names missing files: "
                                         "0002-gone.patch"):
        series.read_series(patches)


def test_a_new_series_may_lack_its_directory_for_export(tmp_path):
    patches = tmp_path / "patches"
    _write_index(patches, "a\nnew needs a\n")
    _series_dir(patches, "a")
    stack = series.read_stack(patches, new_ok=True)
    assert [(s.name, s.patches) for s in stack][1] == ("new", ())


# -- apply ----------------------------------------------------------------------

def test_apply_stacks_each_series_on_its_own_branch(exported, log):
    layout = exported.layout
    tree = layout.qemu
    _fresh_qemu(exported)
    res = series.apply_series(layout, exported.baseline, log)
    assert res.already == 0
    assert res.applied == [p.relative_to(layout.patches).as_posix()
                           for p in series.read_series(layout.patches)]
    assert len(res.applied) == 6
    # each series-NAME branch ends its series; `series` is the top of the stack
    below = "series-base"
    for name in NAMES:
        subjects = git(tree, "log", "--reverse", "--format=%s",
                       f"{below}..series-{name}").splitlines()
        files = (layout.patches / name / "series").read_text().splitlines()
        assert len(subjects) == len(files) and subjects
        below = f"series-{name}"
    assert git(tree, "rev-parse", "series") == git(tree, "rev-parse", "series-query-netdevs")
    assert git(tree, "symbolic-ref", "--short", "HEAD").strip() == "series"
    assert git(tree, "config", "rebase.updateRefs").strip() == "true"
    # applying again changes nothing
    again = series.apply_series(layout, exported.baseline, log)
    assert again.applied == [] and again.already == 6 and again.head == res.head


def test_apply_makes_missing_series_branches_of_applied_patches(exported, log):
    tree = exported.layout.qemu
    git(tree, "branch", "-D", "series-vm-lineage")
    res = series.apply_series(exported.layout, exported.baseline, log)
    assert res.applied == []
    assert git(tree, "rev-parse", "series-vm-lineage").strip() == \
        res.branches["series-vm-lineage"]
    assert git(tree, "rev-parse", "series-vm-lineage~1").strip() == \
        git(tree, "rev-parse", "series-snapshot-identity").strip()


def test_conflict_names_series_and_patch_and_apply_continues_after_it(exported, log):
    layout = exported.layout
    tree = layout.qemu
    # the stable fix went upstream, and upstream changed the lines after it: the
    # first patch of the second series conflicts
    _fresh_qemu(exported)
    (tree / "block/qcow2-snapshot.c").write_text("int snapshot;\nint fixed;\nint other;\n")
    git(tree, "commit", "-q", "-am", "rewrite")
    git(tree, "tag", "-f", "series-base")
    (layout.patches / "stable-fixes" / "0001-qcow2-fix-a-leak.patch").unlink()
    (layout.patches / "stable-fixes" / "series").write_text("")
    with pytest.raises(PatchConflict) as err:
        series.apply_series(layout, exported.baseline, log)
    msg = err.value.message
    assert ("series snapshot-identity: patch 0001-qcow2-add-snapshot-UUIDs.patch does not "
            "apply") in msg
    assert "block/qcow2-snapshot.c" in msg
    assert "git -C qemu am --continue" in err.value.hint
    assert "then `python3 build.py apply`" in err.value.hint
    assert err.value.exit_code == 5
    # a second run refuses to pile on the half-done am
    with pytest.raises(PatchConflict, match="still in progress"):
        series.apply_series(layout, exported.baseline, log)
    # resolve it, continue, and apply the rest
    (tree / "block/qcow2-snapshot.c").write_text(
        "int snapshot;\nint fixed;\nint other;\nint uuid;\n")
    git(tree, "add", "block/qcow2-snapshot.c")
    git(tree, "am", "--continue")
    res = series.apply_series(layout, exported.baseline, log)
    assert res.already == 1 and len(res.applied) == 4
    assert series.apply_series(layout, exported.baseline, log).applied == []
    assert "resolved by hand" in log.path.read_text()
    # export writes the resolution; patches/ and the branches agree again
    export.export_series(layout, exported.baseline, log)
    assert "+int uuid;" in (layout.patches / "snapshot-identity" /
                            "0001-qcow2-add-snapshot-UUIDs.patch").read_text()
    assert (layout.patches / "stable-fixes" / "series").read_text() == ""
    assert series.apply_series(layout, exported.baseline, log).applied == []


def test_apply_refuses_uncommitted_work(exported, log):
    tree = exported.layout.qemu
    (tree / "README.rst").write_text("my unsaved edit\n")
    with pytest.raises(PatchConflict, match=r"uncommitted changes \(README.rst\)"):
        series.apply_series(exported.layout, exported.baseline, log)
    assert (tree / "README.rst").read_text() == "my unsaved edit\n"


def test_diverged_branch_is_kept_unless_reset(exported, log):
    tree = exported.layout.qemu
    commit_change(tree, "new.c", "x\n", "block: unexported work")
    head = git(tree, "rev-parse", "HEAD").strip()
    # patches/ says 6 patches, the branch has those 6 + 1 more: apply has nothing
    # to do and keeps the extra commit
    assert series.apply_series(exported.layout, exported.baseline, log).applied == []
    assert "1 commit(s) on `series` after the last series" in log.path.read_text()
    git(tree, "reset", "-q", "--hard", "series-stable-fixes")
    commit_change(tree, "other.c", "y\n", "block: different work")
    with pytest.raises(PatchConflict, match="differ from patches/"):
        series.apply_series(exported.layout, exported.baseline, log)
    res = series.apply_series(exported.layout, exported.baseline, log, reset=True)
    assert len(res.applied) == 6
    backups = git(tree, "branch", "--list", "series-backup-*").split()
    assert backups, "the diverged branch must be kept"
    assert git(tree, "rev-parse", backups[0]).strip() != head
    assert head != git(tree, "rev-parse", "HEAD").strip()


def test_a_series_branch_elsewhere_is_kept_unless_reset(exported, log):
    tree = exported.layout.qemu
    git(tree, "checkout", "-q", "series-vm-lineage")
    commit_change(tree, "migration/savevm.c", "int lineage2;\n", "migration: more work")
    work = git(tree, "rev-parse", "HEAD").strip()
    with pytest.raises(PatchConflict, match="series-vm-lineage in qemu/ do not end where"):
        series.apply_series(exported.layout, exported.baseline, log)
    res = series.apply_series(exported.layout, exported.baseline, log, reset=True)
    assert res.branches["series-vm-lineage"] != work
    kept = git(tree, "branch", "--list", "series-vm-lineage-backup-*").split()
    assert kept and git(tree, "rev-parse", kept[0]).strip() == work


def test_empty_stack_applies_nothing(imported, log):
    res = series.apply_series(imported.layout, imported.baseline, log)
    assert res.applied == [] and res.already == 0 and res.branches == {}


def test_apply_before_import(project, log):
    shutil.rmtree(project.layout.qemu, ignore_errors=True)
    with pytest.raises(NotReady, match="not imported") as err:
        series.apply_series(project.layout, project.baseline, log)
    assert err.value.exit_code == 3  # a tree not made yet, not a usage error


def test_conflicting_files_from_recorded_git_am_output(tmp_path):
    """Each way `git am -3` reports a file it cannot handle (recorded outputs; the
    last is the real series on 10.2.2, where docs/interop/qcow2.txt became .rst)."""
    from harness.core.git import Git
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

# -- status -----------------------------------------------------------------------

def _status(project, capsys):
    from harness.core.pipeline import Context, NoRequest
    from harness.stages import status
    ctx = Context(layout=project.layout, baseline=project.baseline)
    outcome = status.stage(ctx, NoRequest(), NullLog())
    assert outcome.summary == "status shown"
    assert capsys.readouterr().out == ""  # the CLI prints outcome.text
    return [line.strip() for line in outcome.text.splitlines()]


def test_status_shows_each_series_patches_and_commits(exported, capsys):
    tree = exported.layout.qemu
    commit_change(tree, "x.c", "x\n", "block: not in a series yet")
    git(tree, "branch", "-D", "series-vm-lineage")
    lines = _status(exported, capsys)
    assert "qemu/: HEAD on series; `series` has 7 commit(s) on series-base" in lines
    assert ("series stable-fixes: 1 patch(es) in patches/stable-fixes/, 1 commit(s) on "
            "series-stable-fixes") in lines
    assert ("series snapshot-identity (needs stable-fixes): 2 patch(es) in "
            "patches/snapshot-identity/, 2 commit(s) on series-snapshot-identity") in lines
    assert ("series vm-lineage (needs snapshot-identity): 1 patch(es) in "
            "patches/vm-lineage/, no branch series-vm-lineage") in lines
    assert ("series query-netdevs: 2 patch(es) in patches/query-netdevs/, 3 commit(s) on "
            "series-query-netdevs") in lines
    assert "qemu/: 1 commit(s) on `series` after series-query-netdevs are in no series" \
        in lines


def test_status_names_the_old_layout_instead_of_failing(project, capsys):
    (project.layout.patches / "0001-a-b.patch").write_text("x\n")
    (project.layout.patches / "series").write_text("0001-a-b.patch\n")
    lines = _status(project, capsys)
    assert "qemu/: not imported" in lines
    assert any(line.startswith("patches/: patches/series lists .patch files") for line in lines)


# -- clean --trees ----------------------------------------------------------------

def _clean_trees(project, **options):
    from harness.core.pipeline import Context
    from harness.stages import clean
    ctx = Context(layout=project.layout, baseline=project.baseline)
    return clean.stage(ctx, clean.CleanRequest(trees=True, **options), NullLog()).summary


def test_clean_trees_keeps_work_on_a_series_branch(exported):
    tree = exported.layout.qemu
    (tree / "build").mkdir()
    git(tree, "checkout", "-q", "series-vm-lineage")
    commit_change(tree, "migration/savevm.c", "int more;\n", "migration: more")
    git(tree, "checkout", "-q", "series")
    with pytest.raises(PatchConflict, match="series-vm-lineage has commits that `series` "
                                            "does not") as err:
        _clean_trees(exported)
    assert "nothing was removed" in err.value.hint
    assert (tree / "build").is_dir()
    git(tree, "branch", "-f", "series-vm-lineage", "series-vm-lineage~1")
    assert "removed" in _clean_trees(exported) and not tree.exists()


def test_clean_trees_keeps_unexported_commits_unless_forced(exported):
    commit_change(exported.layout.qemu, "x.c", "x\n", "block: unexported")
    with pytest.raises(PatchConflict) as err:
        _clean_trees(exported)
    assert err.value.message == ("qemu/ holds work that is not in patches/: `series` has 1 "
                                 "commit(s) more than patches/")
    _clean_trees(exported, force=True)
    assert not exported.layout.qemu.exists()


def test_patch_ids_of_files_match_one_by_one_and_the_commits(exported, tmp_path):
    from harness.core.git import Git
    repo = Git(exported.layout.qemu)
    files = series.read_series(exported.layout.patches)
    cover = exported.layout.patches / "vm-lineage" / series.COVER  # no diff: ""
    ids = series.patch_ids_of_files(repo, [files[0], cover, *files[1:]])
    assert ids[1] == "" and len(ids) == len(files) + 1
    one_by_one = [repo.out("patch-id", "--stable", input=f.read_text()).split()[0]
                  for f in files]
    assert [ids[0], *ids[2:]] == one_by_one
    assert one_by_one == series.range_patch_ids(repo, "series-base", "series")

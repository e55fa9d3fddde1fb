"""The one git helper: parsing git's output, identities."""

from __future__ import annotations

import pytest
from conftest import git

from harness.core.errors import CommandFailed
from harness.core.git import Git


def _repo(tmp_path):
    tree = tmp_path / "repo"
    tree.mkdir()
    git(tree, "init", "-q")
    for name in ("README.rst", "a.c", "old.c"):
        (tree / name).write_text(f"{name}\n")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    return tree


def test_dirty_files_keeps_the_first_character_of_each_path(project, tmp_path):
    tree = _repo(tmp_path)
    (tree / "README.rst").write_text("changed, not staged\n")  # " M README.rst"
    (tree / "a.c").write_text("staged\n")                      # "M  a.c"
    git(tree, "add", "a.c")
    git(tree, "mv", "old.c", "new name.c")                     # "R  new name.c\0old.c"
    (tree / "untracked.c").write_text("ignored\n")
    assert sorted(Git(tree).dirty_files()) == ["README.rst", "a.c", "new name.c"]


def test_clean_tree_has_no_dirty_files(project, tmp_path):
    assert Git(_repo(tmp_path)).dirty_files() == []


def test_am_and_am_abort_work_without_a_configured_identity(project, tmp_path, monkeypatch):
    """A fresh CI machine: no user.email anywhere, and git may not guess one."""
    for key in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    tree = _repo(tmp_path)
    (tree / "a.c").write_text("theirs\n")
    git(tree, "commit", "-q", "-am", "a: theirs")
    patch = tmp_path / "0001-a.patch"
    patch.write_text(git(tree, "format-patch", "-1", "--stdout"))
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    (tree / "a.c").write_text("ours\n")
    git(tree, "commit", "-q", "-am", "a: ours")
    repo = Git(tree)
    assert not repo.has_identity()
    with pytest.raises(CommandFailed) as err:
        repo.am("-3", str(patch))
    assert "identity" not in err.value.output
    assert repo.am_in_progress()
    repo.am_abort()
    assert not repo.am_in_progress()
    assert (tree / "a.c").read_text() == "ours\n"


def test_a_repository_named_by_the_environment_is_not_used(project, tmp_path, monkeypatch):
    """Run from a git hook or `git rebase --exec` in a worktree, GIT_DIR names
    the caller's repository: `git -C qemu` must still mean qemu/."""
    tree = _repo(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    git(other, "commit", "-q", "--allow-empty", "-m", "the caller's repository")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    repo = Git(tree)
    assert repo.out("log", "-1", "--format=%s") == "base"
    repo("tag", "mine")
    assert repo.rev("mine") is not None
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert git(other, "tag", "-l") == ""

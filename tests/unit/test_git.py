"""The one git helper: parsing git's output, identities."""

from __future__ import annotations

from conftest import git

from harness.git import Git


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

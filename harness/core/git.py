"""Every git call goes through here."""

from __future__ import annotations

import os
from pathlib import Path

from harness.core.runner import NullLog, StageLog, run

# Commits the harness makes itself (the imported baseline and its repack
# fix-ups) use a fixed identity and date, so the baseline commit id is the
# same on every machine for the same tarball.
IMPORT_IDENTITY = {
    "GIT_AUTHOR_NAME": "qemu-snap-harness import",
    "GIT_AUTHOR_EMAIL": "import@qemu-snap-harness.invalid",
    "GIT_COMMITTER_NAME": "qemu-snap-harness import",
    "GIT_COMMITTER_EMAIL": "import@qemu-snap-harness.invalid",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


# Variables that tell git which repository to use. Inherited from a caller
# that is itself run by git (a hook, `git rebase --exec` in a worktree sets
# GIT_DIR), they would turn `git -C qemu ...` into commands on that caller's
# repository, so they are never passed on.
REPOSITORY_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX",
)


class Git:
    def __init__(self, tree: Path, log: StageLog | None = None):
        self.tree = tree
        self.log = log or NullLog()

    def __call__(self, *args: str, check: bool = True, env: dict | None = None,
                 input: str | None = None):
        full_env = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
                    **dict.fromkeys(REPOSITORY_VARIABLES)}
        if env:
            full_env.update(env)
        argv = ["git", "-c", f"safe.directory={self.tree}", "-C", str(self.tree), *args]
        return run(argv, self.log, env=full_env, check=check, input=input)

    def out(self, *args: str, **kw) -> str:
        return self(*args, **kw).stdout.strip()

    def ok(self, *args: str) -> bool:
        return self(*args, check=False).returncode == 0

    def is_repo(self) -> bool:
        return (self.tree / ".git").exists() and self.ok("rev-parse", "--git-dir")

    def rev(self, ref: str) -> str | None:
        res = self("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return res.stdout.strip() if res.returncode == 0 else None

    def dirty_files(self) -> list[str]:
        """Tracked files with uncommitted changes (untracked files are ignored).

        ``git status --porcelain -z`` entries are ``XY path``: X (the index)
        is often a space, so the output must not be stripped; a rename or
        copy is followed by its source path as a second entry.
        """
        fields = self("status", "--porcelain", "-z", "--untracked-files=no").stdout
        files, entries = [], iter(fields.split("\0"))
        for entry in entries:
            if len(entry) < 4:
                continue
            files.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)
        return files

    def am(self, *args: str):
        """`git am ARGS`: it needs a committer identity, and so does
        `git am --abort` (it writes the reflog of the reset it does)."""
        return self("am", *args, env=user_identity_env(self))

    def am_abort(self) -> None:
        if self.am_in_progress():
            self("am", "--abort", env=user_identity_env(self))

    def gitdir(self) -> Path:
        return Path(self.out("rev-parse", "--absolute-git-dir"))

    def am_in_progress(self) -> bool:
        return (self.gitdir() / "rebase-apply").exists()

    def rebase_in_progress(self) -> bool:
        return (self.gitdir() / "rebase-merge").exists()

    def is_ancestor(self, ancestor: str, rev: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", ancestor, rev)

    def revs(self, start: str, end: str) -> list[str]:
        """The commits of ``start..end``, oldest first."""
        return self.out("rev-list", "--reverse", f"{start}..{end}").split()

    def current_branch(self) -> str | None:
        res = self("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return res.stdout.strip() or None

    def has_identity(self) -> bool:
        return bool(self("config", "user.email", check=False).stdout.strip())


def user_identity_env(git: Git) -> dict:
    """Committer identity for `git am` when the machine has none configured
    (a fresh CI machine): the patches keep their own authors either way."""
    if git.has_identity() or os.environ.get("GIT_COMMITTER_EMAIL"):
        return {}
    return {"GIT_COMMITTER_NAME": "qemu-snap-harness",
            "GIT_COMMITTER_EMAIL": "ci@qemu-snap-harness.invalid"}

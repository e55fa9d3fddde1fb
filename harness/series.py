"""The patch series: ``patches/`` (source of truth) <-> commits in ``qemu/``.

``apply`` turns patches/series into commits on the ``series`` branch with
``git am -3``; ``export`` turns the branch back into patches/ with
``git format-patch`` (stable names, cover letter text kept, series file
rewritten), so developers edit and commit in qemu/ and then export.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Baseline, Layout
from .errors import CommandFailed, PatchConflict, UsageError
from .git import Git
from .runner import StageLog

COVER = "0000-cover-letter.patch"
SUBJECT_PLACEHOLDER = "*** SUBJECT HERE ***"
BLURB_PLACEHOLDER = "*** BLURB HERE ***"


def read_series(patches: Path) -> list[Path]:
    """The patch files named by patches/series, in order (comments skipped)."""
    series = patches / "series"
    if not series.exists():
        return []
    names = []
    for line in series.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    missing = [n for n in names if not (patches / n).is_file()]
    if missing:
        raise UsageError(f"patches/series names missing files: {', '.join(missing)}",
                         hint="fix patches/series, or re-export with `build.py export`")
    return [patches / n for n in names]


def _patch_ids(git: Git, text: str) -> list[str]:
    out = git.out("patch-id", "--stable", input=text)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def patch_id_of_file(git: Git, patch: Path) -> str:
    ids = _patch_ids(git, patch.read_text(errors="replace"))
    return ids[0] if ids else ""


def branch_patch_ids(git: Git, base: str, branch: str) -> list[str]:
    ids = []
    for rev in git.out("rev-list", "--reverse", f"{base}..{branch}").split():
        found = _patch_ids(git, git("show", "--format=", "--patch", rev).stdout)
        ids.append(found[0] if found else "")
    return ids


@dataclass(frozen=True)
class ApplyResult:
    applied: list[str]
    already: int
    head: str


def _checkout_branch(git: Git, baseline: Baseline) -> None:
    branch = baseline.patched_branch
    if git.rev(f"refs/heads/{branch}") is None:
        git("branch", branch, baseline.base_tag)
    if git.current_branch() != branch:
        git("checkout", "-q", branch)


# What `git am -3` / `git apply` print about the file they could not handle.
AM_FAILURE_PATTERNS = (
    r"^error: patch failed: (\S+?):\d+$",                      # context does not match
    r"^CONFLICT \([^)]*\): Merge conflict in (\S+)$",          # 3-way merge conflict
    r"^CONFLICT \([^)]*\): (\S+) deleted in ",                 # modify/delete
    r"^error: (\S+): does not exist in index$",                # the file is not there
    r"^error: sha1 information is lacking or useless \((\S+)\)\.?$",  # ... nor its preimage
)


def conflicting_files(git: Git, output: str) -> list[str]:
    """The files a failed `git am -3` left in conflict (from the index), or
    else the ones its output names (a patch that failed without a merge)."""
    files = git.out("diff", "--name-only", "--diff-filter=U").split()
    if not files:
        files = [m.group(1) for line in output.splitlines()
                 for pattern in AM_FAILURE_PATTERNS
                 if (m := re.match(pattern, line.strip()))]
    return list(dict.fromkeys(files))


def apply_series(layout: Layout, baseline: Baseline, log: StageLog, *,
                 reset: bool = False) -> ApplyResult:
    git = Git(layout.qemu, log)
    if not git.is_repo():
        raise UsageError(f"{layout.qemu} is not imported yet",
                         hint="run `python3 build.py import` first")
    if git.am_in_progress():
        raise PatchConflict(
            "a `git am` is still in progress in qemu/",
            hint="resolve it (`git -C qemu am --continue` after fixing, or "
                 "`git -C qemu am --abort`), then run the stage again")
    dirty = git.dirty_files()
    if dirty:
        raise PatchConflict(
            f"qemu/ has uncommitted changes ({', '.join(dirty[:5])}"
            f"{', ...' if len(dirty) > 5 else ''}); refusing to apply over them",
            hint="commit them (then `build.py export`) or stash them; nothing was changed")
    patches = read_series(layout.patches)
    _checkout_branch(git, baseline)
    want = [patch_id_of_file(git, p) for p in patches]
    have = branch_patch_ids(git, baseline.base_tag, "HEAD")
    if len(have) > len(want) and have[:len(want)] == want:
        log.note(f"{len(have) - len(want)} commit(s) on the branch are not exported yet; "
                 "`build.py export` writes them to patches/")
        return ApplyResult([], len(want), git.rev("HEAD"))
    if have != want[:len(have)]:
        if not reset:
            raise PatchConflict(
                f"the `{baseline.patched_branch}` branch in qemu/ has {len(have)} commit(s) "
                "that differ from patches/series",
                hint="keep them: `python3 build.py export`; or set them aside and start "
                     "from patches/: `python3 build.py apply --reset` (the old branch is "
                     "kept as a backup branch)")
        backup = f"{baseline.patched_branch}-backup-{time.strftime('%Y%m%d-%H%M%S')}"
        git("branch", backup)
        log.note(f"kept the old branch as {backup}")
        git("reset", "-q", "--hard", baseline.base_tag)
        have = []
    todo = patches[len(have):]
    for patch in todo:
        try:
            git.am("-3", "--keep-cr", str(patch))
        except CommandFailed as exc:
            files = conflicting_files(git, exc.output)
            raise PatchConflict(
                f"patch {patch.name} does not apply"
                + (f"; conflicts in: {', '.join(files)}" if files else ""),
                log=exc.log,
                hint="resolve the conflicts in qemu/, `git -C qemu add <files>`, "
                     "`git -C qemu am --continue`, then `python3 build.py export`; "
                     "or give up with `git -C qemu am --abort`") from exc
    return ApplyResult([p.name for p in todo], len(have), git.rev("HEAD"))


def _split_cover(text: str) -> tuple[str, str, str]:
    """(headers, subject, blurb) of a cover letter."""
    headers, _, body = text.partition("\n\n")
    m = re.search(r"^Subject: \[[^\]]*\] ?(.*(?:\n [^\n]*)*)$", headers, re.M)
    subject = m.group(1).replace("\n ", " ").strip() if m else SUBJECT_PLACEHOLDER
    # The blurb ends where git's shortlog ("Name (N):") starts.
    blurb = re.split(r"\n(?=[^\n]+ \(\d+\):\n)", body, maxsplit=1)[0].rstrip()
    return headers, subject, blurb


def merge_cover(old: str, new: str) -> str:
    """The regenerated cover letter ``new`` with the text of ``old`` kept:
    its From/Date headers, subject and blurb; shortlog and diffstat are new."""
    old_headers, subject, blurb = _split_cover(old)
    new_headers, _, new_body = new.partition("\n\n")
    prefix = re.search(r"^Subject: (\[[^\]]*\])", new_headers, re.M)
    headers = re.sub(r"^Subject: .*(?:\n [^\n]*)*$",
                     lambda _: f"Subject: {prefix.group(1) if prefix else '[PATCH]'} {subject}",
                     old_headers, count=1, flags=re.M)
    tail = new_body.split(BLURB_PLACEHOLDER, 1)[-1]
    return f"{headers}\n\n{blurb}{tail}"


def export_series(layout: Layout, baseline: Baseline, log: StageLog) -> list[str]:
    git = Git(layout.qemu, log)
    if not git.is_repo():
        raise UsageError(f"{layout.qemu} is not imported yet",
                         hint="run `python3 build.py import` first")
    if git.am_in_progress():
        raise PatchConflict("a `git am` is in progress in qemu/",
                            hint="finish or abort it before exporting")
    layout.patches.mkdir(parents=True, exist_ok=True)
    cover = layout.patches / COVER
    kept = cover.read_text() if cover.exists() else None
    count = int(git.out("rev-list", "--count", f"{baseline.base_tag}..HEAD"))
    old = {p.name for p in layout.patches.glob("[0-9][0-9][0-9][0-9]-*.patch")}
    names: list[str] = []
    if count:
        out = git.out("format-patch", "--zero-commit", "--no-signature", "--cover-letter",
                      "--no-numbered-files", "-o", str(layout.patches),
                      f"{baseline.base_tag}..HEAD")
        written = [Path(line).name for line in out.splitlines() if line.strip()]
        names = [n for n in written if n != COVER]
        if kept:
            cover.write_text(merge_cover(kept, cover.read_text()))
    for stale in old - set(names) - {COVER}:
        (layout.patches / stale).unlink()
    (layout.patches / "series").write_text("".join(n + "\n" for n in names))
    return names

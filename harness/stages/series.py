"""The series: ``patches/`` (source of truth) <-> branches in ``qemu/``.

``patches/`` holds the work as upstream receives it: several series, each a
directory of ``git format-patch`` files with its own cover letter and its own
``series`` file (the patch file names in order), and ``patches/series``
naming the series in the order they apply, with what each one needs::

    # NAME [needs NAME ...]
    stable-fixes
    snapshot-identity needs stable-fixes
    vm-lineage needs snapshot-identity
    query-netdevs

``apply`` stacks them in that order with ``git am -3``: branch
``series-NAME`` is the last commit of each series, branch ``series`` (what
gets built) the top of the whole stack. Developers edit with
``git rebase -i`` (``rebase.updateRefs`` is on in qemu/, so the series-*
branches move with their commits) and write the result back with
``export`` (harness/stages/export.py).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.config import Baseline, Layout
from harness.core.errors import CommandFailed, NotReady, PatchConflict, UsageError
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog

INDEX = "series"
COVER = "0000-cover-letter.patch"
PATCH_RE = re.compile(r"^[0-9]{4}-.*\.patch$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# "base" would make branch series-base, the name of the tag the stack starts
# from; "backup-*" would look like the branches `apply --reset` keeps.
RESERVED_RE = re.compile(r"^(base|backup-.*)$")
BRANCH_PREFIX = "series-"

# apply's state between a conflict and the run after it is resolved
CONFLICT_STATE = "harness-apply-conflict.json"
RESOLVED_STATE = "harness-apply-resolved.json"

FLAT_LAYOUT_HINT = (
    "move the patches into a series directory: `mkdir patches/snapshot-identity && "
    "git mv patches/[0-9]*.patch patches/series patches/snapshot-identity/ && "
    "echo snapshot-identity > patches/series && git add patches/series`; then split it "
    "as README.md ('The series in patches/') shows")


@dataclass(frozen=True)
class Series:
    """One series: patches/NAME/ and branch series-NAME in qemu/."""

    name: str
    directory: Path
    needs: tuple[str, ...] = ()
    patches: tuple[Path, ...] = ()

    @property
    def branch(self) -> str:
        return BRANCH_PREFIX + self.name

    @property
    def cover(self) -> Path:
        return self.directory / COVER

    def files_on_disk(self) -> list[Path]:
        """Every patch file of the series: the listed ones, then any other
        NNNN-*.patch in its directory (export replaces those too)."""
        listed = list(self.patches)
        if self.directory.is_dir():
            listed += sorted(p for p in self.directory.iterdir()
                             if PATCH_RE.match(p.name) and p.name != COVER
                             and p not in self.patches)
        return listed


def _index_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, words) of a series file; comments and blank lines skipped."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if words:
            lines.append((number, words))
    return lines


def _check_index_line(rel: str, number: int, words: list[str], seen: list[str]) -> None:
    where = f"{rel} line {number}"
    if len(words) == 2 or (len(words) > 2 and words[1] != "needs"):
        raise UsageError(f"{where}: expected `NAME [needs NAME ...]`, not {' '.join(words)!r}",
                         hint="one series a line: its name, then `needs` and the series "
                              "it needs")
    name = words[0]
    if not NAME_RE.match(name) or RESERVED_RE.match(name):
        raise UsageError(f"{where}: {name!r} cannot name a series (its branch would be "
                         f"{BRANCH_PREFIX}{name})",
                         hint="letters, digits, '.', '_' and '-'; not 'base' or 'backup-*'")
    if name in seen:
        raise UsageError(f"{where}: series {name} is listed twice",
                         hint=f"remove one of the lines from {rel}")
    unknown = [need for need in words[2:] if need not in seen]
    if unknown:
        raise UsageError(f"{where}: {name} needs {', '.join(unknown)}, which "
                         f"{'is' if len(unknown) == 1 else 'are'} not listed before it",
                         hint="list every series after the series it needs")


def _read_one(patches: Path, name: str, needs: tuple[str, ...], new_ok: bool) -> Series:
    directory = patches / name
    index = directory / INDEX
    if not index.exists():
        if new_ok:
            return Series(name, directory, needs)
        raise UsageError(f"patches/series lists {name}, but there is no patches/{name}/{INDEX}",
                         hint=f"export it from branch {BRANCH_PREFIX}{name} in qemu/ "
                              "(`python3 build.py export`), or remove it from patches/series")
    names = [words[0] for _, words in _index_lines(index)]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise UsageError(f"patches/{name}/{INDEX} names missing files: {', '.join(missing)}",
                         hint=f"fix patches/{name}/{INDEX}, or re-export with "
                              "`python3 build.py export`")
    return Series(name, directory, needs, tuple(directory / n for n in names))


def read_stack(patches: Path, *, new_ok: bool = False) -> list[Series]:
    """The series named by patches/series, in order. ``new_ok``: a series
    without a directory or series file yet is an empty one (for export)."""
    index = patches / INDEX
    strays = sorted(p.name for p in patches.glob("*.patch")) if patches.is_dir() else []
    if not index.exists():
        if strays:
            raise UsageError(f"patches/ holds {len(strays)} patch file(s) but no series "
                             "list: that is the old flat layout", hint=FLAT_LAYOUT_HINT)
        return []
    lines = _index_lines(index)
    if strays or any(w.endswith(".patch") for _, words in lines for w in words):
        raise UsageError("patches/series lists .patch files (or patches/ holds some): that "
                         "is the old flat layout; each series now has a directory of its own",
                         hint=FLAT_LAYOUT_HINT)
    stack: list[Series] = []
    for number, words in lines:
        _check_index_line("patches/series", number, words, [s.name for s in stack])
        stack.append(_read_one(patches, words[0], tuple(words[2:]), new_ok))
    listed = {s.name for s in stack}
    unlisted = sorted(d.name for d in patches.iterdir()
                      if d.is_dir() and (d / INDEX).exists() and d.name not in listed)
    if unlisted:
        raise UsageError(f"patches/series does not list the series in patches/"
                         f"{', patches/'.join(unlisted)}/",
                         hint="add it to patches/series where it applies, or remove the "
                              "directory")
    return stack


def read_series(patches: Path) -> list[Path]:
    """Every patch file of every series, in the order they apply."""
    return [patch for s in read_stack(patches) for patch in s.patches]


def needed(stack: list[Series], series: Series) -> list[Series]:
    """The series ``series`` needs, directly or not, in stack order."""
    by_name = {s.name: s for s in stack}
    todo, closure = list(series.needs), set()
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += by_name[name].needs
    return [s for s in stack if s.name in closure]


def stacked_alone(stack: list[Series], series: Series) -> bool:
    """True when ``series`` needs less than the series stacked below it,
    so it must also apply (and build) on top of only what it needs."""
    below = stack[:stack.index(series)]
    return [s.name for s in needed(stack, series)] != [s.name for s in below]


def grouped(items: list, series_of) -> list[tuple[str, list]]:
    """Runs of items of the same series, in order: [(series name, items)]."""
    groups: list[tuple[str, list]] = []
    for item in items:
        name = series_of(item)
        if not groups or groups[-1][0] != name:
            groups.append((name, []))
        groups[-1][1].append(item)
    return groups


def grouped_tables(items: list, series_of, header: tuple[str, str], row) -> str:
    """One Markdown table (``header``: its first two lines) per series, each
    under a ``### series NAME`` line; items of no series get no line."""
    out: list[str] = []
    for name, members in grouped(items, series_of):
        if name:
            out += [f"### series {name}", ""]
        out += [*header, *map(row, members), ""]
    return "\n".join(out).rstrip()


# -- patch ids ---------------------------------------------------------------

def patch_ids_of_files(git: Git, patches: list[Path]) -> list[str]:
    """Stable patch ids of patch files ("" for one without a diff), with one
    `git patch-id` for all of them: each file's mbox "From <commit>" line
    gets a made-up commit id (format-patch --zero-commit wrote zeros), which
    patch-id prints beside the id of that file's diff."""
    if not patches:
        return []
    text = []
    for number, patch in enumerate(patches):
        body = patch.read_text(errors="replace")
        if body.startswith("From "):
            body = body.split("\n", 1)[1] if "\n" in body else ""
        text.append(f"From {number + 1:040x} Mon Sep 17 00:00:00 2001\n{body}\n")
    ids = {}
    for line in git.out("patch-id", "--stable", input="".join(text)).splitlines():
        pid, _, tag = line.partition(" ")
        ids[int(tag, 16) - 1] = pid
    return [ids.get(number, "") for number in range(len(patches))]


def patch_id_of_file(git: Git, patch: Path) -> str:
    return patch_ids_of_files(git, [patch])[0]


def range_patch_ids(git: Git, start: str, end: str) -> list[str]:
    """Stable patch ids of the commits of ``start..end``, oldest first
    ("" for a commit without a diff)."""
    revs = git.revs(start, end)
    if not revs:
        return []
    text = git("log", "-p", "--no-color", "--no-ext-diff", "--format=commit %H",
               f"{start}..{end}").stdout
    by_commit = {}
    for line in git.out("patch-id", "--stable", input=text).splitlines():
        pid, _, commit = line.partition(" ")
        by_commit[commit.strip()] = pid
    return [by_commit.get(rev, "") for rev in revs]


def series_of_commits(git: Git, stack: list[Series], base_ref: str) -> dict[str, str]:
    """{commit: series name} for the commits of the series-* branches."""
    names, below = {}, base_ref
    for s in stack:
        if git.rev(f"refs/heads/{s.branch}") is None or not git.is_ancestor(below, s.branch):
            break
        names.update(dict.fromkeys(git.revs(below, s.branch), s.name))
        below = s.branch
    return names


# -- qemu/ --------------------------------------------------------------------

def open_tree(layout: Layout, log: StageLog, doing: str) -> Git:
    """The QEMU work tree, refusing while git am or a rebase is unfinished."""
    git = Git(layout.qemu, log)
    if not git.is_repo():
        raise NotReady(f"{layout.qemu} is not imported yet",
                       hint="run `python3 build.py import` first")
    if git.am_in_progress():
        raise PatchConflict(
            "a `git am` is still in progress in qemu/",
            hint="resolve it (`git -C qemu am --continue` after fixing, or "
                 f"`git -C qemu am --abort`), then run `build.py {doing}` again")
    if git.rebase_in_progress():
        raise PatchConflict(
            "a `git rebase` is still in progress in qemu/",
            hint="finish it (`git -C qemu rebase --continue`) or abort it "
                 f"(`git -C qemu rebase --abort`), then run `build.py {doing}` again")
    return git


def describe_files(files: list[str]) -> str:
    return ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")


def _state_path(git: Git, name: str) -> Path:
    return git.gitdir() / name


def resolutions(git: Git) -> dict[str, str]:
    """{patch id of a commit: patch id of the file it resolved} after conflicts."""
    path = _state_path(git, RESOLVED_STATE)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def forget_resolutions(git: Git) -> None:
    for name in (CONFLICT_STATE, RESOLVED_STATE):
        _state_path(git, name).unlink(missing_ok=True)


def _take_resolution(git: Git, base: str, top: str, log: StageLog) -> None:
    """After `git am --continue`, remember that the commit made from the
    conflicting patch is that patch (it has another patch id now)."""
    path = _state_path(git, CONFLICT_STATE)
    if not path.exists():
        return
    state = json.loads(path.read_text())
    path.unlink()
    revs = git.revs(base, top)
    position = state["position"]
    if len(revs) <= position:
        return  # the am was aborted
    resolved = range_patch_ids(git, f"{revs[position]}~1", revs[position])[0]
    if resolved and resolved != state["patch_id"]:
        table = resolutions(git)
        table[resolved] = state["patch_id"]
        _state_path(git, RESOLVED_STATE).write_text(json.dumps(table, indent=2) + "\n")
        log.note(f"{state['patch']} was resolved by hand as {revs[position][:12]}; "
                 "`build.py export` writes the resolution to patches/")


def unexported_work(git: Git, patches: Path, baseline: Baseline) -> list[str]:
    """What qemu/ holds that patches/ does not (empty: nothing to lose)."""
    stack = read_stack(patches)
    top, base_ref = baseline.patched_branch, baseline.base_tag
    top_rev = git.rev(f"refs/heads/{top}")
    want = patch_ids_of_files(git, [p for s in stack for p in s.patches])
    seen_as = resolutions(git)
    have = [seen_as.get(pid, pid) for pid in range_patch_ids(git, base_ref, top_rev)] \
        if top_rev else []
    work = []
    if len(have) > len(want) and have[:len(want)] == want:
        work.append(f"`{top}` has {len(have) - len(want)} commit(s) more than patches/")
    elif have != want[:len(have)]:
        work.append(f"`{top}` has commits that differ from patches/")
    for s in stack:
        rev = git.rev(f"refs/heads/{s.branch}")
        if rev and top_rev and not git.is_ancestor(rev, top_rev):
            work.append(f"{s.branch} has commits that `{top}` does not")
    dirty = git.dirty_files()
    if dirty:
        work.append(f"uncommitted changes in {describe_files(dirty)}")
    return work


@dataclass(frozen=True)
class ApplyResult:
    applied: list[str]          # "series/patch file" applied by this run
    already: int                # patches that were on the branch before
    head: str
    branches: dict[str, str]    # series-NAME -> commit


def _series_ends(stack: list[Series]) -> list[int]:
    ends, total = [], 0
    for s in stack:
        total += len(s.patches)
        ends.append(total)
    return ends


def _mismatched_branches(git: Git, stack: list[Series], revs: list[str], base: str,
                         applied: int) -> list[str]:
    """series-* branches that do not sit where patches/ puts them."""
    wrong = []
    for s, end in zip(stack, _series_ends(stack), strict=True):
        current = git.rev(f"refs/heads/{s.branch}")
        if current is None:
            continue
        if end <= applied:
            if current != (revs[end - 1] if end else base):
                wrong.append(s.branch)
        elif not git.is_ancestor(current, "HEAD"):
            wrong.append(s.branch)
    return wrong


def _backup(git: Git, stack: list[Series], top: str, log: StageLog) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    top_rev = git.rev(f"refs/heads/{top}")
    git("branch", f"{top}-backup-{stamp}", top_rev)
    kept = [f"{top}-backup-{stamp}"]
    for s in stack:
        rev = git.rev(f"refs/heads/{s.branch}")
        if rev and not git.is_ancestor(rev, top_rev):
            git("branch", f"{s.branch}-backup-{stamp}", rev)
            kept.append(f"{s.branch}-backup-{stamp}")
    log.note(f"kept the old branches as {', '.join(kept)}")


def apply_series(layout: Layout, baseline: Baseline, log: StageLog, *,
                 reset: bool = False) -> ApplyResult:
    git = open_tree(layout, log, "apply")
    dirty = git.dirty_files()
    if dirty:
        raise PatchConflict(
            f"qemu/ has uncommitted changes ({describe_files(dirty)}); refusing to apply "
            "over them",
            hint="commit them (then `build.py export`) or stash them; nothing was changed")
    stack = read_stack(layout.patches)
    top, base_ref = baseline.patched_branch, baseline.base_tag
    base = git.rev(base_ref)
    if base is None:
        raise NotReady(f"qemu/ has no {base_ref} tag", hint="run `python3 build.py import`")
    if git.rev(f"refs/heads/{top}") is None:
        git("branch", top, base_ref)
    if git.current_branch() != top:
        git("checkout", "-q", top)
    # `git rebase -i` then moves each series-* branch along with its commits
    git("config", "rebase.updateRefs", "true")
    _take_resolution(git, base_ref, top, log)

    plan = [(s, patch) for s in stack for patch in s.patches]
    want = patch_ids_of_files(git, [patch for _, patch in plan])
    seen_as = resolutions(git)
    revs = git.revs(base_ref, top)
    have = [seen_as.get(pid, pid) for pid in range_patch_ids(git, base_ref, top)]
    extra = len(have) - len(want) if have[:len(want)] == want else 0
    diverged = extra <= 0 and have != want[:len(have)]
    wrong = [] if diverged else _mismatched_branches(git, stack, revs, base, len(have))
    if (diverged or wrong) and not reset:
        what = (f"the `{top}` branch in qemu/ has {len(have)} commit(s) that differ from "
                "patches/" if diverged else
                f"branch(es) {', '.join(wrong)} in qemu/ do not end where patches/ ends "
                "those series")
        raise PatchConflict(
            what, hint="keep qemu/: `python3 build.py export`; or set it aside and start "
                       "from patches/: `python3 build.py apply --reset` (the old branches "
                       "are kept as backup branches)")
    if diverged or wrong:
        _backup(git, stack, top, log)
    if diverged:
        git("reset", "-q", "--hard", base_ref)
        forget_resolutions(git)
        have = []
    if extra > 0:
        log.note(f"{extra} commit(s) on `{top}` after the last series are not in patches/; "
                 "rebase them into their series (`git -C qemu rebase -i series-base`), "
                 "then `build.py export`")

    applied = []
    for position, (s, patch) in enumerate(plan[len(have):], start=len(have)):
        try:
            git.am("-3", "--keep-cr", str(patch))
        except CommandFailed as exc:
            _state_path(git, CONFLICT_STATE).write_text(json.dumps(
                {"series": s.name, "patch": f"{s.name}/{patch.name}", "position": position,
                 "patch_id": want[position]}) + "\n")
            raise _conflict(git, s, patch, exc) from exc
        applied.append(f"{s.name}/{patch.name}")

    revs = git.revs(base_ref, top)
    branches = {}
    for s, end in zip(stack, _series_ends(stack), strict=True):
        branches[s.branch] = revs[end - 1] if end else base
        git("branch", "-f", s.branch, branches[s.branch])
    return ApplyResult(applied, len(have), git.rev("HEAD"), branches)


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


def _conflict(git: Git, s: Series, patch: Path, exc: CommandFailed) -> PatchConflict:
    files = conflicting_files(git, exc.output)
    return PatchConflict(
        f"series {s.name}: patch {patch.name} does not apply"
        + (f"; conflicts in: {', '.join(files)}" if files else ""),
        log=exc.log,
        hint="resolve the conflicts in qemu/, `git -C qemu add <files>`, "
             "`git -C qemu am --continue`, then `python3 build.py apply` (it applies the "
             "rest and sets the series-* branches) and `python3 build.py export`; or give "
             "up with `git -C qemu am --abort`")


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyRequest:
    reset: bool = False  # set diverged series branches aside as backup branches


def stage(ctx: Context, request: ApplyRequest, log: StageLog) -> Outcome:
    from harness.stages.baseline import require_selected
    require_selected(ctx, "apply")
    res = apply_series(ctx.layout, ctx.baseline, log, reset=request.reset)
    return Outcome(f"applied {len(res.applied)} patch(es), {res.already} already applied, "
                   f"{len(res.branches)} series; HEAD {res.head[:12]}", res)


STAGE = Stage("apply", stage,
              "apply the series of patches/ in order: branches series-NAME, series",
              ApplyRequest)

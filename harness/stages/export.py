"""``export``: the series-* branches of qemu/ back into patches/, safely.

Each series' range (the branch of the series below it, or series-base, up to
its own branch) is written with ``git format-patch`` into patches/NAME/:
stable file names, the cover letter's subject and blurb kept, its shortlog
and diffstat regenerated, and ``base-commit:`` plus one
``prerequisite-patch-id:`` per patch of the series it needs, as
``git format-patch --base`` and b4 write them.

patches/ is the source of truth, so export refuses (unless ``force``) when
qemu/ is not in the state it was meant to be exported from: HEAD not on
branch ``series``, uncommitted changes, commits that belong to no series,
or a result that would drop patches patches/ has. It writes everything into
a temporary directory first and renames the finished series into place.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core.config import Baseline, Layout
from harness.core.errors import NotReady, PatchConflict
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog
from harness.stages import baseline
from harness.stages.series import (
    COVER,
    INDEX,
    PATCH_RE,
    Series,
    describe_files,
    forget_resolutions,
    needed,
    open_tree,
    patch_ids_of_files,
    range_patch_ids,
    read_stack,
)

SUBJECT_PLACEHOLDER = "*** SUBJECT HERE ***"
BLURB_PLACEHOLDER = "*** BLURB HERE ***"


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


def base_lines(base_commit: str, prerequisites: list[str]) -> str:
    """What `git format-patch --base` puts at the end of a cover letter."""
    return (f"\nbase-commit: {base_commit}\n"
            + "".join(f"prerequisite-patch-id: {pid}\n" for pid in prerequisites))


@dataclass(frozen=True)
class Range:
    series: Series
    start: str          # commit the series applies on
    end: str            # its branch
    ids: list[str]      # patch ids of its commits


def _ranges(git: Git, stack: list[Series], base_ref: str) -> list[Range]:
    """Each series' commits, checking that the series-* branches stack."""
    ranges = []
    below, below_ref = git.rev(base_ref), base_ref
    if below is None:
        raise NotReady(f"qemu/ has no {base_ref} tag", hint="run `python3 build.py import`")
    for s in stack:
        end = git.rev(f"refs/heads/{s.branch}")
        if end is None:
            raise NotReady(
                f"qemu/ has no branch {s.branch} for series {s.name}",
                hint=f"`python3 build.py apply` makes it; for a new series, point it at its "
                     f"last commit: `git -C qemu branch {s.branch} COMMIT`")
        if not git.is_ancestor(below, end):
            raise PatchConflict(
                f"branch {s.branch} does not contain {below_ref}: the series-* branches do "
                "not stack any more",
                hint="edit with `git -C qemu rebase -i --update-refs series-base` on branch "
                     "`series` (it moves every series-* branch with its commits); or "
                     "`python3 build.py apply --reset` to start again from patches/")
        ranges.append(Range(s, below, end, range_patch_ids(git, below, end)))
        below, below_ref = end, s.branch
    return ranges


def _top_problems(git: Git, top: str, last: str, last_ref: str | None) -> list[str]:
    """What is wrong with HEAD and branch ``top``, whose commits should end
    with the last series branch ``last_ref`` (None: no series listed; then
    ``last`` is series-base)."""
    problems = []
    current = git.current_branch()
    if current != top:
        where = (f"on branch {current}" if current
                 else f"detached at {(git.rev('HEAD') or '?')[:12]}")
        problems.append(f"HEAD is {where}, not on `{top}` (`git -C qemu checkout {top}`)")
    dirty = git.dirty_files()
    if dirty:
        problems.append(f"uncommitted changes in {describe_files(dirty)} (commit or stash "
                        "them)")
    top_rev = git.rev(f"refs/heads/{top}")
    if top_rev is None:
        problems.append(f"there is no branch `{top}` (`python3 build.py apply`)")
    elif top_rev != last and git.is_ancestor(last, top_rev):
        count = len(git.revs(last, top_rev))
        if last_ref is None:
            problems.append(f"{count} commit(s) on `{top}` belong to no series: "
                            "patches/series lists none (add a line per series, see README)")
        else:
            problems.append(
                f"{count} commit(s) on `{top}` after {last_ref} belong to no series (move "
                f"them into theirs: `git -C qemu rebase -i series-base`; or if they belong "
                f"to the last series: `git -C qemu branch -f {last_ref} {top}`)")
    elif top_rev != last:
        problems.append(f"`{top}` does not contain {last_ref}: it is not the top of the "
                        "stack (a reset or rebase without --update-refs?)")
    return problems


def _drop_problems(git: Git, ranges: list[Range]) -> list[str]:
    """Series whose patches/ directory would lose patches: files whose change
    is on no series branch, more of them than new commits replacing them.
    (A reworded or amended patch is replaced; one moved to another series
    is kept.)"""
    files = [(r.series.name, f) for r in ranges for f in r.series.files_on_disk()]
    old: dict[str, list[tuple[Path, str]]] = {r.series.name: [] for r in ranges}
    for (name, f), pid in zip(files, patch_ids_of_files(git, [f for _, f in files]),
                              strict=True):
        old[name].append((f, pid))
    new_ids = {pid for r in ranges for pid in r.ids}
    old_ids = {pid for files in old.values() for _, pid in files}
    problems = []
    for r in ranges:
        gone = [f.name for f, pid in old[r.series.name] if pid not in new_ids]
        fresh = [pid for pid in r.ids if pid not in old_ids]
        if len(gone) > len(fresh):
            problems.append(
                f"patches/{r.series.name}/ would lose {len(gone) - len(fresh)} of its "
                f"{len(old[r.series.name])} patch(es): {len(gone)} are on no series branch "
                f"({describe_files(gone)}), {len(fresh)} new commit(s) replace them")
    return problems


def _format(git: Git, r: Range, out: Path, base_commit: str, prerequisites: list[str]) -> list[str]:
    """patches/NAME/ for one series, written into ``out``."""
    out.mkdir(parents=True)
    names: list[str] = []
    if r.ids:
        listing = git.out("format-patch", "--zero-commit", "--no-signature", "--cover-letter",
                          "--no-numbered-files", "-o", str(out), f"{r.start}..{r.end}")
        written = [Path(line).name for line in listing.splitlines() if line.strip()]
        names = [n for n in written if n != COVER]
        cover = out / COVER
        text = cover.read_text()
        if r.series.cover.exists():
            text = merge_cover(r.series.cover.read_text(), text)
        cover.write_text(text.rstrip("\n") + "\n\n" + base_lines(base_commit, prerequisites))
    elif r.series.cover.exists():
        shutil.copy2(r.series.cover, out / COVER)
    # anything else a developer keeps there (notes, a b4 config) stays
    if r.series.directory.is_dir():
        for item in r.series.directory.iterdir():
            if item.name in (INDEX, COVER) or PATCH_RE.match(item.name):
                continue
            if item.is_dir():
                shutil.copytree(item, out / item.name, symlinks=True)
            else:
                shutil.copy2(item, out / item.name, follow_symlinks=False)
    (out / INDEX).write_text("".join(n + "\n" for n in names))
    return names


def _swap_in(patches: Path, new: Path, old: Path, names: list[str]) -> None:
    """Rename each finished series directory into place (undone on failure)."""
    old.mkdir()
    done = []
    try:
        for name in names:
            target = patches / name
            if target.exists():
                target.rename(old / name)
            done.append(name)
            (new / name).rename(target)
    except OSError:
        for name in reversed(done):
            if (patches / name).exists() and not (new / name).exists():
                (patches / name).rename(new / name)
            if (old / name).exists():
                (old / name).rename(patches / name)
        raise


def export_series(layout: Layout, baseline: Baseline, log: StageLog, *,
                  force: bool = False) -> dict[str, list[str]]:
    """Write every series of patches/series from its branch; {name: files}."""
    git = open_tree(layout, log, "export")
    stack = read_stack(layout.patches, new_ok=True)
    top = baseline.patched_branch
    ranges = _ranges(git, stack, baseline.base_tag)
    last, last_ref = (ranges[-1].end, ranges[-1].series.branch) if ranges else \
        (git.rev(baseline.base_tag), None)
    problems = _top_problems(git, top, last, last_ref) + _drop_problems(git, ranges)
    if problems and not force:
        raise PatchConflict(
            "refusing to export, patches/ is left as it is:\n  - " + "\n  - ".join(problems),
            hint="fix what is listed in qemu/ and export again; or, to write patches/ from "
                 "the series-* branches anyway, `python3 build.py export --force` "
                 "(`git diff patches/` then shows what changed)")
    for problem in problems:
        log.note(f"--force: exporting although {problem}")
    if not stack:
        return {}

    base_commit = git.rev(baseline.base_tag)
    ids = {r.series.name: r.ids for r in ranges}
    layout.patches.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=layout.patches))
    try:
        written = {}
        for r in ranges:
            prerequisites = [pid for s in needed(stack, r.series) for pid in ids[s.name]]
            written[r.series.name] = _format(git, r, scratch / "new" / r.series.name,
                                             base_commit, prerequisites)
        _swap_in(layout.patches, scratch / "new", scratch / "old", list(written))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    forget_resolutions(git)
    return written


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    force: bool = False  # even off branch `series`, dirty, or dropping patches


def stage(ctx: Context, request: ExportRequest, log: StageLog) -> Outcome:
    # Saving work is never refused: export is the first step of moving qemu/
    # to another baseline, so it works whatever profile the tree came from.
    marker = baseline.read_marker(ctx.layout.qemu)
    if marker and not baseline.marker_matches(marker, ctx.baseline):
        log.note(f"qemu/ holds {marker.get('ident')}, not the selected "
                 f"{ctx.baseline.ident}; exporting its series all the same")
    written = export_series(ctx.layout, ctx.baseline, log, force=request.force)
    count = sum(len(names) for names in written.values())
    return Outcome(f"exported {count} patch(es) in {len(written)} series to "
                   f"{ctx.layout.patches}", written)


STAGE = Stage("export", stage,
              "format-patch each series-NAME branch of qemu/ back into patches/NAME/",
              ExportRequest)

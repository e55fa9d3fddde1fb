"""The `status` stage: the selected and the imported baseline, per series its patches in
patches/ and its commits in qemu/, what is built."""

from __future__ import annotations

from harness.core.config import PROFILES
from harness.core.errors import BuildMissing, HarnessError
from harness.core.git import Git
from harness.core.pipeline import Context, NoRequest, Outcome, Stage
from harness.core.runner import StageLog
from harness.stages import baseline, series
from harness.stages.paths import build_paths


def lines(ctx: Context, log: StageLog) -> list[str]:
    lay = ctx.layout
    out = []
    marker = baseline.read_marker(lay.qemu)
    out.append(f"selected baseline: {ctx.baseline.name} (QEMU "
               f"{ctx.baseline.upstream_version}, {ctx.baseline.ident})")
    if marker:
        have = baseline.marker_profile(marker) or "unknown profile"
        out.append(f"qemu/: {have} ({marker['ident']}, {marker['source']})"
                   + ("" if baseline.marker_matches(marker, ctx.baseline) else
                      f" -- not the selected baseline: `python3 build.py --baseline "
                      f"{have} COMMAND` works on it"))
    else:
        out.append("qemu/: not imported")
    git = Git(lay.qemu, log) if marker else None
    top, below = ctx.baseline.patched_branch, ctx.baseline.base_tag
    if git:
        ahead = len(git.revs(below, top)) if git.rev(top) else 0
        out.append(f"qemu/: HEAD on {git.current_branch() or 'no branch (detached)'}; "
                   f"`{top}` has {ahead} commit(s) on {below}")
    try:
        stack = series.read_stack(lay.patches, new_ok=True)
    except HarnessError as exc:
        out.append(f"patches/: {exc.message}")
        stack = []
    for s in stack:
        needs = f" (needs {', '.join(s.needs)})" if s.needs else ""
        where = ""
        if git and git.rev(f"refs/heads/{s.branch}"):
            where = f", {len(git.revs(below, s.branch))} commit(s) on {s.branch}"
            below = s.branch
        elif git:
            where = f", no branch {s.branch}"
        out.append(f"series {s.name}{needs}: {len(s.patches)} patch(es) in "
                   f"patches/{s.name}/{where}")
    if git and stack and git.rev(top) and git.is_ancestor(below, top):
        extra = len(git.revs(below, top))
        if extra:
            out.append(f"qemu/: {extra} commit(s) on `{top}` after {below} are in no series")
    if git:
        dirty = git.dirty_files()
        if dirty:
            out.append(f"qemu/: uncommitted changes in {len(dirty)} file(s)")
    for name, prof in PROFILES.items():
        try:
            build_paths(prof, lay)
            out.append(f"{name} build: ready in {prof.build_dir(lay)}")
        except BuildMissing:
            out.append(f"{name} build: missing")
    return out


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome[list[str]]:
    found = lines(ctx, log)
    return Outcome("status shown", found, "\n".join("    " + line for line in found))


STAGE = Stage("status", stage, "show baseline, series and builds")

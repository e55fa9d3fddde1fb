"""Port: how the series fares on another baseline, without touching qemu/.

``build.py --baseline NAME port`` imports profile NAME into a tree of its
own, ``out/port/NAME/qemu`` (the same import as qemu/: tarball, sha256,
that profile's fix-ups), applies patches/ there with ``git am -3`` one
patch at a time and builds after each (the bisect stepper), stopping at the
first patch that does not apply; a series that needs no other series is then
still tried on the baseline by itself. The outcome is a table, not a verdict:
``out/results/port-NAME.json``, rendered by the report as "Port to NAME".
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.config import BUILD_TARGETS, Baseline, BuildProfile, Layout
from harness.core.errors import BuildFailed, UsageError
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog
from harness.stages import baseline as baseline_mod
from harness.stages import series
from harness.stages.bisect import Step, name_series, reset_tree, step_through


@dataclass
class PortResult:
    profile: str
    upstream_version: str
    ident: str
    tree: str
    build: bool                      # were the steps built (not `--no-build`)
    steps: list[Step]                # the baseline first, then one per patch
    generated_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def base(self) -> Step:
        return self.steps[0]

    @property
    def patches(self) -> list[Step]:
        return self.steps[1:]

    @property
    def applied(self) -> int:
        return sum(1 for s in self.patches if s.applied)

    @property
    def built(self) -> int:
        return sum(1 for s in self.patches if s.built)

    def summary(self) -> str:
        text = (f"{self.applied} of {len(self.patches)} patch(es) apply on {self.profile} "
                f"({self.ident})")
        if self.build:
            text += f", {self.built} build"
        stuck = next((s for s in self.patches if s.applied is False), None)
        if stuck:
            text += f"; {_name(asdict(stuck))} does not apply"
            if stuck.conflicts:
                text += f" (conflicts in {', '.join(stuck.conflicts)})"
        return text


def port_profile(layout: Layout, baseline: Baseline) -> BuildProfile:
    return BuildProfile(f"port-{baseline.name}", "qemu",
                        source_path=layout.port_tree(baseline.name))


def prepare_tree(layout: Layout, baseline: Baseline, log: StageLog, *,
                 source: str = "debian", tarball: Path | None = None,
                 git_url: str | None = None) -> Git:
    """out/port/NAME/qemu holding ``baseline`` at series-base, nothing applied."""
    tree = layout.port_tree(baseline.name)
    marker = baseline_mod.read_marker(tree)
    if tree.exists() and (marker is None or not baseline_mod.marker_matches(marker, baseline)
                          or marker.get("source") != source):
        log.note(f"{tree} does not hold {baseline.ident} ({source}): importing it again")
        shutil.rmtree(tree)  # harness-made under out/: nothing of the user's in it
    baseline_mod.import_baseline(layout, baseline, log, source=source, tarball=tarball,
                                 git_url=git_url, dest=tree)
    git = Git(tree, log)
    reset_tree(git, baseline)
    _fetch_series_objects(layout, git, log)
    return git


def _fetch_series_objects(layout: Layout, git: Git, log: StageLog) -> None:
    """The blobs the patches were made against (qemu/'s branches), so that
    `git am -3` can merge where a plain apply fails and name real conflicts."""
    main = Git(layout.qemu, log)
    if not main.is_repo():
        log.note("no qemu/ to take the series' preimages from: `git am -3` falls back "
                 "to a plain apply")
        return
    res = git("fetch", "-q", "--no-tags", str(layout.qemu),
              "+refs/heads/*:refs/harness-port-source/*", check=False)
    if res.returncode != 0:
        log.note("could not fetch qemu/'s objects; `git am -3` falls back to a plain apply")


def port(layout: Layout, baseline: Baseline, patches: list[Path], log: StageLog, *,
         build: bool = True, jobs: int | None = None,
         targets: tuple[str, ...] = BUILD_TARGETS, source: str = "debian",
         tarball: Path | None = None, git_url: str | None = None,
         alone: list[list[Path]] | None = None) -> PortResult:
    """``alone``: groups of ``patches`` (series that need no other series) that
    are tried on the baseline by themselves when the run in order stopped
    before reaching them, so one series that does not apply does not hide
    whether an independent one does."""
    git = prepare_tree(layout, baseline, log, source=source, tarball=tarball,
                       git_url=git_url)
    profile = port_profile(layout, baseline)
    steps = step_through(git, profile, layout, baseline, patches,
                         log, build=build, targets=targets, jobs=jobs,
                         base_must_build=False)
    tried = {s.patch: s for s in steps}
    for group in alone or []:
        if not group or group[0].name in tried:
            continue
        log.note(f"trying {group[0].name} and what follows it on {baseline.base_tag} alone")
        reset_tree(git, baseline)
        for step in step_through(git, profile, layout, baseline, group, log,
                                 build=build and steps[0].built is not False,
                                 targets=targets, jobs=jobs, base_must_build=False)[1:]:
            tried[step.patch] = step
    # after the first patch that does not apply: listed, not tried
    steps = steps[:1] + [tried.get(p.name) or Step(p.name, None, None, 0.0)
                         for p in patches]
    return PortResult(baseline.name, baseline.upstream_version, baseline.ident,
                      str(layout.port_tree(baseline.name)), build, steps)


def results_path(layout: Layout, profile: str) -> Path:
    return layout.results / f"port-{profile}.json"


def save(result: PortResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["summary"] = result.summary()
    path.write_text(json.dumps(data, indent=2) + "\n")


def _yes_no(value: bool | None, no: str = "NO") -> str:
    return "-" if value is None else ("yes" if value else no)


def _name(step: dict) -> str:
    """A step's patch, with its series when it has one."""
    return f"{step['series']}/{step['patch']}" if step.get("series") else step["patch"]


def rows(data: dict) -> list[str]:
    """The port table (from the saved JSON, so the report can render it)."""
    out = ["| patch | applies | conflicts | builds | seconds |", "|---|---|---|---|---:|"]
    for i, s in enumerate(data["steps"]):
        if i == 0:
            applies = "(baseline)"
        elif s["applied"] is None:
            applies = "not tried"
        else:
            applies = _yes_no(s["applied"])
        builds = _yes_no(s["built"], "FAILED")
        conflicts = ", ".join(s.get("conflicts") or []) or "-"
        out.append(f"| {_name(s)} | {applies} | {conflicts} | {builds} | "
                   f"{s['seconds']:.1f} |")
    return out


def table(result: PortResult) -> str:
    return "\n".join(rows(asdict(result)))


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PortRequest:
    no_build: bool = False  # only apply the patches
    jobs: int | None = None
    source: str = "debian"
    tarball: Path | None = None
    git_url: str | None = None


def stage(ctx: Context, request: PortRequest, log: StageLog) -> Outcome[PortResult]:
    """Not gating: patches that do not apply or build are the table's news."""
    stack = series.read_stack(ctx.layout.patches)
    patches = [p for s in stack for p in s.patches]
    if not patches:
        raise UsageError(f"{ctx.layout.patches} has no patches to port",
                         hint="`python3 build.py export` writes the series there")
    res = port(ctx.layout, ctx.baseline, patches, log, build=not request.no_build,
               jobs=request.jobs, source=request.source, tarball=request.tarball,
               git_url=request.git_url,
               alone=[list(s.patches) for s in stack[1:] if not s.needs])
    name_series(res.steps, stack)
    path = results_path(ctx.layout, ctx.baseline.name)
    save(res, path)
    if res.build and res.base.built is False:
        return Outcome.failed(BuildFailed(
            f"baseline {ctx.baseline.name} itself does not build in {res.tree}: "
            f"{res.base.error}",
            hint=f"read the log; check the fix-ups in harness/fixups/{ctx.baseline.name}/ "
                 "and the build dependencies (`python3 build.py setup`); `port --no-build` "
                 "still shows which patches apply"), res, table(res))
    return Outcome(f"{res.summary()}; table in {path}", res, table(res))


STAGE = Stage("port", stage, "apply and build the series one patch at a time on the "
              "--baseline profile, in out/port/NAME/qemu (qemu/ untouched)", PortRequest)

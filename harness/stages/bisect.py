"""Per-patch build: every patch of the series must build on its own.

The stack of series is applied one patch at a time in a worktree of its own
(out/bisect/qemu, so qemu/ is never disturbed) and built after each patch
with -Werror; ninja is incremental and ccache warm, so a step costs what
the patch touches. An optional quick test command runs after each build.
A series that needs less than what is stacked below it (query-netdevs needs
nothing) must also apply and build on series-base plus only what it needs:
upstream may take it first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.config import (
    BASELINE_ENV,
    BUILD_TARGETS,
    PROFILES,
    Baseline,
    BuildProfile,
    Layout,
)
from harness.core.errors import BuildFailed, CommandFailed, NotReady
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog, run
from harness.core.timer import Timer
from harness.stages import baseline, series
from harness.stages import build as qbuild
from harness.stages.paths import build_paths
from harness.stages.series import Series, conflicting_files, grouped_tables, needed, stacked_alone
from harness.stages.setup import venv_python


@dataclass
class Step:
    patch: str
    applied: bool | None          # None: not tried (after a patch that did not apply)
    built: bool | None            # None: not built (did not apply, or building is off)
    seconds: float
    tested: bool | None = None
    error: str = ""
    conflicts: list[str] = field(default_factory=list)
    series: str = ""


@dataclass
class Alone:
    """A series applied and built on series-base plus only what it needs."""

    series: str
    on: str                 # "series-base", or "series-base + NAME, ..."
    applied: bool
    built: bool | None      # None: did not apply
    seconds: float
    error: str = ""
    conflicts: list[str] = field(default_factory=list)


@dataclass
class BisectResult:
    steps: list[Step]
    alone: list[Alone] = field(default_factory=list)

    def failures(self) -> list[str]:
        bad = [f"{s.series}/{s.patch}" if s.series else s.patch for s in self.steps
               if not s.built or s.tested is False]
        return bad + [f"{a.series} on {a.on}" for a in self.alone if not a.built]


def _prepare_tree(layout: Layout, baseline: Baseline, log: StageLog) -> Git:
    main = Git(layout.qemu, log)
    if not main.is_repo():
        raise NotReady("qemu/ is not imported", hint="run `python3 build.py import`")
    tree = layout.bisect_tree
    main("worktree", "prune")
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        main("worktree", "add", "-q", "--detach", str(tree), baseline.base_tag)
    reset_tree(Git(tree, log), baseline)
    return Git(tree, log)


def reset_tree(git: Git, baseline: Baseline) -> None:
    """Back to the baseline: no `git am` in progress, no commits, no stray
    files (the build directory stays, so the next build is incremental)."""
    git.am_abort()
    git("checkout", "-q", "--detach", "-f", baseline.base_tag)
    git("clean", "-q", "-fd", "-e", "build/")


def step_through(git: Git, profile: BuildProfile, layout: Layout, baseline: Baseline,
                 patches: list[Path], log: StageLog, *, build: bool = True,
                 targets: tuple[str, ...] = BUILD_TARGETS, jobs: int | None = None,
                 test_argv: list[str] | None = None, test_env: dict | None = None,
                 base_must_build: bool = True) -> list[Step]:
    """Build the baseline, then `git am -3` one patch at a time, building after
    each; stop at the first patch that does not apply (its conflicting files
    recorded, `git am` aborted). The first step is the baseline itself; when it
    does not build, stop there (or, without ``base_must_build``, go on applying
    without building)."""
    steps: list[Step] = []

    def do_build(step: Step) -> None:
        if not build:
            return
        try:
            qbuild.build(profile, layout, log, baseline, jobs=jobs, targets=targets)
            step.built = True
        except BuildFailed as exc:
            step.built = False
            step.error = exc.message.replace("\n", " ")

    timer = Timer()
    base = Step(baseline.base_tag, True, None, 0.0)
    do_build(base)
    base.seconds = timer.seconds
    steps.append(base)
    if base.built is False:
        if base_must_build:
            return steps
        build = False
    for patch in patches:
        timer = Timer()
        try:
            git.am("-3", str(patch))
        except CommandFailed as exc:
            conflicts = conflicting_files(git, exc.output)
            git.am_abort()
            steps.append(Step(patch.name, False, None, timer.seconds,
                              error="does not apply", conflicts=conflicts))
            break
        step = Step(patch.name, True, None, 0.0)
        do_build(step)
        if step.built and test_argv:
            # the quick tests run against this step's build, not qemu/build
            paths = profile.build_dir(layout) / "harness-paths.json"
            paths.write_text(json.dumps(build_paths(profile, layout)))
            res = run(test_argv, log, cwd=layout.root, check=False,
                      env={**(test_env or {}), "QEMU_HARNESS_PATHS": str(paths)})
            step.tested = res.returncode == 0
        step.seconds = timer.seconds
        steps.append(step)
    return steps


def bisect(layout: Layout, baseline: Baseline, stack: list[Series], log: StageLog, *,
           targets: tuple[str, ...] = BUILD_TARGETS,
           test_argv: list[str] | None = None,
           test_env: dict | None = None) -> BisectResult:
    git = _prepare_tree(layout, baseline, log)
    steps = step_through(git, PROFILES["bisect"], layout, baseline,
                         [p for s in stack for p in s.patches], log,
                         targets=targets, test_argv=test_argv, test_env=test_env)
    name_series(steps, stack)
    result = BisectResult(steps)
    if steps[0].built is False:
        return result
    for s in stack:
        if stacked_alone(stack, s):
            result.alone.append(_alone(layout, baseline, stack, s, log, git, targets))
    return result


def name_series(steps: list[Step], stack: list[Series]) -> None:
    """Give each step after the baseline the series of its patch."""
    owners = [s.name for s in stack for _ in s.patches]
    for step, owner in zip(steps[1:], owners, strict=False):
        step.series = owner


def _alone(layout: Layout, baseline: Baseline, stack: list[Series], s: Series,
           log: StageLog, git: Git, targets: tuple[str, ...]) -> Alone:
    timer = Timer()
    below = needed(stack, s)
    on = " + ".join([baseline.base_tag, ", ".join(n.name for n in below)] if below
                    else [baseline.base_tag])
    log.note(f"series {s.name} alone on {on}")
    reset_tree(git, baseline)
    for owner in [*below, s]:
        for patch in owner.patches:
            try:
                git.am("-3", str(patch))
            except CommandFailed as exc:
                conflicts = conflicting_files(git, exc.output)
                git.am_abort()
                return Alone(s.name, on, False, None, timer.seconds,
                             f"{owner.name}/{patch.name} does not apply", conflicts)
    try:
        qbuild.build(PROFILES["bisect"], layout, log, baseline, targets=targets)
        error = ""
    except BuildFailed as exc:
        error = exc.message.replace("\n", " ")
    return Alone(s.name, on, True, not error, timer.seconds, error)


def _step_row(s: Step) -> str:
    tested = "-" if s.tested is None else ("ok" if s.tested else "FAILED")
    built = "-" if not s.applied or s.built is None else ("ok" if s.built else "FAILED")
    return (f"| {s.patch} | {'ok' if s.applied else 'NO'} | {built} | {tested} "
            f"| {s.seconds:.1f} |")


def _alone_row(a: Alone) -> str:
    built = "-" if a.built is None else ("ok" if a.built else "FAILED")
    applied = "ok" if a.applied else f"NO: {a.error}"
    return f"| {a.series} | {a.on} | {applied} | {built} | {a.seconds:.1f} |"


def table(result: BisectResult) -> str:
    """A table per series; then which series apply on what they need alone."""
    text = grouped_tables(result.steps, lambda s: s.series,
                          ("| patch | applies | builds | tests | seconds |",
                           "|---|---|---|---|---:|"), _step_row)
    if result.alone:
        text += "\n\n" + "\n".join([
            "### series applied alone", "",
            "| series | on | applies | builds | seconds |", "|---|---|---|---|---:|",
            *map(_alone_row, result.alone)])
    return text


def save(result: BisectResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"steps": [asdict(s) for s in result.steps],
                                "alone": [asdict(a) for a in result.alone]}, indent=2) + "\n")


def load(data) -> BisectResult:
    """A bisect.json (before several series: a list of steps)."""
    if isinstance(data, list):
        data = {"steps": data}
    return BisectResult([Step(**s) for s in data.get("steps", [])],
                        [Alone(**a) for a in data.get("alone", [])])


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BisectRequest:
    full: bool = False  # ninja's default target (qtests included), not the five binaries
    test: list[str] | None = None  # pytest after each build; [] = the QEMU tests


def stage(ctx: Context, request: BisectRequest, log: StageLog) -> Outcome[BisectResult]:
    baseline.require_selected(ctx, "bisect")
    stack = series.read_stack(ctx.layout.patches)
    test_argv = None
    if request.test is not None:
        test_argv = [str(venv_python(ctx.layout)), "-m", "pytest", "-q", "-x",
                     *(request.test or ["tests/qemu", "-m", "not iotests"])]
    targets = () if request.full else qbuild.BUILD_TARGETS
    result = bisect(ctx.layout, ctx.baseline, stack, log, targets=targets,
                    test_argv=test_argv, test_env={BASELINE_ENV: ctx.baseline.name})
    save(result, ctx.layout.results / "bisect.json")
    bad = result.failures()
    summary = (f"{len(result.steps) - 1} patch(es) of {len(stack)} series built one by one, "
               f"{len(result.alone)} series alone on what it needs; {len(bad)} failed")
    if bad:
        return Outcome.failed(
            BuildFailed(f"{summary}: {', '.join(bad)}",
                        hint="make each failing patch build on its own, and each series "
                             "apply on what it needs (git rebase -i in qemu/), "
                             "`build.py export`, then bisect again"), result, table(result))
    return Outcome(summary, result, table(result))


STAGE = Stage("bisect", stage, "apply and build the series one patch at a time",
              BisectRequest)

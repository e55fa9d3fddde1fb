"""Per-patch build: every patch of the series must build on its own.

The series is applied one patch at a time in a worktree of its own
(out/bisect/qemu, so qemu/ is never disturbed) and built after each patch
with -Werror; ninja is incremental and ccache warm, so a step costs what
the patch touches. An optional quick test command runs after each build.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import qbuild
from .config import BUILD_TARGETS, PROFILES, Baseline, BuildProfile, Layout
from .errors import BuildFailed, CommandFailed, UsageError
from .git import Git
from .paths import build_paths
from .runner import StageLog, run
from .series import conflicting_files


@dataclass
class Step:
    patch: str
    applied: bool | None          # None: not tried (after a patch that did not apply)
    built: bool | None            # None: not built (did not apply, or building is off)
    seconds: float
    tested: bool | None = None
    error: str = ""
    conflicts: list[str] = field(default_factory=list)


def _prepare_tree(layout: Layout, baseline: Baseline, log: StageLog) -> Git:
    main = Git(layout.qemu, log)
    if not main.is_repo():
        raise UsageError("qemu/ is not imported", hint="run `python3 build.py import`")
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

    start = time.monotonic()
    base = Step(baseline.base_tag, True, None, 0.0)
    do_build(base)
    base.seconds = time.monotonic() - start
    steps.append(base)
    if base.built is False:
        if base_must_build:
            return steps
        build = False
    for patch in patches:
        start = time.monotonic()
        try:
            git.am("-3", str(patch))
        except CommandFailed as exc:
            conflicts = conflicting_files(git, exc.output)
            git.am_abort()
            steps.append(Step(patch.name, False, None, time.monotonic() - start,
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
        step.seconds = time.monotonic() - start
        steps.append(step)
    return steps


def bisect(layout: Layout, baseline: Baseline, patches: list[Path], log: StageLog, *,
           targets: tuple[str, ...] = BUILD_TARGETS,
           test_argv: list[str] | None = None,
           test_env: dict | None = None) -> list[Step]:
    git = _prepare_tree(layout, baseline, log)
    return step_through(git, PROFILES["bisect"], layout, baseline, patches, log,
                        targets=targets, test_argv=test_argv, test_env=test_env)


def table(steps: list[Step]) -> str:
    lines = ["| patch | applies | builds | tests | seconds |", "|---|---|---|---|---:|"]
    for s in steps:
        tested = "-" if s.tested is None else ("ok" if s.tested else "FAILED")
        built = "-" if not s.applied or s.built is None else ("ok" if s.built else "FAILED")
        lines.append(f"| {s.patch} | {'ok' if s.applied else 'NO'} | {built} | {tested} "
                     f"| {s.seconds:.1f} |")
    return "\n".join(lines)


def save(steps: list[Step], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(s) for s in steps], indent=2) + "\n")

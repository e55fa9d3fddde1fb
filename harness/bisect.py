"""Per-patch build: every patch of the series must build on its own.

The series is applied one patch at a time in a worktree of its own
(out/bisect/qemu, so qemu/ is never disturbed) and built after each patch
with -Werror; ninja is incremental and ccache warm, so a step costs what
the patch touches. An optional quick test command runs after each build.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import qbuild
from .config import BUILD_TARGETS, PROFILES, Baseline, Layout
from .errors import BuildFailed, CommandFailed, UsageError
from .git import Git, user_identity_env
from .paths import build_paths
from .runner import StageLog, run


@dataclass
class Step:
    patch: str
    applied: bool
    built: bool
    seconds: float
    tested: bool | None = None
    error: str = ""


def _prepare_tree(layout: Layout, baseline: Baseline, log: StageLog) -> Git:
    main = Git(layout.qemu, log)
    if not main.is_repo():
        raise UsageError("qemu/ is not imported", hint="run `python3 build.py import`")
    tree = layout.bisect_tree
    main("worktree", "prune")
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        main("worktree", "add", "-q", "--detach", str(tree), baseline.base_tag)
    git = Git(tree, log)
    if git.am_in_progress():
        git("am", "--abort")
    git("checkout", "-q", "--detach", "-f", baseline.base_tag)
    git("clean", "-q", "-fd", "-e", "build/")
    return git


def bisect(layout: Layout, baseline: Baseline, patches: list[Path], log: StageLog, *,
           targets: tuple[str, ...] = BUILD_TARGETS,
           test_argv: list[str] | None = None,
           test_env: dict | None = None) -> list[Step]:
    git = _prepare_tree(layout, baseline, log)
    profile = PROFILES["bisect"]
    steps: list[Step] = []
    start = time.monotonic()
    try:
        qbuild.build(profile, layout, log, baseline, targets=targets)
        steps.append(Step(baseline.base_tag, True, True, time.monotonic() - start))
    except BuildFailed as exc:
        steps.append(Step(baseline.base_tag, True, False, time.monotonic() - start,
                          error=exc.message))
        return steps
    for patch in patches:
        start = time.monotonic()
        try:
            git("am", "-3", str(patch), env=user_identity_env(git))
        except CommandFailed:
            git("am", "--abort", check=False)
            steps.append(Step(patch.name, False, False, time.monotonic() - start,
                              error="does not apply"))
            break
        step = Step(patch.name, True, True, 0.0)
        try:
            qbuild.build(profile, layout, log, baseline, targets=targets)
        except BuildFailed as exc:
            step.built = False
            step.error = exc.message.replace("\n", " ")
        if step.built and test_argv:
            # the quick tests run against this step's build, not qemu/build
            paths = layout.bisect_tree.parent / "paths.json"
            paths.write_text(json.dumps(build_paths(profile, layout)))
            res = run(test_argv, log, cwd=layout.root, check=False,
                      env={**(test_env or {}), "QEMU_HARNESS_PATHS": str(paths)})
            step.tested = res.returncode == 0
        step.seconds = time.monotonic() - start
        steps.append(step)
    return steps


def table(steps: list[Step]) -> str:
    lines = ["| patch | applies | builds | tests | seconds |", "|---|---|---|---|---:|"]
    for s in steps:
        tested = "-" if s.tested is None else ("ok" if s.tested else "FAILED")
        built = "ok" if s.built else ("FAILED" if s.applied else "-")
        lines.append(f"| {s.patch} | {'ok' if s.applied else 'NO'} | {built} | {tested} "
                     f"| {s.seconds:.1f} |")
    return "\n".join(lines)


def save(steps: list[Step], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(s) for s in steps], indent=2) + "\n")

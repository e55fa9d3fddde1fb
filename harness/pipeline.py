"""Stages as data, run with a per-stage log and timing.

A stage is a name and a function ``(Context, StageLog) -> str`` that
returns a one-line summary or raises a HarnessError. ``run_stages`` stops at
the first failure (``keep_going``: runs every stage anyway, as the test
suites do) and always prints the per-stage table: result, time, summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Baseline, Layout, select_baseline
from .errors import HarnessError
from .runner import StageLog


@dataclass
class Context:
    layout: Layout = field(default_factory=Layout)
    baseline: Baseline = field(default_factory=select_baseline)
    # how the baseline was chosen, for messages: "--baseline", "$QEMU_HARNESS_BASELINE"
    # or "" (the default of harness/baselines.toml)
    baseline_origin: str = ""
    verbose: bool = False
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    func: Callable[[Context, StageLog], str]
    help: str = ""


@dataclass
class StageResult:
    name: str
    ok: bool
    seconds: float
    summary: str
    log: str


def run_stage(stage: Stage, ctx: Context, out=None) -> StageResult:
    out = out or sys.stdout
    log_path = ctx.layout.logs / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    print(f"==> {stage.name}", file=out, flush=True)
    start = time.monotonic()
    with StageLog(log_path, echo=ctx.verbose) as log:
        log.note(f"stage {stage.name} started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            summary = stage.func(ctx, log)
        except HarnessError as exc:
            exc.log = exc.log or str(log_path)
            log.note(f"stage {stage.name} FAILED: {exc.message}")
            raise
        except BaseException as exc:
            log.note(f"stage {stage.name} aborted: {exc!r}")
            raise
        seconds = time.monotonic() - start
        log.note(f"stage {stage.name} ok in {seconds:.1f}s: {summary}")
    print(f"    {summary} ({seconds:.1f}s, log: {log_path})", file=out, flush=True)
    return StageResult(stage.name, True, seconds, summary, str(log_path))


def run_stages(stages: list[Stage], ctx: Context, out=None,
               keep_going: bool = False) -> list[StageResult]:
    """Run ``stages`` in order; raise the first failure after the table is printed.

    Without ``keep_going`` the first failure ends the run (a later stage needs the
    earlier one's output); with it every stage runs and the first failure is raised
    at the end, so one broken suite does not hide another's results."""
    out = out or sys.stdout
    results: list[StageResult] = []
    failure: HarnessError | None = None
    for stage in stages:
        start = time.monotonic()
        try:
            results.append(run_stage(stage, ctx, out))
        except HarnessError as exc:
            results.append(StageResult(stage.name, False, time.monotonic() - start,
                                       exc.message.splitlines()[0],
                                       str(ctx.layout.logs / f"{stage.name}.log")))
            failure = failure or exc
            if not keep_going:
                break
    print_timings(results, out)
    if failure is not None:
        raise failure
    return results


def print_timings(results: list[StageResult], out=None) -> None:
    out = out or sys.stdout
    if len(results) < 2 and all(r.ok for r in results):
        return
    print("\nstage        result   seconds  summary", file=out)
    for r in results:
        print(f"{r.name:<12} {'ok' if r.ok else 'FAILED':<8} {r.seconds:8.1f}  {r.summary}",
              file=out)
    print(f"{'total':<12} {'':<8} {sum(r.seconds for r in results):8.1f}", file=out,
          flush=True)

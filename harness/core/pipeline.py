"""Stages as data: a name, a typed request, a function that returns a typed outcome.

A stage function ``(Context, Request, StageLog) -> Outcome`` does its work, logs every
command to its StageLog and prints nothing. It returns an Outcome (a status, a one-line
summary, the text of its tables, its typed result) or raises a HarnessError; a stage whose
tables matter most when it fails (checkpatch, bisect) returns a FAILED outcome carrying the
error, which is raised once the tables are shown. ``run_stages`` runs stages in order, each
with its log file and timer, and tells an Observer what happened; the CLI
(harness/cli.py) is the observer that prints. A stage's progress (``log.progress``: ninja's
[n/N], a suite's count) goes to the observer's progress line for that stage, unless
``--verbose`` echoes the whole output anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness.core.config import Baseline, Layout, select_baseline
from harness.core.errors import HarnessError
from harness.core.runner import Progress, StageLog
from harness.core.timer import Timer

T = TypeVar("T")


class Status(Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass
class Outcome(Generic[T]):
    """What a stage did: ``result`` is the stage's own typed result (an ImportResult, the
    BuildResults, a BisectResult, ...), ``text`` what a person reads besides the summary."""

    summary: str
    result: T | None = None
    text: str = ""
    status: Status = Status.OK
    error: HarnessError | None = None

    @classmethod
    def failed(cls, error: HarnessError, result: T | None = None, text: str = "") -> Outcome[T]:
        return cls(error.message.splitlines()[0], result, text, Status.FAILED, error)


@dataclass(frozen=True)
class NoRequest:
    """The request of a stage that takes no options."""


@dataclass
class Context:
    """What every stage gets: where things are and which baseline is selected."""

    layout: Layout = field(default_factory=Layout)
    baseline: Baseline = field(default_factory=select_baseline)
    # how the baseline was chosen, for messages: "--baseline", "$QEMU_HARNESS_BASELINE"
    # or "" (the default of harness/baselines.toml)
    baseline_origin: str = ""
    verbose: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    func: Callable[[Context, Any, StageLog], Outcome]
    help: str = ""
    request: type = NoRequest

    def make_request(self, values: Mapping[str, Any] | Any = ()) -> Any:
        """The stage's request from ``values`` (a mapping or an argparse Namespace): each
        field of the request type that ``values`` has; the others keep their defaults."""
        get = values.get if isinstance(values, Mapping) else \
            (lambda k, d=None: getattr(values, k, d))
        missing = object()
        given = {f.name: v for f in fields(self.request)
                 if (v := get(f.name, missing)) is not missing and v is not None}
        return self.request(**given)


@dataclass
class StageRun:
    """One stage's run: its status and time, its outcome (None when it raised)."""

    name: str
    status: Status
    seconds: float
    summary: str
    log: Path
    outcome: Outcome | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class Observer:
    """Told when a stage starts and ends; the default one says nothing."""

    def started(self, stage: Stage, log: Path) -> None:
        pass

    def progress(self, stage: Stage) -> Progress | None:
        """Where ``stage`` reports how far it is (None: nowhere)."""
        return None

    def finished(self, run: StageRun) -> None:
        pass

    def finished_all(self, runs: list[StageRun]) -> None:
        pass


def _run(stage: Stage, ctx: Context, request: Any,
         observer: Observer) -> tuple[StageRun, HarnessError | None]:
    request = stage.make_request() if request is None else request
    log_path = ctx.layout.logs / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    observer.started(stage, log_path)
    timer = Timer()
    progress = None if ctx.verbose else observer.progress(stage)
    with StageLog(log_path, echo=ctx.verbose, progress=progress) as log:
        log.note(f"stage {stage.name} started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            outcome = stage.func(ctx, request, log)
            error = outcome.error
        except HarnessError as exc:
            outcome, error = None, exc
        except BaseException as exc:
            log.note(f"stage {stage.name} aborted: {exc!r}")
            raise
        if error is not None:
            error.log = error.log or str(log_path)
            log.note(f"stage {stage.name} FAILED: {error.message}")
            run = StageRun(stage.name, Status.FAILED, timer.seconds,
                           error.message.splitlines()[0], log_path, outcome)
        else:
            run = StageRun(stage.name, outcome.status, timer.seconds, outcome.summary,
                           log_path, outcome)
            log.note(f"stage {stage.name} {outcome.status.value} in {run.seconds:.1f}s: "
                     f"{outcome.summary}")
    observer.finished(run)
    return run, error


def run_stage(stage: Stage, ctx: Context, request: Any = None,
              observer: Observer | None = None) -> StageRun:
    """Run one stage with its own log; raise its error (after the observer saw the run)."""
    run, error = _run(stage, ctx, request, observer or Observer())
    if error is not None:
        raise error
    return run


def run_stages(stages: list[Stage], ctx: Context, requests: Mapping[str, Any] | None = None,
               observer: Observer | None = None, keep_going: bool = False) -> list[StageRun]:
    """Run ``stages`` in order (``requests`` by stage name; a stage without one gets its
    default request); raise the first failure after the observer saw every run.

    Without ``keep_going`` the first failure ends the run (a later stage needs the
    earlier one's output); with it every stage runs and the first failure is raised
    at the end, so one broken suite does not hide another's results."""
    observer = observer or Observer()
    requests = requests or {}
    runs: list[StageRun] = []
    failure: HarnessError | None = None
    for stage in stages:
        run, error = _run(stage, ctx, requests.get(stage.name), observer)
        runs.append(run)
        if error is not None:
            failure = failure or error
            if not keep_going:
                break
    observer.finished_all(runs)
    if failure is not None:
        raise failure
    return runs

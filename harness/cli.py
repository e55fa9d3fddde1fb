"""The command line: parses, builds each stage's request, prints, maps errors to exit codes.

The only module of the pipeline that prints (stages return outcomes, harness/core/pipeline.py
runs them and tells this module's Printer). build.py at the repository root calls ``main``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.core.config import BASELINE_ENV, Layout, select_baseline
from harness.core.errors import HarnessError, UsageError, exit_code, fail
from harness.core.pipeline import Context, Observer, Stage, StageRun, run_stages
from harness.progress import ProgressLine
from harness.stages import ALL, STAGES, testrun
from harness.stages.paths import paths_json
from harness.stages.peers import PEERS

DESCRIPTION = """Build and test the QEMU snapshot-identity series.

Runs on the system python3 (standard library only): `setup` creates the
project venv that everything else uses. See README.md.
"""


class Printer(Observer):
    """What a person sees: each stage's name, how far it is while it runs (a progress line),
    its tables, its summary, time and log; the table of all stages when more than one ran
    (or one failed)."""

    def __init__(self, out=None):
        self.out = out or sys.stdout

    def started(self, stage: Stage, log: Path) -> None:
        print(f"==> {stage.name}", file=self.out, flush=True)

    def progress(self, stage: Stage) -> ProgressLine:
        """One updating line on a terminal, a line per 10 % in CI (harness/progress.py)."""
        return ProgressLine(self.out)

    def finished(self, run: StageRun) -> None:
        if run.outcome is not None and run.outcome.text:
            print(run.outcome.text, file=self.out)
        if run.ok:
            print(f"    {run.summary} ({run.seconds:.1f}s, log: {run.log})", file=self.out,
                  flush=True)

    def finished_all(self, runs: list[StageRun]) -> None:
        print_timings(runs, self.out)


def print_timings(runs: list[StageRun], out=None) -> None:
    out = out or sys.stdout
    if len(runs) < 2 and all(r.ok for r in runs):
        return
    print("\nstage        result   seconds  summary", file=out)
    for r in runs:
        print(f"{r.name:<12} {'ok' if r.ok else 'FAILED':<8} {r.seconds:8.1f}  {r.summary}",
              file=out)
    print(f"{'total':<12} {'':<8} {sum(r.seconds for r in runs):8.1f}", file=out,
          flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="echo command output while stages run")
    p.add_argument("--baseline", metavar="NAME",
                   help="the baseline profile of harness/baselines.toml to work on "
                        f"(default: ${BASELINE_ENV}, else the file's default)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        # also after the command (`build.py port --baseline 10.0.13`); SUPPRESS
        # keeps the global option's value when it is not repeated here
        sp.add_argument("--baseline", metavar="NAME", default=argparse.SUPPRESS,
                        help="the baseline profile (same as before the command)")
        return sp

    def import_opts(sp):
        sp.add_argument("--source", choices=("debian", "git"), default="debian",
                        help="baseline route: Debian source package (default, offline "
                             "from a Debian mirror) or upstream git tag (needs network)")
        sp.add_argument("--tarball", type=Path,
                        help="use this copy of the pinned orig tarball (sha256-checked)")
        sp.add_argument("--git-url", help="upstream git URL or local clone for --source git")

    def build_opts(sp):
        sp.add_argument("--only", choices=("patched", "stock", "patched-asan"),
                        help="build just this one")
        sp.add_argument("--asan", action="store_true",
                        help="also build the patched tree with AddressSanitizer (build-asan/)")
        sp.add_argument("-j", "--jobs", type=int, help="ninja parallelism")

    sp = add("all", "setup, import, apply, build (patched + stock), images; the default")
    import_opts(sp)
    build_opts(sp)
    add("setup", STAGES["setup"].help)
    import_opts(add("import", STAGES["import"].help))
    sp = add("apply", STAGES["apply"].help)
    sp.add_argument("--reset", action="store_true",
                    help="set aside a diverged series branch (kept as a backup branch)")
    build_opts(add("build", STAGES["build"].help))
    add("images", STAGES["images"].help)
    sp = add("export", STAGES["export"].help)
    sp.add_argument("--force", action="store_true",
                    help="export even with HEAD off branch `series`, uncommitted changes, "
                         "commits in no series, or patches that would be dropped")
    add("status", STAGES["status"].help)
    sp = add("clean", STAGES["clean"].help)
    sp.add_argument("--trees", action="store_true",
                    help="remove qemu/, qemu-stock/ and the port trees (out/port) too")
    sp.add_argument("--force", action="store_true", help="even with unexported work")
    add("checkpatch", STAGES["checkpatch"].help)
    sp = add("bisect", STAGES["bisect"].help)
    sp.add_argument("--full", action="store_true",
                    help="build ninja's default target (everything, qtests included) "
                         "instead of the five binaries")
    sp.add_argument("--test", nargs=argparse.REMAINDER,
                    help="after each build run pytest (default: the QEMU tests) against "
                         "that build; the rest of the line goes to pytest")
    sp = add("port", STAGES["port"].help)
    import_opts(sp)
    sp.add_argument("--no-build", action="store_true",
                    help="only apply the patches (no build after each)")
    sp.add_argument("-j", "--jobs", type=int, help="ninja parallelism")
    add("report", STAGES["report"].help)
    sp = add("peers", STAGES["peers"].help)
    sp.add_argument("--only", dest="only_peer", action="append", choices=sorted(PEERS),
                    help="just this peer (repeatable); default: all")
    sp.add_argument("--rebuild", action="store_true",
                    help="build again even when the cached chroot's inputs are unchanged")
    sp = add("libvirt", STAGES["libvirt"].help)
    sp.add_argument("--rebuild", action="store_true",
                    help="build the chroot again even when its inputs are unchanged")
    sp = add("tree", "print the VM snapshot tree of an image or a running VM (current: *)")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="a qcow2 image")
    src.add_argument("--qmp", help="the QMP unix socket of a running VM")
    sp.add_argument("--qemu-img", help="qemu-img for --image (default: the patched build's)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the query-vm-snapshots data instead")
    fmt.add_argument("--svg", action="store_true", help="the tree as an SVG picture instead")
    sp = add("paths", "print where the built binaries are")
    sp.add_argument("--json", action="store_true", help="JSON (the stable interface)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--stock", action="store_true", help="the unpatched build")
    g.add_argument("--asan", action="store_true", help="the patched ASan build")
    sp = add("test", "run the tests: harness unit tests, then QEMU tests on real guests")
    sp.add_argument("--suite", action="append", choices=sorted(testrun.SUITES),
                    help="run only this suite (repeatable); default: unit and qemu")
    sp.add_argument("--iotests", action="store_true", help="also run the upstream iotests")
    sp.add_argument("--require-all", action="store_true",
                    help="a missing build, tool, firmware or device fails a QEMU test instead "
                         "of skipping it (CI=true does the same)")
    sp.add_argument("--full", action="store_true",
                    help="the reliability suite's full run (both builds, ENOSPC and qcow2 "
                         "events, >= 100 kill runs, the fuzzer for 15 minutes) instead of "
                         "its smoke")
    sp.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    return p


def _tree(ctx: Context, args) -> int:
    import snaptree
    qemu_img = args.qemu_img
    if args.image and not qemu_img:
        qemu_img = json.loads(paths_json(ctx, "patched"))["qemu-img"]
    data = snaptree.load(args.image, args.qmp, qemu_img)
    print(json.dumps(data, indent=2) + "\n" if args.json else
          snaptree.render_svg(data) if args.svg else snaptree.render(data), end="")
    return 0


def _paths(ctx: Context, args) -> int:
    profile = "stock" if args.stock else "patched-asan" if args.asan else "patched"
    text = paths_json(ctx, profile)
    if args.json:
        print(text)
    else:
        for k, v in json.loads(text).items():
            print(f"{k:<20} {v}")
    return 0


def _test(ctx: Context, args, printer: Printer) -> int:
    suites = args.suite or ["unit", "qemu"] + (["iotests"] if args.iotests else [])
    for name in suites:  # no stale results from an earlier run in the totals
        (ctx.layout.results / f"junit-{name}.xml").unlink(missing_ok=True)
    # the peer and libvirt chroots come from the cache once built (seconds)
    before = [STAGES[s] for s in ("peers", "libvirt") if s in suites]
    tests = testrun.stages_for(suites)
    requests = {s.name: s.make_request(args) for s in before}
    requests.update({stage.name: testrun.SuiteRequest(
        suite=name, pytest_args=tuple(args.pytest_args), require_all=args.require_all,
        full=args.full) for stage, name in zip(tests, suites, strict=True)})
    try:  # every suite runs; the first failure's exit code is the result
        run_stages(before + tests, ctx, requests, printer, keep_going=True)
    finally:
        print(testrun.closing_line(ctx.layout, suites), file=printer.out)
    return 0


def main(argv: list[str] | None = None, layout: Layout | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "all"
    printer = Printer()
    try:
        origin = "--baseline" if args.baseline else \
            f"${BASELINE_ENV}" if os.environ.get(BASELINE_ENV) else ""
        ctx = Context(layout=layout or Layout(), verbose=args.verbose,
                      baseline=select_baseline(args.baseline), baseline_origin=origin)
        if command == "paths":
            return _paths(ctx, args)
        if command == "tree":
            return _tree(ctx, args)
        if command == "test":
            return _test(ctx, args, printer)
        if command == "all":
            stages = [STAGES[s] for s in ALL]
            run_stages(stages, ctx, {s.name: s.make_request(args) for s in stages}, printer)
            print()
            print(paths_json(ctx, "patched"))
            return 0
        if command not in STAGES:
            raise UsageError(f"unknown command {command}")
        stage = STAGES[command]
        run_stages([stage], ctx, {command: stage.make_request(args)}, printer)
        return 0
    except HarnessError as exc:
        return fail(exc)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return exit_code(exc)

#!/usr/bin/env python3
"""Build and test the QEMU snapshot-identity series.

Runs on the system python3 (standard library only): `setup` creates the
project venv that everything else uses. See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import stages, testrun  # noqa: E402
from harness.config import BASELINE_ENV, Layout, select_baseline  # noqa: E402
from harness.errors import HarnessError, UsageError, exit_code, fail  # noqa: E402
from harness.peers import PEERS  # noqa: E402
from harness.pipeline import Context, Stage, run_stages  # noqa: E402


def _test_stage(suites: list[str], extra: tuple[str, ...], require_all: bool,
                full: bool = False) -> list[Stage]:
    env = {testrun.RELIABILITY_ENV: "full"} if full else {}

    def make(name):
        return Stage(f"test-{name}",
                     lambda ctx, log: testrun.run_suite(
                         ctx.layout, testrun.SUITES[name], log, extra,
                         env={BASELINE_ENV: ctx.baseline.name, **env},
                         require_all=require_all))
    return [make(s) for s in suites]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build.py", description=__doc__,
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
    add("setup", stages.STAGES["setup"].help)
    import_opts(add("import", stages.STAGES["import"].help))
    sp = add("apply", stages.STAGES["apply"].help)
    sp.add_argument("--reset", action="store_true",
                    help="set aside a diverged series branch (kept as a backup branch)")
    build_opts(add("build", stages.STAGES["build"].help))
    add("images", stages.STAGES["images"].help)
    sp = add("export", stages.STAGES["export"].help)
    sp.add_argument("--force", action="store_true",
                    help="export even with HEAD off branch `series`, uncommitted changes, "
                         "commits in no series, or patches that would be dropped")
    add("status", stages.STAGES["status"].help)
    sp = add("clean", stages.STAGES["clean"].help)
    sp.add_argument("--trees", action="store_true",
                    help="remove qemu/, qemu-stock/ and the port trees (out/port) too")
    sp.add_argument("--force", action="store_true", help="even with unexported work")
    add("checkpatch", stages.STAGES["checkpatch"].help)
    sp = add("bisect", stages.STAGES["bisect"].help)
    sp.add_argument("--full", action="store_true",
                    help="build ninja's default target (everything, qtests included) "
                         "instead of the five binaries")
    sp.add_argument("--test", nargs=argparse.REMAINDER,
                    help="after each build run pytest (default: the QEMU tests) against "
                         "that build; the rest of the line goes to pytest")
    sp = add("port", stages.STAGES["port"].help)
    import_opts(sp)
    sp.add_argument("--no-build", action="store_true",
                    help="only apply the patches (no build after each)")
    sp.add_argument("-j", "--jobs", type=int, help="ninja parallelism")
    add("report", stages.STAGES["report"].help)
    sp = add("peers", stages.STAGES["peers"].help)
    sp.add_argument("--only", dest="only_peer", action="append", choices=sorted(PEERS),
                    help="just this peer (repeatable); default: all")
    sp.add_argument("--rebuild", action="store_true",
                    help="build again even when the cached chroot's inputs are unchanged")
    sp = add("libvirt", stages.STAGES["libvirt"].help)
    sp.add_argument("--rebuild", action="store_true",
                    help="build the chroot again even when its inputs are unchanged")
    sp = add("tree", "print the VM snapshot tree of an image or a running VM (current: *)")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="a qcow2 image")
    src.add_argument("--qmp", help="the QMP unix socket of a running VM")
    sp.add_argument("--qemu-img", help="qemu-img for --image (default: the patched build's)")
    sp.add_argument("--json", action="store_true", help="the query-vm-snapshots data instead")
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
    import json

    from harness import snaptree
    qemu_img = args.qemu_img
    if args.image and not qemu_img:
        qemu_img = json.loads(stages.paths_json(ctx, "patched"))["qemu-img"]
    data = snaptree.load(args.image, args.qmp, qemu_img)
    print(json.dumps(data, indent=2) if args.json else snaptree.render(data), end="")
    return 0


def main(argv: list[str] | None = None, layout: Layout | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "all"
    try:
        origin = "--baseline" if args.baseline else \
            f"${BASELINE_ENV}" if os.environ.get(BASELINE_ENV) else ""
        ctx = Context(layout=layout or Layout(), verbose=args.verbose,
                      baseline=select_baseline(args.baseline), baseline_origin=origin)
        ctx.options = {k: v for k, v in vars(args).items()
                       if k not in ("command", "verbose", "baseline")}
        if command == "paths":
            profile = "stock" if args.stock else "patched-asan" if args.asan else "patched"
            text = stages.paths_json(ctx, profile)
            if args.json:
                print(text)
            else:
                import json
                for k, v in json.loads(text).items():
                    print(f"{k:<20} {v}")
            return 0
        if command == "tree":
            return _tree(ctx, args)
        if command == "all":
            run_stages([stages.STAGES[s] for s in stages.ALL], ctx)
            print()
            print(stages.paths_json(ctx, "patched"))
            return 0
        if command == "test":
            suites = args.suite or ["unit", "qemu"] + (["iotests"] if args.iotests else [])
            for name in suites:  # no stale results from an earlier run in the totals
                (ctx.layout.results / f"junit-{name}.xml").unlink(missing_ok=True)
            # the peer and libvirt chroots come from the cache once built (seconds)
            before = [stages.STAGES[s] for s in ("peers", "libvirt") if s in suites]
            try:  # every suite runs; the first failure's exit code is the result
                run_stages(before + _test_stage(suites, tuple(args.pytest_args),
                                                args.require_all, args.full),
                           ctx, keep_going=True)
            finally:
                print(testrun.closing_line(ctx.layout, suites))
            return 0
        if command not in stages.STAGES:
            raise UsageError(f"unknown command {command}")
        run_stages([stages.STAGES[command]], ctx)
        return 0
    except HarnessError as exc:
        return fail(exc)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())

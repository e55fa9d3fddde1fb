#!/usr/bin/env python3
"""Benchmarks: tables printed and saved to out/results/bench.json, never pass/fail.

    python3 bench/run.py build          configure, clean build, no-op, touch rebuild
    python3 bench/run.py build --fresh-clone   + fresh clone to both builds ready
    python3 bench/run.py qemu-img       snapshot -c x N, then -l and info: patched vs stock
    python3 bench/run.py vm             savevm/loadvm patched vs stock; query-vm-snapshots
    python3 bench/run.py start          a VM usable after start (fast start), patched vs stock
    python3 bench/run.py                all of the above but --fresh-clone

Build numbers use a separate build dir (qemu/build-bench) so the real builds
are untouched; ccache is whatever state the machine is in (said in the table).
A benchmark that cannot run (no build, a failed build or fresh clone) ends with
harness/core/errors.py's exit code and a next step, after the table of what did run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core.config import PROFILES, BuildProfile, Layout, select_baseline  # noqa: E402
from harness.core.errors import BuildFailed, CommandFailed, HarnessError, TestsFailed, fail  # noqa: E402
from harness.core.runner import StageLog  # noqa: E402
from harness.stages import build as qbuild  # noqa: E402
from harness.stages.paths import build_paths  # noqa: E402
from rig import qcow2  # noqa: E402


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def bench_build(layout: Layout, log: StageLog, fresh_clone: bool) -> list[dict]:
    prof = BuildProfile("bench", "qemu", build_subdir="build-bench")
    bdir = prof.build_dir(layout)
    shutil.rmtree(bdir, ignore_errors=True)
    args = qbuild.configure_args(prof, layout)
    rows = []
    t = timed(lambda: qbuild._configure(prof, layout, log, args))
    rows.append({"name": "configure", "patched": f"{t:.1f} s", "target": ""})
    t = timed(lambda: qbuild.build(prof, layout, log, select_baseline()))
    rows.append({"name": "build after configure (ccache as found)", "patched": f"{t:.1f} s",
                 "target": ""})
    t = timed(lambda: qbuild.build(prof, layout, log, select_baseline()))
    rows.append({"name": "no-op build (ninja + metadata)", "patched": f"{t:.2f} s",
                 "target": "< 5 s"})
    start = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "build.py"), "build"],
                         capture_output=True, text=True, check=False)
    cli = time.monotonic() - start
    if res.returncode != 0:
        raise BuildFailed(f"`build.py build` exited {res.returncode} during the bench",
                          hint="run `python3 build.py build` and fix what it reports")
    rows.append({"name": "no-op `build.py build` (patched + stock)", "patched": f"{cli:.2f} s",
                 "target": "< 5 s"})
    src = layout.qemu / "block" / "qcow2-snapshot.c"
    os.utime(src)
    t = timed(lambda: qbuild.build(prof, layout, log, select_baseline()))
    rows.append({"name": "rebuild after touching block/qcow2-snapshot.c",
                 "patched": f"{t:.1f} s", "target": "< 30 s"})
    with open(src, "a") as fh:
        fh.write("/* bench */\n")
    try:
        t = timed(lambda: qbuild.build(prof, layout, log, select_baseline()))
    finally:
        text = src.read_text()
        src.write_text(text[: -len("/* bench */\n")])
    rows.append({"name": "rebuild after editing block/qcow2-snapshot.c (ccache miss)",
                 "patched": f"{t:.1f} s", "target": "< 30 s"})
    qbuild.build(prof, layout, log, select_baseline())
    shutil.rmtree(bdir, ignore_errors=True)
    if fresh_clone:
        with tempfile.TemporaryDirectory(prefix="bench-clone-") as tmp:
            clone = Path(tmp) / "clone"
            start = time.monotonic()
            _run(["git", "clone", "-q", str(ROOT), str(clone)])
            res = subprocess.run([sys.executable, str(clone / "build.py")],
                                 capture_output=True, text=True)
            t = time.monotonic() - start
            ok = res.returncode == 0
            rows.append({"name": "fresh clone to both builds ready (tarball cached, "
                                 "ccache as found)",
                         "patched": f"{t:.0f} s" + ("" if ok else " (FAILED)"),
                         "target": "< 15 min"})
            if not ok:
                rows[-1]["failed"] = (f"`build.py` in a fresh clone exited {res.returncode}: "
                                      f"{(res.stderr or res.stdout).strip()[-300:]}")
    return rows


def _run(argv) -> float:
    start = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CommandFailed(argv, res.returncode, res.stdout + res.stderr)
    return time.monotonic() - start


def bench_qemu_img(layout: Layout, n: int, reps: int = 30) -> list[dict]:
    """Both builds side by side, interleaved (patched, stock, patched, ...) so
    that drift in the machine's load hits both alike; medians per operation."""
    builds = {name: build_paths(PROFILES[name], layout)["qemu-img"]
              for name in ("patched", "stock")}
    times: dict[str, dict[str, list[float]]] = {b: {} for b in builds}
    with tempfile.TemporaryDirectory(prefix="bench-qemu-img-") as tmp:
        imgs = {b: Path(tmp) / f"{b}.qcow2" for b in builds}
        for b, qemu_img in builds.items():
            _run([qemu_img, "create", "-q", "-f", "qcow2", str(imgs[b]), "64M"])
        for i in range(n):
            for b, qemu_img in builds.items():
                times[b].setdefault("snapshot -c", []).append(
                    _run([qemu_img, "snapshot", "-c", f"s{i}", str(imgs[b])]))
        for _ in range(reps):
            for b, qemu_img in builds.items():
                times[b].setdefault("snapshot -l", []).append(
                    _run([qemu_img, "snapshot", "-l", str(imgs[b])]))
                times[b].setdefault("info --output=json", []).append(
                    _run([qemu_img, "info", "--output=json", str(imgs[b])]))
        # delete with reparenting: the first snapshot made the parent of all others (its
        # table rewritten in place, the current record stays valid); stock deletes the same
        # image without reparenting, the baseline
        tree = Path(tmp) / "tree.qcow2"
        _run(["cp", "--sparse=always", str(imgs["patched"]), str(tree)])
        img = qcow2.read(tree)
        root = img.snapshots[0]
        qcow2.write_snapshot_table(
            tree, [root] + [qcow2.with_identity(s, s.uuid, root.uuid) for s in img.snapshots[1:]])
        op = f"snapshot -d of the parent of {n - 1} snapshots"
        for _ in range(max(3, reps // 3)):
            for b, qemu_img in builds.items():
                work = Path(tmp) / f"{b}-delete.qcow2"
                _run(["cp", "--sparse=always", str(tree), str(work)])
                times[b].setdefault(op, []).append(
                    _run([qemu_img, "snapshot", "-d", root.name, str(work)]))
        orphans = [s.name for s in qcow2.read(Path(tmp) / "patched-delete.qcow2").snapshots
                   if s.parent is not None]
        if orphans:
            raise TestsFailed(f"the patched delete left {len(orphans)} children with a "
                              f"parent (e.g. {orphans[0]}): not reparented",
                              hint="run `python3 build.py test --suite qemu -- -k lineage`")
    rows = []
    for op in times["patched"]:
        p, s = (statistics.median(times[b][op]) for b in ("patched", "stock"))
        what = (f"{n} creates" if op == "snapshot -c" else
                f"{len(times['patched'][op])} runs" if op.startswith("snapshot -d") else
                f"{reps} runs on {n} snapshots")
        rows.append({"name": f"qemu-img {op} (median of {what})",
                     "patched": f"{p * 1000:.2f} ms", "stock": f"{s * 1000:.2f} ms",
                     "ratio": f"{p / s:.3f}",
                     "target": "< 1 s" if op.startswith("snapshot -d") else "<= 1.05"})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'benchmark':<66} {'patched':>12} {'stock':>12} {'ratio':>7}  target")
    for r in rows:
        print(f"{r['name']:<66} {r.get('patched', '-'):>12} {r.get('stock', '-'):>12} "
              f"{r.get('ratio', '-'):>7}  {r.get('target', '')}")


GROUPS = ("build", "qemu-img", "vm", "start")  # in the order of the table


def main(argv=None, layout: Layout | None = None) -> int:
    try:
        return _main(argv, layout or Layout())
    except HarnessError as exc:
        return fail(exc)


def _main(argv, layout: Layout) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", metavar="build|qemu-img|vm|start")
    p.add_argument("--fresh-clone", action="store_true")
    p.add_argument("-n", type=int, default=1000,
                   help="snapshots for the qemu-img and query-vm-snapshots benches")
    p.add_argument("--reps", type=int, default=15, help="rounds of savevm/loadvm")
    p.add_argument("--starts", type=int, default=50, help="fast starts per build")
    args = p.parse_args(argv)
    which = args.which or ["build", "qemu-img", "vm", "start"]
    unknown = set(which) - set(GROUPS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    groups: dict[str, list[dict]] = {}
    with StageLog(layout.logs / "bench.log") as log:
        if "build" in which:
            groups["build"] = bench_build(layout, log, args.fresh_clone)
        if "qemu-img" in which:
            groups["qemu-img"] = bench_qemu_img(layout, args.n)
        if "vm" in which:
            from bench import vm
            groups["vm"] = vm.run(args.n, args.reps)
        if "start" in which:
            from bench import vm
            groups["start"] = vm.run_start(args.starts)
    rows = [r for g in groups.values() for r in g]
    out = layout.results / "bench.json"
    try:
        saved = json.loads(out.read_text()).get("groups", {})
    except (OSError, ValueError):
        saved = {}
    saved.update(groups)  # a group run now replaces its old rows; others are kept
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "groups": saved,
        "rows": [r for name in GROUPS for r in saved.get(name, [])],
        "machine": os.uname().nodename, "cpus": os.cpu_count()}, indent=2) + "\n")
    print_table(rows)
    print(f"\nsaved to {out}")
    failed = [r["failed"] for r in rows if r.get("failed")]
    if failed:
        raise BuildFailed("; ".join(failed), hint="read the fresh clone's output above, fix "
                          "it, then run the bench again")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pipeline stages: thin functions from a Context to the modules."""

from __future__ import annotations

import json
import shutil

from . import (
    baseline,
    bisect,
    bootstrap,
    export,
    libvirt,
    peers,
    port,
    qbuild,
    report,
    review,
    series,
)
from .config import BASELINE_ENV, PROFILES
from .errors import (
    BuildFailed,
    BuildMissing,
    EnvironmentProblem,
    HarnessError,
    NotReady,
    PatchConflict,
    TestsFailed,
    UsageError,
)
from .git import Git
from .paths import build_paths
from .pipeline import Context, Stage
from .runner import StageLog


def setup(ctx: Context, log: StageLog) -> str:
    installed = bootstrap.ensure_debs(log)
    made = bootstrap.ensure_venv(ctx.layout, log)
    return (f"installed {' '.join(installed)}; " if installed else "Debian packages ok; ") + \
        ("venv set up" if made else "venv up to date")


def import_(ctx: Context, log: StageLog) -> str:
    res = baseline.import_baseline(
        ctx.layout, ctx.baseline, log,
        source=ctx.options.get("source", "debian"),
        tarball=ctx.options.get("tarball"),
        git_url=ctx.options.get("git_url"))
    what = "already imported" if res.already else "imported"
    return (f"{what} baseline {ctx.baseline.name} ({ctx.baseline.ident}) at {res.tree} "
            f"(series-base {res.base_commit[:12]})")


def require_tree(ctx: Context, command: str) -> dict:
    """qemu/ must hold the selected baseline (its import record is returned)."""
    origin = f"selected with {ctx.baseline_origin}" if ctx.baseline_origin else \
        "the default of harness/baselines.toml; --baseline NAME selects another"
    return baseline.require_tree(ctx.layout, ctx.baseline, command, origin)


def apply(ctx: Context, log: StageLog) -> str:
    require_tree(ctx, "apply")
    res = series.apply_series(ctx.layout, ctx.baseline, log,
                              reset=ctx.options.get("reset", False))
    return (f"applied {len(res.applied)} patch(es), {res.already} already applied, "
            f"{len(res.branches)} series; HEAD {res.head[:12]}")


def _profiles(ctx: Context) -> list[str]:
    only = ctx.options.get("only")
    names = [only] if only else ["patched", "stock"]
    if ctx.options.get("asan") and "patched-asan" not in names:
        names.append("patched-asan")
    return names


def build(ctx: Context, log: StageLog) -> str:
    require_tree(ctx, "build")
    done = []
    for name in _profiles(ctx):
        if name == "stock":
            if not (ctx.layout.stock / "configure").exists():
                raise NotReady("no stock tree (qemu-stock/)",
                               hint="run `python3 build.py import`")
        res = qbuild.build(PROFILES[name], ctx.layout, log, ctx.baseline,
                           jobs=ctx.options.get("jobs"))
        done.append(f"{name} {res.seconds:.1f}s" + (" (configured)" if res.configured else ""))
    return "built " + ", ".join(done)


def images(ctx: Context, log: StageLog) -> str:
    import sys
    sys.path.insert(0, str(ctx.layout.root))
    try:
        import images as guest_images
    except ImportError as exc:
        raise EnvironmentProblem(f"the guest image builder cannot be loaded: {exc}") from exc
    try:
        guest = guest_images.ensure_guest(log=log.note)
    except guest_images.ImageError as exc:
        raise EnvironmentProblem(f"cannot build the test guest: {exc}",
                                 hint="read the images log; `python3 build.py setup` "
                                      "installs what the builder needs") from exc
    return f"guest kernel {guest.kernel.name}, initrd {guest.initrd}"


def export_(ctx: Context, log: StageLog) -> str:
    # Saving work is never refused: export is the first step of moving qemu/
    # to another baseline, so it works whatever profile the tree came from.
    marker = baseline.read_marker(ctx.layout.qemu)
    if marker and not baseline.marker_matches(marker, ctx.baseline):
        log.note(f"qemu/ holds {marker.get('ident')}, not the selected "
                 f"{ctx.baseline.ident}; exporting its series all the same")
    written = export.export_series(ctx.layout, ctx.baseline, log,
                                   force=ctx.options.get("force", False))
    count = sum(len(names) for names in written.values())
    return f"exported {count} patch(es) in {len(written)} series to {ctx.layout.patches}"


def status(ctx: Context, log: StageLog) -> str:
    lay = ctx.layout
    lines = []
    marker = baseline.read_marker(lay.qemu)
    lines.append(f"selected baseline: {ctx.baseline.name} (QEMU "
                 f"{ctx.baseline.upstream_version}, {ctx.baseline.ident})")
    if marker:
        have = baseline.marker_profile(marker) or "unknown profile"
        lines.append(f"qemu/: {have} ({marker['ident']}, {marker['source']})"
                     + ("" if baseline.marker_matches(marker, ctx.baseline) else
                        f" -- not the selected baseline: `python3 build.py --baseline "
                        f"{have} COMMAND` works on it"))
    else:
        lines.append("qemu/: not imported")
    git = Git(lay.qemu, log) if marker else None
    top, below = ctx.baseline.patched_branch, ctx.baseline.base_tag
    if git:
        ahead = len(git.revs(below, top)) if git.rev(top) else 0
        lines.append(f"qemu/: HEAD on {git.current_branch() or 'no branch (detached)'}; "
                     f"`{top}` has {ahead} commit(s) on {below}")
    try:
        stack = series.read_stack(lay.patches, new_ok=True)
    except HarnessError as exc:
        lines.append(f"patches/: {exc.message}")
        stack = []
    for s in stack:
        needs = f" (needs {', '.join(s.needs)})" if s.needs else ""
        where = ""
        if git and git.rev(f"refs/heads/{s.branch}"):
            where = f", {len(git.revs(below, s.branch))} commit(s) on {s.branch}"
            below = s.branch
        elif git:
            where = f", no branch {s.branch}"
        lines.append(f"series {s.name}{needs}: {len(s.patches)} patch(es) in "
                     f"patches/{s.name}/{where}")
    if git and stack and git.rev(top) and git.is_ancestor(below, top):
        extra = len(git.revs(below, top))
        if extra:
            lines.append(f"qemu/: {extra} commit(s) on `{top}` after {below} are in no series")
    if git:
        dirty = git.dirty_files()
        if dirty:
            lines.append(f"qemu/: uncommitted changes in {len(dirty)} file(s)")
    for name, prof in PROFILES.items():
        try:
            build_paths(prof, lay)
            lines.append(f"{name} build: ready in {prof.build_dir(lay)}")
        except BuildMissing:
            lines.append(f"{name} build: missing")
    for line in lines:
        print("    " + line)
    return "status shown"


def clean(ctx: Context, log: StageLog) -> str:
    lay = ctx.layout
    trees = ctx.options.get("trees")
    if trees and (lay.qemu / ".git").exists() and not ctx.options.get("force"):
        work = series.unexported_work(Git(lay.qemu, log), lay.patches, ctx.baseline)
        if work:
            raise PatchConflict(
                "qemu/ holds work that is not in patches/: " + "; ".join(work),
                hint="`python3 build.py export` first, or `clean --trees --force`; "
                     "nothing was removed")
    removed = []
    port_builds = sorted(lay.port_dir.glob("*/qemu/build")) if lay.port_dir.is_dir() else []
    for bdir in [prof.build_dir(lay) for prof in PROFILES.values()] + port_builds:
        if bdir.exists():
            shutil.rmtree(bdir)
            removed.append(str(bdir))
    if trees:
        for tree in (lay.stock, lay.qemu, lay.port_dir):
            if tree.exists():
                shutil.rmtree(tree)
                removed.append(str(tree))
    return "removed " + (", ".join(removed) if removed else "nothing")


def paths_json(ctx: Context, profile: str) -> str:
    if (ctx.layout.qemu / ".git").exists():  # without a tree: "build missing" below
        require_tree(ctx, "paths")
    return json.dumps(build_paths(PROFILES[profile], ctx.layout), indent=2)


def checkpatch(ctx: Context, log: StageLog) -> str:
    require_tree(ctx, "checkpatch")
    stack = series.read_stack(ctx.layout.patches)
    reviews = review.review_stack(ctx.layout.qemu, stack, log)
    review.save(reviews, ctx.layout.results / "checkpatch.json")
    print(review.table(reviews))
    if text := review.details(reviews):
        print(text)
    errors = sum(len(r.errors) for r in reviews)
    warnings = sum(len(r.warnings) for r in reviews)
    hygiene = sum(len(r.hygiene) for r in reviews)
    summary = (f"{len(reviews)} patch(es) in {len(stack)} series: {errors} error(s), "
               f"{warnings} warning(s), {hygiene} hygiene problem(s)")
    if errors or hygiene:
        raise TestsFailed(summary, hint="fix the patches in qemu/, `build.py export`, "
                                        "then `build.py checkpatch` again")
    return summary


def bisect_(ctx: Context, log: StageLog) -> str:
    require_tree(ctx, "bisect")
    stack = series.read_stack(ctx.layout.patches)
    test = ctx.options.get("test")
    test_argv = None
    if test is not None:
        test_argv = [str(bootstrap.venv_python(ctx.layout)), "-m", "pytest", "-q", "-x",
                     *(test or ["tests/qemu", "-m", "not iotests"])]
    targets = () if ctx.options.get("full") else qbuild.BUILD_TARGETS
    result = bisect.bisect(ctx.layout, ctx.baseline, stack, log, targets=targets,
                           test_argv=test_argv, test_env={BASELINE_ENV: ctx.baseline.name})
    bisect.save(result, ctx.layout.results / "bisect.json")
    print(bisect.table(result))
    bad = result.failures()
    summary = (f"{len(result.steps) - 1} patch(es) of {len(stack)} series built one by one, "
               f"{len(result.alone)} series alone on what it needs; {len(bad)} failed")
    if bad:
        raise BuildFailed(f"{summary}: {', '.join(bad)}",
                          hint="make each failing patch build on its own, and each series "
                               "apply on what it needs (git rebase -i in qemu/), "
                               "`build.py export`, then bisect again")
    return summary


def port_(ctx: Context, log: StageLog) -> str:
    """Not gating: patches that do not apply or build are the table's news."""
    stack = series.read_stack(ctx.layout.patches)
    patches = [p for s in stack for p in s.patches]
    if not patches:
        raise UsageError(f"{ctx.layout.patches} has no patches to port",
                         hint="`python3 build.py export` writes the series there")
    res = port.port(ctx.layout, ctx.baseline, patches, log,
                    build=not ctx.options.get("no_build"), jobs=ctx.options.get("jobs"),
                    source=ctx.options.get("source") or "debian",
                    tarball=ctx.options.get("tarball"), git_url=ctx.options.get("git_url"),
                    alone=[list(s.patches) for s in stack[1:] if not s.needs])
    bisect.name_series(res.steps, stack)
    path = port.results_path(ctx.layout, ctx.baseline.name)
    port.save(res, path)
    print(port.table(res))
    if res.build and res.base.built is False:
        raise BuildFailed(
            f"baseline {ctx.baseline.name} itself does not build in {res.tree}: "
            f"{res.base.error}",
            hint=f"read the log; check the fix-ups in harness/fixups/{ctx.baseline.name}/ "
                 "and the build dependencies (`python3 build.py setup`); `port --no-build` "
                 "still shows which patches apply")
    return f"{res.summary()}; table in {path}"


def peers_(ctx: Context, log: StageLog) -> str:
    prepared = peers.ensure_all(ctx.options.get("only_peer"), ctx.layout, log,
                                rebuild=ctx.options.get("rebuild", False))
    print(peers.table(prepared))
    return f"{len(prepared)} peer(s): " + ", ".join(
        f"{p.root.name} {p.root.qemu_version} ({'built' if p.built else 'cached'} "
        f"{p.seconds:.1f}s)" for p in prepared)


def libvirt_(ctx: Context, log: StageLog) -> str:
    prepared = libvirt.ensure_all(ctx.layout, log, rebuild=ctx.options.get("rebuild", False))
    print(libvirt.table(prepared))
    return f"{len(prepared)} libvirt(s): " + ", ".join(
        f"{p.name} {p.version} ({p.how} {p.seconds:.1f}s)" for p in prepared)


def report_(ctx: Context, log: StageLog) -> str:
    path = report.write(ctx.layout, ctx.baseline)
    return f"wrote {path} and {path.with_suffix('.html').name}"


STAGES = {
    "setup": Stage("setup", setup, "install Debian build deps (as root) and the venv"),
    "import": Stage("import", import_, "import the pinned baseline into qemu/"),
    "apply": Stage("apply", apply,
                   "apply the series of patches/ in order: branches series-NAME, series"),
    "build": Stage("build", build, "configure + ninja: patched and stock"),
    "images": Stage("images", images, "build the test guest (kernel + initramfs)"),
    "export": Stage("export", export_,
                    "format-patch each series-NAME branch of qemu/ back into patches/NAME/"),
    "status": Stage("status", status, "show baseline, series and builds"),
    "clean": Stage("clean", clean, "remove builds (--trees: the QEMU trees too)"),
    "checkpatch": Stage("checkpatch", checkpatch,
                        "scripts/checkpatch.pl and hygiene checks, once per patch"),
    "bisect": Stage("bisect", bisect_, "apply and build the series one patch at a time"),
    "port": Stage("port", port_, "apply and build the series one patch at a time on the "
                  "--baseline profile, in out/port/NAME/qemu (qemu/ untouched)"),
    "report": Stage("report", report_, "write out/results/report.md and .html"),
    "peers": Stage("peers", peers_, "older QEMU releases (Debian chroots) for the peer "
                                    "matrix, cached by their inputs"),
    "libvirt": Stage("libvirt", libvirt_, "the libvirts that drive the patched QEMU: the "
                                          "machine's, and trixie's in a chroot (cached)"),
}

ALL = ("setup", "import", "apply", "build", "images")

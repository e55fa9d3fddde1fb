"""The pipeline stages: thin functions from a Context to the modules."""

from __future__ import annotations

import json
import shutil

from . import baseline, bootstrap, qbuild, series
from .config import PROFILES
from .errors import BuildFailed, EnvironmentProblem, PatchConflict, UsageError
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
    return f"{what} {ctx.baseline.ident} at {res.tree} (series-base {res.base_commit[:12]})"


def apply(ctx: Context, log: StageLog) -> str:
    res = series.apply_series(ctx.layout, ctx.baseline, log,
                              reset=ctx.options.get("reset", False))
    return (f"applied {len(res.applied)} patch(es), {res.already} already applied; "
            f"HEAD {res.head[:12]}")


def _profiles(ctx: Context) -> list[str]:
    only = ctx.options.get("only")
    names = [only] if only else ["patched", "stock"]
    if ctx.options.get("asan") and "patched-asan" not in names:
        names.append("patched-asan")
    return names


def build(ctx: Context, log: StageLog) -> str:
    done = []
    for name in _profiles(ctx):
        if name == "stock":
            if not (ctx.layout.stock / "configure").exists():
                raise UsageError("no stock tree (qemu-stock/)",
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
    guest = guest_images.ensure_guest(log=log.note)
    return f"guest kernel {guest.kernel.name}, initrd {guest.initrd}"


def export(ctx: Context, log: StageLog) -> str:
    names = series.export_series(ctx.layout, ctx.baseline, log)
    return f"exported {len(names)} patch(es) to {ctx.layout.patches}"


def status(ctx: Context, log: StageLog) -> str:
    lay = ctx.layout
    lines = []
    marker = baseline.read_marker(lay.qemu)
    where = f"{marker['ident']} ({marker['source']})" if marker else "not imported"
    lines.append(f"baseline: {where}")
    if marker:
        git = Git(lay.qemu, log)
        ahead = git.out("rev-list", "--count", f"{ctx.baseline.base_tag}..HEAD")
        npatch = len(series.read_series(lay.patches))
        lines.append(f"qemu/: branch {git.current_branch()}, {ahead} commit(s) on "
                     f"{ctx.baseline.base_tag}; patches/series has {npatch}")
        dirty = git.dirty_files()
        if dirty:
            lines.append(f"qemu/: uncommitted changes in {len(dirty)} file(s)")
    for name, prof in PROFILES.items():
        try:
            build_paths(prof, lay)
            lines.append(f"{name} build: ready in {prof.build_dir(lay)}")
        except BuildFailed:
            lines.append(f"{name} build: missing")
    for line in lines:
        print("    " + line)
    return "status shown"


def clean(ctx: Context, log: StageLog) -> str:
    lay = ctx.layout
    removed = []
    for prof in PROFILES.values():
        bdir = prof.build_dir(lay)
        if bdir.exists():
            shutil.rmtree(bdir)
            removed.append(str(bdir))
    if ctx.options.get("trees"):
        if (lay.qemu / ".git").exists() and not ctx.options.get("force"):
            git = Git(lay.qemu, log)
            want = [series.patch_id_of_file(git, p) for p in series.read_series(lay.patches)]
            have = series.branch_patch_ids(git, ctx.baseline.base_tag, "HEAD")
            if have != want or git.dirty_files():
                raise PatchConflict(
                    "qemu/ holds work that is not in patches/",
                    hint="`python3 build.py export` first, or `clean --trees --force`")
        for tree in (lay.stock, lay.qemu):
            if tree.exists():
                shutil.rmtree(tree)
                removed.append(str(tree))
    return "removed " + (", ".join(removed) if removed else "nothing")


def paths_json(ctx: Context, profile: str) -> str:
    return json.dumps(build_paths(PROFILES[profile], ctx.layout), indent=2)


STAGES = {
    "setup": Stage("setup", setup, "install Debian build deps (as root) and the venv"),
    "import": Stage("import", import_, "import the pinned baseline into qemu/"),
    "apply": Stage("apply", apply, "apply patches/series on the series branch"),
    "build": Stage("build", build, "configure + ninja: patched and stock"),
    "images": Stage("images", images, "build the test guest (kernel + initramfs)"),
    "export": Stage("export", export, "format-patch qemu/ back into patches/"),
    "status": Stage("status", status, "show baseline, series and builds"),
    "clean": Stage("clean", clean, "remove builds (--trees: the QEMU trees too)"),
}

ALL = ("setup", "import", "apply", "build", "images")

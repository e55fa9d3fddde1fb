"""Configure and build one QEMU tree (patched, stock, ASan) with meson/ninja.

configure runs only when its arguments changed or the build dir is new;
ninja is incremental and ccache is used when installed, so a no-op build
costs about a ninja startup. Firmware missing from the +ds repack is linked
from Debian packages into the build's qemu-bundle, and every build gets a
``metadata.json`` that says how to reproduce it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.config import (
    BUILD_TARGETS,
    FIRMWARE_DIRS,
    PROFILES,
    Baseline,
    BuildProfile,
    Layout,
)
from harness.core.errors import BuildFailed, CommandFailed, HarnessError, NotReady
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog, run
from harness.stages.baseline import read_marker
from harness.stages.series import read_stack, series_of_commits

CCACHE_DIR_WRAPPERS = Path("/usr/lib/ccache")
# ninja's status line: NINJA_STATUS (build_env sets it) followed by the edge's description
NINJA_STATUS = "[%f/%t] "
_NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\] ")
STAMP = "harness-configure.json"

# Where a build-tree QEMU looks for firmware (and the iotests too).
BUNDLE_DATADIR = Path("qemu-bundle/usr/local/share/qemu")
FIRMWARE_SOURCES = tuple(Path(d) for d in FIRMWARE_DIRS)


@dataclass(frozen=True)
class BuildResult:
    profile: str
    build_dir: Path
    configured: bool
    seconds: float


def configure_args(profile: BuildProfile, layout: Layout,
                   ccache: bool | None = None) -> list[str]:
    if ccache is None:
        ccache = (CCACHE_DIR_WRAPPERS / "gcc").exists()
    args = [
        f"--python={layout.venv_bin('python3')}",
        "--target-list=x86_64-softmmu",
        "--enable-tools",
        "--disable-docs",
        "--enable-slirp",
        "--disable-download",
    ]
    if ccache:
        args += [f"--cc={CCACHE_DIR_WRAPPERS / 'gcc'}",
                 f"--cxx={CCACHE_DIR_WRAPPERS / 'g++'}"]
    if profile.werror:
        args.append("--enable-werror")
    if profile.asan:
        # UBSan beside ASan: the reliability fuzzer fails on either report
        args += ["--enable-asan", "--enable-ubsan", "--enable-debug"]
    return args


def build_env(layout: Layout, source: Path) -> dict:
    """PATH with the venv's meson/ninja first; ccache keyed relative to the
    source tree, so patched, stock and any other tree of the same baseline
    share cached objects."""
    return {
        "PATH": f"{layout.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "CCACHE_BASEDIR": str(source),
        "CCACHE_NOHASHDIR": "1",
        # the status prefix the progress reads, whatever the user's NINJA_STATUS says
        "NINJA_STATUS": NINJA_STATUS,
    }


def _configure(profile: BuildProfile, layout: Layout, log: StageLog,
               args: list[str]) -> bool:
    source = profile.source(layout)
    bdir = profile.build_dir(layout)
    stamp = bdir / STAMP
    if (bdir / "build.ninja").exists() and stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("args") == args:
                log.note(f"{bdir} is configured with the same arguments; skipping configure")
                return False
        except ValueError:
            pass
    bdir.mkdir(parents=True, exist_ok=True)
    try:
        run([source / "configure", *args], log, cwd=bdir, env=build_env(layout, source))
    except CommandFailed as exc:
        raise BuildFailed(f"configure of the {profile.name} build failed", log=exc.log,
                          hint="read the end of the log; a missing library is fixed by "
                               "`python3 build.py setup`") from exc
    stamp.write_text(json.dumps({"args": args}, indent=2) + "\n")
    return True


def link_firmware(build_dir: Path, log: StageLog,
                  sources: tuple[Path, ...] = FIRMWARE_SOURCES) -> list[str]:
    """Symlink firmware the tree does not build into the build's qemu-bundle."""
    dest = build_dir / BUNDLE_DATADIR
    dest.mkdir(parents=True, exist_ok=True)
    linked = []
    for src_dir in sources:
        if not src_dir.is_dir():
            continue
        for src in sorted(src_dir.iterdir()):
            if not src.is_file() or src.name.startswith("."):
                continue
            target = dest / src.name
            if target.exists() or target.is_symlink():
                continue
            target.symlink_to(src.resolve())
            linked.append(src.name)
    if linked:
        log.note(f"linked firmware into {dest}: {', '.join(linked)}")
    return linked


def tool_versions(layout: Layout) -> dict:
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    return {
        "gcc": version(["gcc", "--version"]),
        "meson": version([str(layout.venv_bin("meson")), "--version"]),
        "ninja": version([str(layout.venv_bin("ninja")), "--version"]),
        "ccache": version(["ccache", "--version"]),
        "python": platform.python_version(),
    }


def write_metadata(profile: BuildProfile, layout: Layout, args: list[str],
                   baseline: Baseline, log: StageLog,
                   targets: tuple[str, ...] = BUILD_TARGETS) -> dict:
    source = profile.source(layout)
    git = Git(source, log)
    base = git.rev(baseline.base_tag)
    series = git.revs(baseline.base_tag, "HEAD")
    try:
        owner = series_of_commits(git, read_stack(layout.patches, new_ok=True),
                                  baseline.base_tag)
    except HarnessError:
        owner = {}  # patches/ unreadable: the build is still described
    marker = read_marker(source) or {}
    # `all` builds patched and stock; the ASan build is asked for with --asan
    flag = " --asan" if profile.asan else ""
    meta = {
        "profile": profile.name,
        "baseline": {"profile": baseline.name, "ident": baseline.ident,
                     "upstream": baseline.upstream_version,
                     "source": marker.get("source"),
                     "orig_sha256": marker.get("orig_sha256"),
                     "baseline_commit": marker.get("baseline_commit"),
                     "base_commit": base},
        "series": [{"commit": c, "subject": git.out("log", "-1", "--format=%s", c),
                    "series": owner.get(c, "")} for c in series],
        "head": git.rev("HEAD"),
        "source_dir": str(source),
        "build_dir": str(profile.build_dir(layout)),
        "configure": [str(source / "configure"), *args],
        "targets": list(targets) or ["(ninja default: all)"],
        "tools": tool_versions(layout),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reproduce": f"git clone <this repo> && cd <it> && git checkout "
                     f"{_harness_rev(layout)} && python3 build.py --baseline {baseline.name} "
                     f"all{flag}",
        "configure_cmdline": shlex.join([str(source / "configure"), *args]),
    }
    path = profile.build_dir(layout) / "metadata.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _harness_rev(layout: Layout) -> str:
    try:
        out = subprocess.run(["git", "-C", str(layout.root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "HEAD"
    except (OSError, subprocess.SubprocessError):
        return "HEAD"


def ninja_status(line: str) -> tuple[int, int] | None:
    """(finished, total) of a ninja status line, None for any other line."""
    m = _NINJA_RE.match(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


class NinjaProgress:
    """Reads ninja's ``[n/N]`` status lines (runner.run's ``on_line``) and reports them as the
    stage's progress ('build patched: [57/243] 23%')."""

    def __init__(self, log: StageLog, label: str):
        self.log = log
        self.label = label
        self.last: tuple[int, int] | None = None

    def __call__(self, line: str) -> None:
        status = ninja_status(line)
        if status is not None:
            self.show(*status)

    def show(self, done: int, total: int) -> None:
        self.last = (done, total)
        self.log.progress(done, total, f"{self.label}: [{done}/{total}] "
                                       f"{min(done, total) * 100 // total}%")

    def finished(self) -> None:
        """ninja exited 0: every edge is done (its last status line can read one short:
        tests/unit/data/ninja/ has a build that ends at [242/243])."""
        if self.last is not None:
            self.show(self.last[1], self.last[1])


def build(profile: BuildProfile, layout: Layout, log: StageLog,
          baseline: Baseline, jobs: int | None = None,
          targets: tuple[str, ...] = BUILD_TARGETS) -> BuildResult:
    """Configure (when needed) and build; ninja's [n/N] goes to ``log.progress``."""
    source = profile.source(layout)
    if not (source / "configure").exists():
        raise NotReady(f"no QEMU tree at {source}",
                       hint="run `python3 build.py import` (and `apply`) first")
    start = time.monotonic()
    args = configure_args(profile, layout)
    configured = _configure(profile, layout, log, args)
    bdir = profile.build_dir(layout)
    argv = [layout.tool("ninja"), "-C", bdir]
    if jobs:
        argv += ["-j", str(jobs)]
    watch = NinjaProgress(log, f"build {profile.name}")
    try:
        run([*argv, *targets], log, env=build_env(layout, source), on_line=watch)
        watch.finished()
    except CommandFailed as exc:
        errors = [ln for ln in exc.output.splitlines()
                  if "error:" in ln or ln.startswith("FAILED:")][:5]
        raise BuildFailed(f"the {profile.name} build failed"
                          + ("\n  " + "\n  ".join(errors) if errors else ""),
                          log=exc.log, hint="fix the error, then `python3 build.py build`"
                          ) from exc
    finally:
        log.progress_done()  # each build its own line
    link_firmware(bdir, log)
    write_metadata(profile, layout, args, baseline, log, targets)
    return BuildResult(profile.name, bdir, configured, time.monotonic() - start)


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildRequest:
    only: str | None = None  # patched, stock or patched-asan: just that one
    asan: bool = False  # also the ASan+UBSan build of the patched tree
    jobs: int | None = None  # ninja -j

    def profiles(self) -> list[str]:
        names = [self.only] if self.only else ["patched", "stock"]
        if self.asan and "patched-asan" not in names:
            names.append("patched-asan")
        return names


def stage(ctx: Context, request: BuildRequest, log: StageLog) -> Outcome[list[BuildResult]]:
    from harness.stages.baseline import require_selected
    require_selected(ctx, "build")
    done: list[BuildResult] = []
    for name in request.profiles():
        if name == "stock" and not (ctx.layout.stock / "configure").exists():
            raise NotReady("no stock tree (qemu-stock/)", hint="run `python3 build.py import`")
        done.append(build(PROFILES[name], ctx.layout, log, ctx.baseline, jobs=request.jobs))
    return Outcome("built " + ", ".join(
        f"{name} {r.seconds:.1f}s" + (" (configured)" if r.configured else "")
        for name, r in zip(request.profiles(), done, strict=True)), done)


STAGE = Stage("build", stage, "configure + ninja: patched and stock", BuildRequest)

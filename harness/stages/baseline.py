"""Import the pinned QEMU baseline into ``qemu/`` as a git repository.

``qemu/`` gets: commit 1 = the pinned sources exactly as released (tag
``baseline``), then one commit per repack fix-up from harness/fixups/ (tag
``series-base``, where the series applies). ``qemu-stock/`` is a git
worktree of ``series-base`` for the unpatched build.

Two routes: Debian's source package (default, works offline from a Debian
mirror) and upstream git (``--source git``, needs network).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core import aptsrc
from harness.core.config import Baseline, Layout, load_baselines
from harness.core.digest import sha256_file
from harness.core.errors import BaselineError, CommandFailed, HarnessError, NotReady
from harness.core.git import IMPORT_IDENTITY, REPOSITORY_VARIABLES, Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog, run

MARKER = "harness-baseline.json"


@dataclass(frozen=True)
class ImportResult:
    tree: Path
    baseline_commit: str
    base_commit: str
    source: str
    already: bool


def verify_tarball(path: Path, baseline: Baseline) -> None:
    actual = sha256_file(path)
    if actual != baseline.orig_sha256:
        raise BaselineError(
            f"{path} has sha256 {actual}, the pin says {baseline.orig_sha256}",
            hint="the file is corrupt or not the pinned release: delete it and run "
                 "`python3 build.py import` again to refetch it; if Debian changed the "
                 f"release on purpose, update profile '{baseline.name}' in "
                 "harness/baselines.toml")


def fetch_debian_tarball(layout: Layout, baseline: Baseline, log: StageLog,
                         etc_apt: Path = Path("/etc/apt")) -> Path:
    """The pinned orig tarball, from the cache or fetched with apt-get source."""
    cached = layout.src_cache / baseline.orig_tarball
    if cached.exists():
        try:
            verify_tarball(cached, baseline)
            log.note(f"using cached {cached}")
            return cached
        except BaselineError:
            log.note(f"cached {cached} fails verification; fetching it again")
            cached.unlink()
    apt = aptsrc.PrivateApt(layout.cache / "apt", log)
    apt.write(aptsrc.deb_src_entries(aptsrc.system_sources(etc_apt), baseline.debian_suite),
              baseline.apt_options)
    try:
        apt.update()
    except CommandFailed as exc:
        raise BaselineError("apt-get update of the private deb-src configuration failed",
                            hint="check the machine's Debian mirror is reachable, or pass "
                                 "--tarball PATH", log=exc.log) from exc
    layout.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.cache) as tmp:
        apt.download_source(baseline.debian_package, baseline.debian_version, Path(tmp))
        got = Path(tmp) / baseline.orig_tarball
        if not got.exists():
            raise BaselineError(f"apt-get source did not produce {baseline.orig_tarball}",
                                log=str(log.path))
        verify_tarball(got, baseline)
        layout.src_cache.mkdir(parents=True, exist_ok=True)
        shutil.move(got, cached)
    return cached


def _common_git_dir(tree: Path) -> Path:
    """The repository's own .git directory, also for a worktree (qemu-stock/,
    out/bisect/qemu), whose .git is a file pointing into it."""
    dotgit = tree / ".git"
    if dotgit.is_file():
        text = dotgit.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            gitdir = (tree / text.split(":", 1)[1].strip()).resolve()
            common = gitdir / "commondir"
            if common.is_file():
                return (gitdir / common.read_text().strip()).resolve()
            return gitdir
    return dotgit


def read_marker(tree: Path) -> dict | None:
    """What ``import`` recorded about the tree (profile, ident, source, commits)."""
    path = _common_git_dir(tree) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tree_version(tree: Path) -> str | None:
    """The QEMU version of a tree: its VERSION file, else the import record."""
    try:
        return (tree / "VERSION").read_text().strip() or None
    except OSError:
        marker = read_marker(tree) or {}
        return marker.get("upstream_version")


def marker_profile(marker: dict) -> str | None:
    """The profile a tree was imported from; for imports made before there
    were profiles, the profile with the same Debian package and version."""
    if marker.get("profile"):
        return marker["profile"]
    try:
        profiles = load_baselines().profiles.values()
    except HarnessError:
        return None
    return next((b.name for b in profiles if b.ident == marker.get("ident")), None)


def marker_matches(marker: dict, baseline: Baseline) -> bool:
    return (marker.get("ident") == baseline.ident
            and marker.get("profile", baseline.name) == baseline.name)


def require_tree(layout: Layout, baseline: Baseline, command: str,
                 origin: str = "") -> dict:
    """The import record of qemu/, which must hold ``baseline``: a stage that
    works on the tree refuses to mix one baseline's tree with another's."""
    tree = layout.qemu
    marker = read_marker(tree)
    if marker is None:
        if not (tree / ".git").exists():
            raise NotReady(f"{tree} is not imported yet",
                           hint=f"run `python3 build.py --baseline {baseline.name} "
                                "import` first")
        raise BaselineError(f"{tree} was not made by `build.py import` (no {MARKER})",
                            hint=f"move {tree} away and run `python3 build.py --baseline "
                                 f"{baseline.name} import`")
    if marker_matches(marker, baseline):
        return marker
    have = marker_profile(marker)
    have_version = marker.get("upstream_version") or tree_version(tree) or "?"
    asked = f" ({origin})" if origin else ""
    use_it = (f"work on that tree: `python3 build.py --baseline {have} {command}`; "
              if have else "")
    raise BaselineError(
        f"{tree} holds QEMU {have_version} (baseline profile {have or 'unknown'}, "
        f"{marker.get('ident')}); this command asked for profile {baseline.name} "
        f"(QEMU {baseline.upstream_version}, {baseline.ident}){asked}",
        hint=f"{use_it}or move qemu/ to {baseline.name}: `python3 build.py export`, "
             f"`python3 build.py clean --trees`, `python3 build.py --baseline "
             f"{baseline.name} import`; or try the series on {baseline.name} without "
             f"touching qemu/: `python3 build.py --baseline {baseline.name} port`")


def fixup_message(diff: Path) -> str:
    text = diff.read_text()
    head = text.split("\ndiff --git", 1)[0]
    return head.strip() + "\n"


def _commit_all(git: Git, message: str, force: bool = False) -> None:
    # The tarball's own .gitignore hides files it ships (subprojects/
    # checkouts, parts of roms/): the import commit must hold all of them.
    git("add", "-A", *(["--force"] if force else []))
    git("commit", "-q", "--no-verify", "-m", message, env=IMPORT_IDENTITY)


def _init_from_tarball(tmp: Path, tarball: Path, baseline: Baseline, log: StageLog) -> Path:
    try:
        run(["tar", "--no-same-owner", "-xf", tarball, "-C", tmp], log)
    except CommandFailed as exc:
        raise BaselineError(f"cannot unpack {tarball}", log=exc.log,
                            hint="delete the tarball and run `python3 build.py import` "
                                 "again") from exc
    tree = tmp / baseline.orig_topdir
    if not (tree / "VERSION").exists():
        raise BaselineError(f"{tarball} does not contain {baseline.orig_topdir}/VERSION")
    version = (tree / "VERSION").read_text().strip()
    if version != baseline.upstream_version:
        raise BaselineError(f"{tarball} is QEMU {version}, the pin says "
                            f"{baseline.upstream_version}")
    git = Git(tree, log)
    git("init", "-q", "-b", baseline.patched_branch)
    _commit_all(git, f"Import QEMU {baseline.upstream_version} from Debian "
                     f"{baseline.ident} ({baseline.orig_tarball})\n\n"
                     f"sha256 {baseline.orig_sha256}\n", force=True)
    return tree


def _init_from_git(tmp: Path, baseline: Baseline, url: str, log: StageLog) -> Path:
    tree = tmp / "qemu"
    try:
        run(["git", "clone", "-q", "--depth", "1", "--branch", baseline.upstream_tag,
             url, tree], log,
            env={"GIT_TERMINAL_PROMPT": "0", **dict.fromkeys(REPOSITORY_VARIABLES)})
    except CommandFailed as exc:
        raise BaselineError(f"cannot clone {baseline.upstream_tag} from {url}",
                            log=exc.log,
                            hint="check network access, or use the default Debian "
                                 "route (`build.py import --source debian`)") from exc
    Git(tree, log)("checkout", "-q", "-b", baseline.patched_branch)
    return tree


def import_baseline(layout: Layout, baseline: Baseline, log: StageLog, *,
                    source: str = "debian", tarball: Path | None = None,
                    git_url: str | None = None, dest: Path | None = None) -> ImportResult:
    """Import ``baseline`` into qemu/ (and make qemu-stock/), or into ``dest``
    alone (the trees of `port`)."""
    tree = dest or layout.qemu
    with_stock = dest is None
    marker = read_marker(tree)
    if marker is not None:
        if not marker_matches(marker, baseline) or marker.get("source") != source:
            have = marker_profile(marker)
            raise BaselineError(
                f"{tree} holds baseline {have or 'unknown'} ({marker.get('ident')}, "
                f"{marker.get('source')}); asked for {baseline.name} ({baseline.ident}, "
                f"{source})",
                hint="export your work (`python3 build.py export`), then `python3 "
                     f"build.py clean --trees` and import again; or keep qemu/ and try "
                     f"the series on {baseline.name} beside it: `python3 build.py "
                     f"--baseline {baseline.name} port`")
        log.note(f"{tree} already holds {baseline.ident}; nothing to import")
        if with_stock:
            _ensure_stock_worktree(layout, baseline, log)
        return ImportResult(tree, marker["baseline_commit"], marker["base_commit"],
                            source, already=True)
    if tree.exists() and any(tree.iterdir()):
        raise BaselineError(f"{tree} exists but is not a harness import",
                            hint=f"move {tree} away (nothing is deleted for you) and run "
                                 "`python3 build.py import` again")

    tree.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".import-", dir=tree.parent) as tmpname:
        tmp = Path(tmpname)
        if source == "debian":
            if tarball is not None:
                verify_tarball(tarball, baseline)
            else:
                tarball = fetch_debian_tarball(layout, baseline, log)
            new = _init_from_tarball(tmp, tarball, baseline, log)
            fixups = sorted((layout.fixups / baseline.name).glob("*.diff"))
        elif source == "git":
            new = _init_from_git(tmp, baseline, git_url or baseline.upstream_git, log)
            fixups = []  # upstream git carries the firmware blobs
        else:
            raise BaselineError(f"unknown baseline source '{source}'")
        git = Git(new, log)
        git("tag", baseline.import_tag)
        for diff in fixups:
            try:
                git("apply", "--index", str(diff))
            except CommandFailed as exc:
                raise BaselineError(f"repack fix-up {diff.name} does not apply",
                                    log=exc.log,
                                    hint="the baseline changed: update the fix-up "
                                         f"in harness/fixups/{baseline.name}/") from exc
            _commit_all(git, fixup_message(diff))
        git("tag", baseline.base_tag)
        result = {
            "profile": baseline.name,
            "upstream_version": baseline.upstream_version,
            "ident": baseline.ident,
            "source": source,
            "orig_sha256": baseline.orig_sha256 if source == "debian" else None,
            "upstream_tag": baseline.upstream_tag,
            "baseline_commit": git.rev(baseline.import_tag),
            "base_commit": git.rev(baseline.base_tag),
            "fixups": [d.name for d in fixups],
        }
        (new / ".git" / MARKER).write_text(json.dumps(result, indent=2) + "\n")
        if tree.exists():
            tree.rmdir()
        new.rename(tree)
    if with_stock:
        _ensure_stock_worktree(layout, baseline, log)
    return ImportResult(tree, result["baseline_commit"], result["base_commit"], source,
                        already=False)


def _ensure_stock_worktree(layout: Layout, baseline: Baseline, log: StageLog) -> None:
    """qemu-stock/: the unpatched baseline, as a worktree of qemu/."""
    stock = layout.stock
    git = Git(layout.qemu, log)
    git("worktree", "prune")
    if (stock / ".git").exists():
        head = Git(stock, log).rev("HEAD")
        if head != git.rev(baseline.base_tag):
            raise BaselineError(f"{stock} is not at {baseline.base_tag}",
                                hint=f"`git -C {stock} checkout --detach "
                                     f"{baseline.base_tag}`")
        return
    if stock.exists() and any(stock.iterdir()):
        raise BaselineError(f"{stock} exists but is not a worktree of {layout.qemu}",
                            hint=f"move {stock} away and run `build.py import` again")
    git("worktree", "add", "-q", "--detach", str(stock), baseline.base_tag)


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRequest:
    source: str = "debian"  # or "git": the upstream tag (needs network)
    tarball: Path | None = None  # a local copy of the pinned orig tarball
    git_url: str | None = None


def require_selected(ctx: Context, command: str) -> dict:
    """qemu/ must hold the selected baseline (its import record is returned)."""
    origin = f"selected with {ctx.baseline_origin}" if ctx.baseline_origin else \
        "the default of harness/baselines.toml; --baseline NAME selects another"
    return require_tree(ctx.layout, ctx.baseline, command, origin)


def stage(ctx: Context, request: ImportRequest, log: StageLog) -> Outcome:
    res = import_baseline(ctx.layout, ctx.baseline, log, source=request.source,
                          tarball=request.tarball, git_url=request.git_url)
    what = "already imported" if res.already else "imported"
    return Outcome(f"{what} baseline {ctx.baseline.name} ({ctx.baseline.ident}) at "
                   f"{res.tree} (series-base {res.base_commit[:12]})", res)


STAGE = Stage("import", stage, "import the pinned baseline into qemu/", ImportRequest)

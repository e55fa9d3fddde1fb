"""Import the pinned QEMU baseline into ``qemu/`` as a git repository.

``qemu/`` gets: commit 1 = the pinned sources exactly as released (tag
``baseline``), then one commit per repack fix-up from harness/fixups/ (tag
``series-base``, where the series applies). ``qemu-stock/`` is a git
worktree of ``series-base`` for the unpatched build.

Two routes: Debian's source package (default, works offline from a Debian
mirror) and upstream git (``--source git``, needs network).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import aptsrc
from .config import Baseline, Layout
from .errors import BaselineError, CommandFailed, HarnessError
from .git import IMPORT_IDENTITY, Git
from .runner import StageLog, run

MARKER = "harness-baseline.json"


@dataclass(frozen=True)
class ImportResult:
    tree: Path
    baseline_commit: str
    base_commit: str
    source: str
    already: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def read_marker(tree: Path) -> dict | None:
    path = tree / ".git" / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
             url, tree], log, env={"GIT_TERMINAL_PROMPT": "0"})
    except CommandFailed as exc:
        raise BaselineError(f"cannot clone {baseline.upstream_tag} from {url}",
                            log=exc.log,
                            hint="check network access, or use the default Debian "
                                 "route (`build.py import --source debian`)") from exc
    Git(tree, log)("checkout", "-q", "-b", baseline.patched_branch)
    return tree


def import_baseline(layout: Layout, baseline: Baseline, log: StageLog, *,
                    source: str = "debian", tarball: Path | None = None,
                    git_url: str | None = None) -> ImportResult:
    tree = layout.qemu
    marker = read_marker(tree)
    if marker is not None:
        if marker.get("ident") != baseline.ident or marker.get("source") != source:
            raise BaselineError(
                f"{tree} holds baseline {marker.get('ident')} ({marker.get('source')}); "
                f"asked for {baseline.ident} ({source})",
                hint="export your work (`build.py export`), then `build.py clean --trees` "
                     "and import again")
        log.note(f"{tree} already holds {baseline.ident}; nothing to import")
        _ensure_stock_worktree(layout, baseline, log)
        return ImportResult(tree, marker["baseline_commit"], marker["base_commit"],
                            source, already=True)
    if tree.exists() and any(tree.iterdir()):
        raise BaselineError(f"{tree} exists but is not a harness import",
                            hint=f"move {tree} away (nothing is deleted for you) and run "
                                 "`python3 build.py import` again")

    layout.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".import-", dir=layout.root) as tmpname:
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
            raise HarnessError(f"{stock} is not at {baseline.base_tag}",
                               hint=f"`git -C {stock} checkout --detach "
                                    f"{baseline.base_tag}`")
        return
    if stock.exists() and any(stock.iterdir()):
        raise BaselineError(f"{stock} exists but is not a worktree of {layout.qemu}",
                            hint=f"move {stock} away and run `build.py import` again")
    git("worktree", "add", "-q", "--detach", str(stock), baseline.base_tag)

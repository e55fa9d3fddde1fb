"""Older QEMU releases as peers: minimal Debian chroots with their qemu-img and qemu-system.

SPEC.md §1 requires images the series writes to be safe with every QEMU already deployed.
The peers are that deployed world, as data (``PEERS``): one Debian release each, made with
``mmdebstrap --variant=apt SUITE DIR MIRROR...`` plus ``qemu-utils`` and ``qemu-system-x86``.

- The mirror is the machine's own (``aptsrc.system_sources()``); nothing here names a host.
- A chroot is cached as ``<cache>/peers/<name>-<digest>``, the digest being a hash of its
  inputs (suite, apt lines, packages, apt options, recipe); it is built in a temporary
  directory and renamed into place, so a half-built chroot is never used, and it is reused
  while the inputs are unchanged. ``peer.json`` inside records what was installed.
- A peer's binary runs as ``chroot ROOT qemu-img ...`` with a clean environment. Images live
  in a workspace directory inside the chroot (``ROOT/work/...``): the peer sees
  ``/work/...``, the host the same file under ROOT. Nothing is mounted, so nothing can be
  left mounted.

Building and running need root (mmdebstrap's root mode, chroot(2)).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.core import aptsrc
from harness.core.config import Layout
from harness.core.errors import CommandFailed, EnvironmentProblem, PeerError
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import NullLog, StageLog, run
from harness.core.timer import Timer

# Bump when the way a chroot is made changes in a way its inputs do not show.
RECIPE = 1
PACKAGES = ("qemu-utils", "qemu-system-x86")
VARIANT = "apt"
MANIFEST = "peer.json"
WORK = "work"  # the workspace parent inside a chroot: /work
# What a peer's processes get as environment: nothing from the host.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}

Runner = Callable[..., object]


@dataclass(frozen=True)
class Peer:
    """One deployed QEMU: a Debian suite and how to install it."""

    name: str
    suite: str
    qemu: str  # the upstream release the suite carries (peer.json has the exact version)
    pockets: tuple[str, ...] = ("", "-updates")  # suite suffixes taken from the main mirror
    security: bool = True  # also <suite>-security from the security mirror
    packages: tuple[str, ...] = PACKAGES
    aptopts: tuple[str, ...] = ()
    # Chroots made the same way for other purposes (harness/stages/libvirt.py) say what they carry
    # and where they are cached; none of these is an input of the chroot's digest.
    version_argv: tuple[str, ...] = ("qemu-img", "--version")  # peer.json: version_key
    version_key: str = "qemu_version"
    cache_dir: str = "peers"  # under the harness cache (~/.cache/qemu-snap-harness)
    stage: str = "peers"  # the build.py command that (re)builds it

    def again(self, rebuild: bool = False) -> str:
        """The command that builds this chroot (again)."""
        only = f" --only {self.name}" if self.stage == "peers" else ""
        return f"python3 build.py {self.stage}{only}" + (" --rebuild" if rebuild else "")


PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("bullseye", "bullseye", "5.2"),
    Peer("bookworm", "bookworm", "7.2"),
    Peer("trixie", "trixie", "10.0.13"),
    # unstable has no -updates or -security; a frozen mirror's Release is past Valid-Until
    Peer("sid", "sid", "11.1.3", pockets=("",), security=False,
         aptopts=('Acquire::Check-Valid-Until "false"',)),
)}


def select(names: Sequence[str] | None) -> list[Peer]:
    """The peers named (all when none), in PEERS order; PeerError for an unknown name."""
    if not names:
        return list(PEERS.values())
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise PeerError(f"unknown peer(s) {', '.join(unknown)}",
                        hint=f"choose from {', '.join(PEERS)}")
    return [p for p in PEERS.values() if p.name in names]


# -- inputs -------------------------------------------------------------------------------


def mirror_sources() -> list[aptsrc.Source]:
    """The machine's Debian mirrors, or PeerError saying how to configure one."""
    try:
        return aptsrc.system_sources()
    except EnvironmentProblem as exc:
        raise PeerError(
            f"no Debian mirror to install the peers from ({exc.message})",
            hint="configure a Debian mirror for apt in /etc/apt/sources.list.d/ "
                 "(the peers are installed from it), then `python3 build.py peers`") from exc


def apt_lines(peer: Peer, sources: Sequence[aptsrc.Source]) -> list[str]:
    """One-line apt sources for mmdebstrap: the suite (and its pockets) from every main
    mirror, <suite>-security from every security mirror when the peer has one."""
    lines = []
    for src in sources:
        if src.security:
            if peer.security:
                lines.append(f"deb {src.uri} {peer.suite}-security main")
        else:
            lines += [f"deb {src.uri} {peer.suite}{pocket} main" for pocket in peer.pockets]
    if not any(not s.security for s in sources):
        raise PeerError(f"{peer.name}: the apt sources name no main Debian mirror",
                        hint="add a deb.debian.org-style mirror (…/debian) to "
                             "/etc/apt/sources.list.d/")
    return lines


def inputs(peer: Peer, sources: Sequence[aptsrc.Source]) -> dict:
    """Everything that decides what the chroot contains (the mirror's state aside)."""
    return {"suite": peer.suite, "variant": VARIANT, "apt": apt_lines(peer, sources),
            "packages": sorted(peer.packages), "aptopts": list(peer.aptopts),
            "recipe": RECIPE}


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def mmdebstrap_argv(peer: Peer, target: Path, lines: Sequence[str]) -> list[str]:
    argv = ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(peer.packages)}"]
    argv += [f"--aptopt={opt}" for opt in peer.aptopts]
    return argv + [peer.suite, str(target), *lines]


# -- a built peer -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A directory inside a peer's chroot: ``host`` on this machine, ``/work/<name>`` there."""

    root: Path
    host: Path

    def inside(self, path: Path | str) -> str:
        """The path a process in the chroot uses for a host path under the chroot."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        return str(PurePosixPath("/") / rel)


@dataclass(frozen=True)
class PeerRoot:
    """A built, cached peer chroot."""

    peer: Peer
    root: Path
    manifest: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def qemu_version(self) -> str:
        return self.manifest.get("qemu_version", "?")

    @property
    def version(self) -> str:
        """What ``peer.version_argv`` reported when the chroot was built."""
        return self.manifest.get(self.peer.version_key, "?")

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.qemu_version)

    @property
    def label(self) -> str:
        return f"{self.peer.name} (QEMU {self.qemu_version})"

    def command(self, tool: str, *args: str | os.PathLike) -> list[str]:
        """argv running ``tool`` inside the chroot (run it with env=peers.ENV)."""
        return ["chroot", str(self.root), tool, *(os.fspath(a) for a in args)]

    def has(self, tool: str) -> bool:
        return any((self.root / d / tool).is_file() for d in ("usr/bin", "bin"))

    @contextmanager
    def workspace(self, label: str, keep: Callable[[], bool] = lambda: False
                  ) -> Iterator[Workspace]:
        """A fresh directory under ROOT/work, removed afterwards unless ``keep()``."""
        base = self.root / WORK
        base.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
        path = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=base))
        try:
            yield Workspace(self.root, path)
        finally:
            if not keep():
                shutil.rmtree(path, ignore_errors=True)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def parse_qemu_version(output: str) -> str:
    """'qemu-img version 5.2.0 (Debian 1:5.2+dfsg-11+deb11u5)' -> '5.2.0'."""
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", output)
    if not m:
        raise PeerError(f"cannot tell the QEMU version from {output.strip()[:200]!r}")
    return m.group(1)


def parse_version(output: str, tool: str) -> str:
    """The release a ``TOOL --version`` prints: QEMU's 'version X.Y.Z', or the first X.Y.Z
    ('libvirtd (libvirt) 11.3.0' -> '11.3.0')."""
    if tool == "qemu-img":
        return parse_qemu_version(output)
    m = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", output)
    if not m:
        raise PeerError(f"cannot tell the {tool} version from {output.strip()[:200]!r}")
    return m.group(1)


def parse_dpkg_versions(output: str) -> dict[str, str]:
    """`dpkg-query -W -f '${Package} ${Version}\\n'` -> {package: version}."""
    return dict(line.split(None, 1) for line in output.splitlines() if len(line.split()) == 2)


def cache_root(layout: Layout, peer: Peer | None = None) -> Path:
    if peer is None or peer.cache_dir == "peers":
        return layout.peers_cache
    return layout.cache / peer.cache_dir


def cached_dir(layout: Layout, peer: Peer, sources: Sequence[aptsrc.Source]) -> Path:
    return cache_root(layout, peer) / f"{peer.name}-{digest(inputs(peer, sources))}"


def locate(peer: Peer, layout: Layout | None = None,
           sources: Sequence[aptsrc.Source] | None = None) -> PeerRoot | None:
    """The cached chroot of ``peer`` for today's inputs, or None when it is not built."""
    layout = layout or Layout()
    sources = mirror_sources() if sources is None else sources
    path = cached_dir(layout, peer, sources)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return PeerRoot(peer, path, manifest)


# -- building -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    root: PeerRoot
    built: bool  # False: reused from the cache
    seconds: float


def require_build_tools(is_root: bool | None = None) -> None:
    if is_root is None:
        is_root = os.geteuid() == 0
    if not is_root:
        raise PeerError("the peers need root: mmdebstrap builds them in root mode and "
                        "their binaries run under chroot(2)",
                        hint="run `python3 build.py peers` (and the peers tests) as root")
    if shutil.which("mmdebstrap") is None:
        raise PeerError("mmdebstrap is not installed (it builds the peer chroots)",
                        hint="apt-get install mmdebstrap, or `python3 build.py setup`")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(cache: Path, peer: Peer, keep: Path, log: StageLog) -> None:
    """Older chroots of this peer (other inputs) and temporary dirs of dead builds."""
    for path in cache.iterdir() if cache.is_dir() else ():
        tmp = re.fullmatch(rf"\.tmp-{re.escape(peer.name)}-[0-9a-f]+-(\d+)", path.name)
        old = re.fullmatch(rf"{re.escape(peer.name)}-[0-9a-f]{{12}}", path.name)
        if (tmp and not _pid_alive(int(tmp.group(1)))) or (old and path != keep):
            log.note(f"removing {path}")
            shutil.rmtree(path, ignore_errors=True)


def probe(root: Path, peer: Peer, log: StageLog, runner: Runner = run) -> dict:
    """What got installed: package versions and the version of the peer's tool (qemu-img)."""
    fmt = "${Package} ${Version}\n"
    pkgs = runner(["chroot", str(root), "dpkg-query", "-W", "-f", fmt, *peer.packages],
                  log, env=ENV)
    tool = runner(["chroot", str(root), *peer.version_argv], log, env=ENV)
    return {"packages": parse_dpkg_versions(pkgs.stdout),
            peer.version_key: parse_version(tool.stdout, peer.version_argv[0])}


def ensure(peer: Peer, layout: Layout, log: StageLog, *,
           sources: Sequence[aptsrc.Source] | None = None, runner: Runner = run,
           rebuild: bool = False, is_root: bool | None = None) -> Prepared:
    """The chroot of ``peer``: from the cache, or built (atomically) and cached."""
    timer = Timer()
    sources = mirror_sources() if sources is None else sources
    final = cached_dir(layout, peer, sources)
    if not rebuild and (found := locate(peer, layout, sources)) is not None:
        log.note(f"{peer.name}: cached in {final}")
        return Prepared(found, False, timer.seconds)
    require_build_tools(is_root)
    cache = cache_root(layout, peer)
    cache.mkdir(parents=True, exist_ok=True)
    data = inputs(peer, sources)
    tmp = cache / f".tmp-{peer.name}-{final.name.rsplit('-', 1)[1]}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            runner(mmdebstrap_argv(peer, tmp, data["apt"]), log)
        except CommandFailed as exc:
            raise PeerError(
                f"mmdebstrap could not install {peer.name} ({peer.suite}, "
                f"{' '.join(peer.packages)})", log=exc.log,
                hint=f"read the log: the mirror must carry {peer.suite} "
                     f"(…/dists/{peer.suite}/Release) signed by a key this machine trusts "
                     f"(debian-archive-keyring); then `{peer.again()}`") from exc
        try:
            found = probe(tmp, peer, log, runner)
        except CommandFailed as exc:
            raise PeerError(f"{peer.name}: the new chroot does not run "
                            f"{peer.version_argv[0]}", log=exc.log,
                            hint=f"read the log; then `{peer.again(rebuild=True)}`") from exc
        (tmp / WORK).mkdir(exist_ok=True)
        manifest = {"name": peer.name, "suite": peer.suite, "digest": final.name,
                    "inputs": data, **found,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": round(timer.seconds, 1)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if rebuild and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if locate(peer, layout, sources) is None:  # not a concurrent build's result
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_leftovers(cache, peer, final, log)
    root = locate(peer, layout, sources)
    assert root is not None
    log.note(f"{peer.name}: built {root.label} in {final}")
    return Prepared(root, True, timer.seconds)


def ensure_all(names: Sequence[str] | None, layout: Layout, log: StageLog | None = None,
               **kwargs) -> list[Prepared]:
    log = log or NullLog()
    sources = kwargs.pop("sources", None)
    sources = mirror_sources() if sources is None else sources
    return [ensure(p, layout, log, sources=sources, **kwargs) for p in select(names)]


def table(prepared: Sequence[Prepared]) -> str:
    rows = [("peer", "qemu", "package", "how", "seconds", "chroot")]
    for p in prepared:
        pkg = p.root.manifest.get("packages", {}).get("qemu-utils", "?")
        rows.append((p.root.name, p.root.qemu_version, pkg, "built" if p.built else "cached",
                     f"{p.seconds:.1f}", str(p.root.root)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
                     for r in rows)


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeersRequest:
    only_peer: list[str] | None = None  # just these peers (default: all)
    rebuild: bool = False  # even when the cached chroot's inputs are unchanged


def stage(ctx: Context, request: PeersRequest, log: StageLog) -> Outcome[list[Prepared]]:
    prepared = ensure_all(request.only_peer, ctx.layout, log, rebuild=request.rebuild)
    return Outcome(f"{len(prepared)} peer(s): " + ", ".join(
        f"{p.root.name} {p.root.qemu_version} ({'built' if p.built else 'cached'} "
        f"{p.seconds:.1f}s)" for p in prepared), prepared, table(prepared))


STAGE = Stage("peers", stage, "older QEMU releases (Debian chroots) for the peer matrix, "
                              "cached by their inputs", PeersRequest)

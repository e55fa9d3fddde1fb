"""libvirt as a real management client of the patched QEMU (the libvirt suite, tests/libvirt).

Two libvirt releases, as data (``LIBVIRTS``), drive the same snapshot scenario:

- ``host``: the machine's own libvirtd, from ``HOST_PACKAGES`` (part of ``APT_PACKAGES``,
  installed by ``build.py setup``; Debian 12 has libvirt 9.0, which takes internal
  snapshots with HMP savevm/loadvm/delvm through QMP ``human-monitor-command``);
- ``trixie``: libvirt 11.3 in a Debian trixie chroot (``QMP snapshot-save``/``-load``/
  ``-delete`` jobs), made by harness/stages/peers.py's machinery (``mmdebstrap --variant=apt``,
  mirror from the machine's apt sources, cached by the hash of its inputs, built in a
  temporary directory and renamed into place) under ``~/.cache/qemu-snap-harness/libvirt/``.

Neither runs as a system service: rig/libvirt/daemon.py starts one libvirtd per test
in a private mount namespace with its own configuration and state directories.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from harness.core.config import Layout
from harness.core.errors import EnvironmentProblem
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import NullLog, StageLog, run
from harness.core.timer import Timer
from harness.stages import peers
from harness.stages import setup as bootstrap

# The daemon with the QEMU driver, and virsh; no libvirt-daemon-system (no service, no
# default network, no users): the suite brings its own configuration.
HOST_PACKAGES = ("libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients")
DAEMON = "/usr/sbin/libvirtd"


@dataclass(frozen=True)
class Libvirt:
    """One libvirt the suite drives: the machine's own (chroot None) or a chroot's."""

    name: str
    chroot: peers.Peer | None = None

    @property
    def packages(self) -> tuple[str, ...]:
        return self.chroot.packages if self.chroot else HOST_PACKAGES


LIBVIRTS: dict[str, Libvirt] = {lv.name: lv for lv in (
    Libvirt("host"),
    # libvirt-daemon-driver-qemu pulls in trixie's qemu-system-x86, and with it every
    # library the patched build links (they keep their sonames from bookworm to trixie)
    Libvirt("trixie", peers.Peer(
        "libvirt-trixie", "trixie", "10.0.13", packages=HOST_PACKAGES,
        version_argv=("libvirtd", "--version"), version_key="libvirt_version",
        cache_dir="libvirt", stage="libvirt")),
)}


def locate(name: str, layout: Layout | None = None) -> peers.PeerRoot | None:
    """The cached chroot of libvirt ``name`` (None when not built; ValueError: no chroot)."""
    lv = LIBVIRTS[name]
    if lv.chroot is None:
        raise ValueError(f"libvirt {name} is the machine's own, not a chroot")
    return peers.locate(lv.chroot, layout)


def host_version(daemon: str = DAEMON) -> str | None:
    """The machine's libvirtd release, or None when it is not installed."""
    if shutil.which(daemon) is None:
        return None
    out = subprocess.run([daemon, "--version"], capture_output=True, text=True, check=False)
    return peers.parse_version(out.stdout, "libvirtd") if out.returncode == 0 else None


@dataclass(frozen=True)
class Prepared:
    name: str
    version: str
    how: str  # "installed" (the machine's), "built", "cached"
    seconds: float
    where: str


def ensure_all(layout: Layout, log: StageLog | None = None, *, rebuild: bool = False
               ) -> list[Prepared]:
    """Check the machine's libvirt, build (or reuse) the chroots; EnvironmentProblem or
    PeerError naming what to run when something is missing."""
    log = log or NullLog()
    done = []
    for lv in LIBVIRTS.values():
        timer = Timer()
        if lv.chroot is None:
            missing = bootstrap.missing_debs(lv.packages, log)
            version = host_version()
            if missing or version is None:
                raise EnvironmentProblem(
                    f"the machine's libvirt is not installed (missing: "
                    f"{' '.join(missing) or DAEMON})",
                    hint="as root: `python3 build.py setup` (or apt-get install "
                         f"--no-install-recommends {' '.join(lv.packages)})")
            done.append(Prepared(lv.name, version, "installed", timer.seconds,
                                 DAEMON))
            continue
        prep = peers.ensure(lv.chroot, layout, log, rebuild=rebuild, runner=run)
        done.append(Prepared(lv.name, prep.root.version, "built" if prep.built else "cached",
                             prep.seconds, str(prep.root.root)))
    return done


def table(prepared: list[Prepared]) -> str:
    rows = [("libvirt", "version", "how", "seconds", "where")]
    rows += [(p.name, p.version, p.how, f"{p.seconds:.1f}", p.where) for p in prepared]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  "
                     + r[-1] for r in rows)


# -- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LibvirtRequest:
    rebuild: bool = False  # build the chroot again even when its inputs are unchanged


def stage(ctx: Context, request: LibvirtRequest, log: StageLog) -> Outcome[list[Prepared]]:
    prepared = ensure_all(ctx.layout, log, rebuild=request.rebuild)
    return Outcome(f"{len(prepared)} libvirt(s): " + ", ".join(
        f"{p.name} {p.version} ({p.how} {p.seconds:.1f}s)" for p in prepared),
        prepared, table(prepared))


STAGE = Stage("libvirt", stage, "the libvirts that drive the patched QEMU: the machine's, "
                                "and trixie's in a chroot (cached)", LibvirtRequest)

"""One private libvirtd per test: its own configuration, state and sockets, in its own mount
namespace, on this machine or in a chroot; always stopped, with every process it started.

    place = Place.host()  or  Place.chroot("trixie", root)
    with Daemon(place, workspace, shared=[build dir, source dir, guest dir, firmware dirs],
                logdir=test_dir, log=CommandLog(...)) as virsh:
        virsh("define", ...)

How it is private (libvirtd as root always uses its fixed system paths, and /etc/libvirt/
qemu.conf is read from a fixed place):

- ``unshare --mount --propagation private`` starts nsinit.py, which binds the workspace's
  etc/, run/, lib/, cache/ and log/ over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
  /var/cache/libvirt and /var/log/libvirt (and a passwd/group that know libvirt's default
  user, which no package here creates), then (in a chroot: after /proc, /sys, /dev, a tmpfs
  /run and read-only binds of the shared host paths at the same paths) execs libvirtd. None
  of it is visible outside the namespace, and it all goes away with its last process. On
  this machine the mount points are created when missing (empty directories).
- qemu.conf runs QEMU as root without a security driver, cgroups or namespaces, its stdio
  to a file (no virtlogd); libvirtd.conf logs the QEMU monitor traffic at debug level.
- virsh reaches it through ``qemu:///system?socket=WORKSPACE/run/libvirt-sock`` (in a chroot:
  ``chroot ROOT virsh`` with the path as seen there).
- Started with NOTIFY_SOCKET: libvirtd says READY=1 when it serves clients (no polling).
- Stopping: destroy the domains, SIGTERM (then SIGKILL) the daemon, then SIGKILL every
  process still in its mount namespace (QEMU outlives libvirtd by design); the logs are
  copied into the test's directory.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rig import waiting

from .virsh import CommandLog, Virsh, VirshError

NSINIT = Path(__file__).with_name("nsinit.py")
DAEMON = "/usr/sbin/libvirtd"
# workspace subdirectory -> the system path libvirtd uses for it
LIBVIRT_DIRS = (
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
)
SOCKET = "run/libvirt-sock"
DAEMON_LOG = "log/libvirtd.log"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
# libvirt resolves its default QEMU user when the driver starts, before reading qemu.conf;
# Debian's libvirt-daemon-system creates it, the minimal packages do not.
QEMU_USER = "libvirt-qemu"
QEMU_UID = 64055

QEMU_CONF = """\
# tests/libvirt: QEMU as root, nothing the test machine may lack
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""
DAEMON_CONF = """\
# tests/libvirt: local clients only, and the QEMU monitor traffic in the log
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
log_filters = "1:qemu.qemu_monitor 3:*"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
"""


class DaemonError(Exception):
    """libvirtd did not start, or could not be stopped cleanly."""


@dataclass(frozen=True)
class Mount:
    kind: str  # bind, rbind, proc, tmpfs (nsinit.py)
    target: str  # inside the root
    source: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class Place:
    """Where a libvirt runs: this machine (root '/') or a chroot."""

    name: str
    root: Path = Path("/")

    @property
    def chrooted(self) -> bool:
        return self.root != Path("/")

    def inside(self, path: Path | str) -> str:
        """How a process of this place names a host path (under the chroot if chrooted)."""
        if not self.chrooted:
            return str(path)
        return "/" + str(Path(path).resolve().relative_to(self.root.resolve()))

    def prefix(self) -> list[str]:
        return ["chroot", str(self.root)] if self.chrooted else []


def covering(paths: Sequence[Path]) -> list[Path]:
    """The paths that are not inside another one of them (bind those: they carry the rest)."""
    resolved = sorted({Path(p).resolve() for p in paths}, key=lambda p: (len(p.parts), str(p)))
    out: list[Path] = []
    for p in resolved:
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


def mounts(place: Place, ws: Path, shared: Sequence[Path]) -> list[Mount]:
    """What nsinit.py mounts, in order, before it starts libvirtd."""
    out: list[Mount] = []
    if place.chrooted:
        out += [Mount("proc", "/proc"), Mount("rbind", "/sys", "/sys"),
                Mount("rbind", "/dev", "/dev"), Mount("tmpfs", "/run")]
        # the build's qemu-bundle links into its build and source trees and the firmware
        # packages by absolute path: the same paths inside
        out += [Mount("bind", str(p), str(p), readonly=True) for p in covering(shared)]
    out += [Mount("bind", target, str(ws / sub)) for sub, target in LIBVIRT_DIRS]
    out += [Mount("bind", "/etc/passwd", str(ws / "passwd"), readonly=True),
            Mount("bind", "/etc/group", str(ws / "group"), readonly=True)]
    return out


def accounts(passwd: str, group: str) -> tuple[str, str]:
    """passwd and group with libvirt's default QEMU user and group added when missing."""
    def add(text: str, line: str) -> str:
        if any(ln.split(":")[0] == QEMU_USER for ln in text.splitlines()):
            return text
        return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    return (add(passwd, f"{QEMU_USER}:x:{QEMU_UID}:{QEMU_UID}:Libvirt Qemu:"
                        "/var/lib/libvirt:/usr/sbin/nologin"),
            add(group, f"{QEMU_USER}:x:{QEMU_UID}:"))


def launcher_argv(spec: Path, python: str = sys.executable) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", python, str(NSINIT),
            str(spec)]


def mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def processes_in(namespace: str) -> list[int]:
    """Every process whose mount namespace is ``namespace``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and mount_namespace(int(entry)) == namespace:
            pids.append(int(entry))
    return pids


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


_RUNNING: list[Daemon] = []


def stop_all() -> list[str]:
    """Stop daemons a test left running (session end); what was stopped."""
    left = [d.label for d in _RUNNING if d.running()]
    for d in list(_RUNNING):
        d.stop()
    return left


class Daemon:
    def __init__(self, place: Place, ws: Path, *, shared: Sequence[Path], logdir: Path,
                 log: CommandLog, ready_timeout: float = 60.0):
        self.place = place
        self.ws = Path(ws)
        self.shared = list(shared)
        self.logdir = Path(logdir)
        self.log = log
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.namespace: str | None = None
        self.seconds_to_ready: float | None = None
        self.virsh = Virsh(f"qemu:///system?socket={place.inside(self.ws / SOCKET)}", log,
                           prefix=place.prefix())

    @property
    def label(self) -> str:
        return f"libvirtd of {self.place.name} in {self.ws}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- start ------------------------------------------------------------------------

    def _write_files(self, notify: str) -> Path:
        for sub, _ in LIBVIRT_DIRS:
            (self.ws / sub).mkdir(parents=True, exist_ok=True)
        (self.ws / "etc" / "qemu.conf").write_text(QEMU_CONF)
        (self.ws / "etc" / "libvirtd.conf").write_text(DAEMON_CONF)
        etc = self.place.root / "etc"
        passwd, group = accounts((etc / "passwd").read_text(), (etc / "group").read_text())
        (self.ws / "passwd").write_text(passwd)
        (self.ws / "group").write_text(group)
        spec = {
            "root": str(self.place.root),
            "mounts": [asdict(m) for m in mounts(self.place, self.ws, self.shared)],
            "argv": [DAEMON, "--pid-file", "/run/libvirt/libvirtd.pid"],
            "env": {**ENV, "NOTIFY_SOCKET": notify},
        }
        path = self.ws / "nsinit.json"
        path.write_text(json.dumps(spec, indent=2) + "\n")
        return path

    def start(self) -> Virsh:
        notify_path = self.ws / "notify"
        self.ws.mkdir(parents=True, exist_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            spec = self._write_files(self.place.inside(notify_path))
            argv = launcher_argv(spec)
            self.log.write(f"$ {' '.join(argv)}  # libvirtd, spec {spec}")
            out = open(self.logdir / "daemon-output.log", "ab")
            t0 = time.monotonic()
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=dict(ENV),
                                             start_new_session=True)
            finally:
                out.close()
            _RUNNING.append(self)
            try:
                self._wait_ready(notify, t0)
            except BaseException:
                self.stop()
                raise
        return self.virsh

    def _wait_ready(self, notify: socket.socket, t0: float) -> None:
        deadline = t0 + self.ready_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonError(f"{self.label}: not ready after {self.ready_timeout}s\n"
                                  + self.tail())
            ready, _, _ = select.select([notify], [], [], min(left, 1.0))
            if ready and b"READY=1" in notify.recv(4096):
                break
            if not self.running():
                raise DaemonError(f"{self.label} exited ({self.proc.returncode}) before it "
                                  f"was ready\n" + self.tail())
        self.seconds_to_ready = time.monotonic() - t0
        self.namespace = mount_namespace(self.proc.pid)
        if self.namespace is None or self.namespace == mount_namespace(os.getpid()):
            raise DaemonError(f"{self.label}: not in a mount namespace of its own")
        self.log.note(f"libvirtd pid {self.proc.pid} ready after {self.seconds_to_ready:.2f}s,"
                      f" mount namespace {self.namespace}")

    def tail(self, lines: int = 25) -> str:
        out = []
        for path in (self.logdir / "daemon-output.log", self.ws / DAEMON_LOG):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            keep = [ln for ln in text if " error : " in ln or " warning : " in ln
                    or "libvirtd.log" not in str(path)]
            out.append(f"--- {path} (last lines)\n" + "\n".join(keep[-lines:]))
        return "\n".join(out)

    def daemon_log(self) -> str:
        return _read(self.ws / DAEMON_LOG)

    def qemu_log(self, domain: str) -> str:
        """The domain's QEMU log: each start's command line, then QEMU's stderr."""
        return _read(self.ws / "log" / "qemu" / f"{domain}.log")

    # -- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Destroy the domains, stop libvirtd, kill what is left in its namespace, keep the
        logs. Safe to call twice."""
        if self.proc is None:
            return
        if self.running():
            try:
                names = self.virsh("list", "--name", timeout=30).stdout.split()
                for name in names:
                    self.virsh("destroy", name, check=False, timeout=60)
            except VirshError as exc:
                self.log.note(f"could not list or destroy the domains: {exc}")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.log.note("libvirtd did not stop on SIGTERM in 30s: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.note(f"libvirtd exited {self.proc.returncode}")
        left = self.sweep()
        if left:
            self.log.note(f"killed what libvirtd left in its namespace: {left}")
        self.collect_logs()
        if self in _RUNNING:
            _RUNNING.remove(self)
        self.proc = None

    def sweep(self, timeout: float = 30.0) -> list[int]:
        """SIGKILL every process still in the daemon's mount namespace (its QEMUs)."""
        if self.namespace is None:
            return []
        pids = processes_in(self.namespace)
        fds = []
        for pid in pids:
            fd = waiting.pidfd(pid)  # before the kill: the pid cannot be reused under it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if fd is not None:
                fds.append(fd)
        # each pidfd becomes readable when its process has exited: wait for all of them
        deadline = time.monotonic() + timeout
        try:
            while fds and time.monotonic() < deadline:
                ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
                for fd in ready:
                    fds.remove(fd)
                    os.close(fd)
        finally:
            for fd in fds:
                os.close(fd)
        if still := processes_in(self.namespace):
            raise DaemonError(f"{self.label}: processes {still} survive SIGKILL")
        return pids

    def collect_logs(self) -> None:
        """libvirtd's log and each domain's QEMU log into the test directory."""
        logs = self.ws / "log"
        if not logs.is_dir():
            return
        for path in logs.rglob("*.log"):
            dest = self.logdir / ("libvirt-" + "-".join(path.relative_to(logs).parts))
            shutil.copyfile(path, dest)

    def __enter__(self) -> Virsh:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

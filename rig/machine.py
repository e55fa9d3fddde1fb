"""One context-managed QEMU process, started from an argument list (never a shell string).

    with VM(build, guest, workdir, disk=disk, accel="tcg") as vm:     # cold boot
        vm.console.wait_for(READY)
    with VM(build, guest, workdir, disk=disk, incoming=state_file) as vm:  # fast start

Like qemu.machine.QEMUMachine: launch failures carry the command line and QEMU's output;
shutdown asks `quit` over QMP, then kills; everything is cleaned up in __exit__. The test
directory keeps cmdline.txt, qemu.log (QEMU's stdout/stderr), console.log, qmp.log, hmp.log.

The VM configuration (MachineProfile) is data. A fast-started VM must use exactly the same
profile as the VM whose state was saved; ``MachineProfile.key()`` names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.core.config import FIRMWARE_DIRS

from . import commands, procs, waiting
from .builds import QemuBuild
from .console import Console
from .errors import BuildMissing, VMLaunchError, VMTimeout
from .hmp import HMP
from .qmp import QMP
from .waiting import Listener, ProcessExited

DISK_NODE = "disk0"  # qcow2 node of the main disk (block node name)
DISK_DEVICE = "vdisk0"  # its virtio-blk device id
DEFAULT_ACCEL = "tcg"
# the firmware files a pc machine with a -kernel guest loads, and the Debian packages
FIRMWARE = {"bios-256k.bin": "seabios", "linuxboot_dma.bin": "qemu-system-data"}


@dataclasses.dataclass(frozen=True)
class Nic:
    netdev_id: str
    netdev: str  # -netdev type and options after the id, e.g. "user,restrict=on"
    device_id: str
    mac: str


@dataclasses.dataclass(frozen=True)
class MachineProfile:
    """Everything that shapes the guest-visible machine (and so the migration stream)."""

    machine: str = "pc"
    memory: str = "256M"
    smp: int = 1
    cpu: str = "qemu64"
    firmware_dirs: tuple[str, ...] = FIRMWARE_DIRS
    nics: tuple[Nic, ...] = (
        Nic("net0", "user,restrict=on", "nic0", "52:54:00:12:34:01"),
        Nic("net1", "user,restrict=on", "nic1", "52:54:00:12:34:02"),
    )
    disk_format: str = "qcow2"

    def key(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:12]

    def check_firmware(self) -> None:
        self.firmware_files()

    def firmware_files(self) -> list[Path]:
        """The firmware files the machine loads, as QEMU finds them (the first -L directory
        that has each); BuildMissing naming the package when one is missing."""
        found = []
        for name, pkg in FIRMWARE.items():
            path = next((Path(d, name) for d in self.firmware_dirs if Path(d, name).is_file()),
                        None)
            if path is None:
                raise BuildMissing(
                    f"firmware {name} not found in {self.firmware_dirs}: apt-get install {pkg}"
                )
            found.append(path)
        return found


DEFAULT_PROFILE = MachineProfile()


def accel_from_env() -> str:
    return os.environ.get("QEMU_HARNESS_ACCEL", DEFAULT_ACCEL)


class VM:
    """A QEMU process with QMP, HMP and a console file, living in ``workdir``."""

    def __init__(
        self,
        build: QemuBuild,
        guest,
        workdir: Path,
        *,
        disk: Path | None,
        accel: str | None = None,
        profile: MachineProfile = DEFAULT_PROFILE,
        incoming: Path | None = None,
        name: str = "vm",
        extra_args: tuple[str, ...] = (),
        qmp_timeout: float = 120.0,
    ):
        self.build = build
        self.guest = guest
        self.workdir = Path(workdir)
        self.disk = disk
        self.accel = accel or accel_from_env()
        self.profile = profile
        self.incoming = incoming
        self.name = name
        self.extra_args = tuple(extra_args)
        self.qmp_timeout = qmp_timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_path = self.workdir / f"{name}-console.log"
        self.log_path = self.workdir / f"{name}-qemu.log"
        self.cmdline_path = self.workdir / f"{name}-cmdline.txt"
        # unix socket paths must be short (108 bytes): keep them out of the results tree.
        self._sockdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._logfile = None
        self.qmp: QMP | None = None
        self.hmp: HMP | None = None
        self._pidfd: int | None = None
        self._console_in: int | None = None  # the write end of the console's input FIFO
        self.console = Console(self.console_path, alive=self.is_running, directory=self.workdir,
                               exit_fd=lambda: self._pidfd)
        self.timings: dict[str, float] = {}
        self.exitcode: int | None = None

    # -- command line ---------------------------------------------------------------

    def args(self, qmp_sock: str = "QMP_SOCK", hmp_sock: str = "HMP_SOCK",
             console_in: str = "CONSOLE_IN") -> list[str]:
        p = self.profile
        args = [
            str(self.build.system),
            "-nodefaults",
            "-display",
            "none",
            "-vga",
            "none",
            "-machine",
            p.machine,
            "-accel",
            self.accel,
            "-cpu",
            p.cpu,
            "-m",
            p.memory,
            "-smp",
            str(p.smp),
            "-name",
            self.name,
        ]
        for d in p.firmware_dirs:
            args += ["-L", d]
        args += [
            "-kernel",
            str(self.guest.kernel),
            "-initrd",
            str(self.guest.initrd),
            "-append",
            self.guest.cmdline,
            # the console's output goes to a file; its input is a FIFO the rig writes a
            # line into to ask the guest for a heartbeat at once (heartbeat())
            "-chardev",
            f"file,id=serial0,path={self.console_path},input-path={console_in}",
            "-serial",
            "chardev:serial0",
            # the rig listens on both sockets and QEMU connects (client chardevs), as
            # python/qemu/machine does: no connect retries, and QEMU's exit is seen at once
            "-chardev",
            f"socket,id=qmp0,path={qmp_sock}",
            "-mon",
            "chardev=qmp0,mode=control",
            "-chardev",
            f"socket,id=hmp0,path={hmp_sock}",
            "-mon",
            "chardev=hmp0,mode=readline",
        ]
        if self.disk is not None:
            args += [
                "-blockdev",
                f"driver=file,filename={self.disk},node-name={DISK_NODE}-file",
                "-blockdev",
                f"driver={p.disk_format},file={DISK_NODE}-file,node-name={DISK_NODE}",
                "-device",
                f"virtio-blk-pci,drive={DISK_NODE},id={DISK_DEVICE}",
            ]
        for nic in p.nics:
            args += [
                "-netdev",
                f"{nic.netdev.split(',')[0]},id={nic.netdev_id}"
                + "".join("," + o for o in nic.netdev.split(",")[1:]),
                "-device",
                f"virtio-net-pci,netdev={nic.netdev_id},id={nic.device_id},mac={nic.mac},romfile=",
            ]
        if self.incoming is not None:
            args += ["-incoming", "defer"]
        return args + list(self.extra_args)

    # -- lifecycle ------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def launch(self) -> VM:
        self.profile.check_firmware()
        self._sockdir = Path(tempfile.mkdtemp(prefix="qh-", dir="/tmp"))
        qmp_sock, hmp_sock = str(self._sockdir / "qmp"), str(self._sockdir / "hmp")
        console_in = self._sockdir / "console-in"
        os.mkfifo(console_in)
        # opened read-write, so that neither QEMU's open (read-only) blocks nor its reads
        # ever see an end of file; non-blocking: a kick never waits on a full pipe
        self._console_in = os.open(console_in, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        listeners = {"QMP": Listener(qmp_sock), "HMP": Listener(hmp_sock)}
        try:
            return self._launch(qmp_sock, hmp_sock, str(console_in), listeners)
        finally:
            for listener in listeners.values():
                listener.close()

    def _accept(self, listeners: dict[str, Listener], which: str, timeout: float = 30.0):
        try:
            return listeners[which].accept(timeout, self._pidfd)
        except ProcessExited:
            self._proc.wait()
            raise VMLaunchError(
                f"QEMU exited ({self._proc.returncode}) before its {which} monitor connected.\n"
                f"command: {self.cmdline_path.read_text().strip()}\noutput:\n{self.log_tail()}",
                self.workdir,
            ) from None
        except TimeoutError:
            raise VMLaunchError(
                f"QEMU's {which} monitor did not connect in {timeout}s\n{self.log_tail()}",
                self.workdir,
            ) from None

    def _launch(self, qmp_sock: str, hmp_sock: str, console_in: str,
                listeners: dict[str, Listener]) -> VM:
        args = self.args(qmp_sock, hmp_sock, console_in)
        self.cmdline_path.write_text(shlex.join(args) + "\n")
        self._logfile = open(self.log_path, "ab")
        self._logfile.write(f"$ {shlex.join(args)}\n".encode())
        self._logfile.flush()
        t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._logfile,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        except OSError as exc:
            raise VMLaunchError(f"cannot run {args[0]}: {exc}", self.workdir) from exc
        procs.register(self._proc, f"{self.name} in {self.workdir}", cleanup=self._remove_sockdir)
        self._pidfd = waiting.pidfd(self._proc.pid)
        try:
            self.qmp = QMP(
                self._accept(listeners, "QMP"), self.workdir / f"{self.name}-qmp.log",
                timeout=self.qmp_timeout,
            )
            self.qmp.connect()
            self.hmp = HMP(hmp_sock, self.workdir / f"{self.name}-hmp.log")
            self.hmp.connect(sock=self._accept(listeners, "HMP"))
            self.timings["monitors"] = time.monotonic() - t0
            if self.incoming is not None:
                self._migrate_in()
                self.timings["incoming"] = time.monotonic() - t0
        except BaseException:
            self.shutdown()
            raise
        return self

    def _migrate_in(self, timeout: float = 120.0) -> None:
        assert self.qmp is not None and self.incoming is not None
        self._migration_events()
        self.qmp.cmd("migrate-incoming", uri=f"file:{self.incoming}")
        self.wait_migration(timeout)
        # A stream saved from a running guest is running by the time MIGRATION says
        # completed; one saved from a paused guest (the booted state: stopped right after a
        # heartbeat, so that its next one starts after RESUME) arrives paused: cont starts it
        if self.qmp.cmd("query-status")["status"] != "running":
            self.qmp.discard_events(QMP.event("RESUME"))
            self.qmp.cmd("cont")
            self.qmp.wait_event(QMP.event("RESUME"), timeout, "RESUME after incoming migration")

    def _migration_events(self) -> None:
        """Before a migration: MIGRATION events on (so that it is waited for, never polled;
        not at launch, since a -preconfig QEMU refuses the command), stale ones dropped."""
        self.qmp.cmd("migrate-set-capabilities",
                     capabilities=[{"capability": "events", "state": True}])
        self.qmp.discard_events(QMP.event("MIGRATION"))

    def wait_migration(self, timeout: float = 120.0) -> dict:
        """Wait for the MIGRATION event that ends the current migration; its query-migrate."""
        assert self.qmp is not None
        ends = ("completed", "failed", "cancelled")
        try:
            ev = self.qmp.wait_event(
                lambda e: e.get("event") == "MIGRATION" and e["data"].get("status") in ends,
                timeout, "MIGRATION completed/failed/cancelled")
        except VMTimeout:
            info = self.qmp.cmd("query-migrate")
            raise VMTimeout(f"migration still {info.get('status')} after {timeout}s",
                            self.workdir) from None
        info = self.qmp.cmd("query-migrate")
        if ev["data"]["status"] != "completed":
            raise VMLaunchError(
                f"migration {ev['data']['status']}: {info.get('error-desc', info)}\n"
                f"{self.log_tail()}",
                self.workdir,
            )
        return info

    def save_state(self, path: Path, timeout: float = 300.0) -> dict:
        """Migrate the running VM into ``path`` (a `file:` stream); the VM ends paused."""
        assert self.qmp is not None
        self._migration_events()
        self.qmp.cmd("migrate", uri=f"file:{path}")
        return self.wait_migration(timeout)

    def log_tail(self, n: int = 30) -> str:
        if self._logfile:
            self._logfile.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def shutdown(self, timeout: float = 20.0) -> int | None:
        """quit over QMP, wait; kill if QEMU does not exit. Always closes everything."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                if self.qmp is not None:
                    self.qmp.cmd_raw("quit")
            except Exception:  # noqa: BLE001 - QMP may be gone; kill below
                pass
            if not waiting.wait_exit(self._proc, self._pidfd, timeout):
                self._note("QEMU did not quit in time; killed")
                self._proc.kill()
                self._proc.wait(timeout=30)
        try:
            for client in (self.hmp, self.qmp, self.console):
                if client is not None:
                    try:
                        client.close()
                    except Exception as exc:  # noqa: BLE001 - keep cleaning up
                        self._note(f"closing {type(client).__name__} failed: {exc!r}")
        finally:
            self.hmp = self.qmp = None
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            if self._console_in is not None:
                os.close(self._console_in)
                self._console_in = None
            if self._logfile:
                self._logfile.close()
                self._logfile = None
            self._remove_sockdir()
        if self._proc is not None:
            self.exitcode = self._proc.returncode
        return self.exitcode

    def _remove_sockdir(self) -> None:
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def _note(self, message: str) -> None:
        with open(self.log_path, "ab") as f:
            f.write(f"[rig: {message}]\n".encode())

    def __enter__(self) -> VM:
        return self.launch()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- guest helpers ----------------------------------------------------------------

    def heartbeat(self, timeout: float = 30.0) -> int:
        """The guest's next heartbeat, asked for now: a line on the console's input cuts the
        guest's wait between two heartbeats short (images/init.sh), so this returns as soon
        as the guest runs, not a period later. The counter of the first `COUNTER n` line
        printed after the call (a periodic one that comes first counts as well)."""
        assert self._console_in is not None, "VM not launched"
        since = self.console.mark()
        os.write(self._console_in, b"\n")
        return self.console.wait_counter(since=since, timeout=timeout)

    def read_disk(self, offset: int = 0, length: int = 32, node: str = DISK_NODE) -> bytes:
        """Read bytes of the guest disk as the image file holds them.

        QEMU flushes the node first (HMP qemu-io "flush"), then the build's qemu-io reads the
        image read-only with force-share (-U). Read while the VM is stopped for exact values.
        """
        assert self.qmp is not None and self.disk is not None
        flushed = self.qmp.hmp(f'qemu-io {node} "flush"')
        if flushed.strip():
            raise VMTimeout(f"flush of {node} failed: {flushed}", self.workdir)
        args = [
            str(self.build.io),
            "-r",
            "-U",
            "-f",
            self.profile.disk_format,
            str(self.disk),
            "-c",
            f"read -v {offset} {length}",
        ]
        with open(self.log_path, "ab") as f:
            f.write(f"[rig] $ {shlex.join(args)}\n".encode())
        proc = commands.run(args, timeout=120)
        out = proc.output
        if proc.returncode != 0:
            raise VMTimeout(f"{shlex.join(args)} failed ({proc.returncode}):\n{out}", self.workdir)
        data = bytearray()
        for line in out.splitlines():
            head, sep, rest = line.partition(":")
            if (
                not sep
                or not all(c in "0123456789abcdef" for c in head.strip())
                or not head.strip()
            ):
                continue
            for tok in rest.split()[:16]:
                if len(tok) == 2 and all(c in "0123456789abcdef" for c in tok):
                    data.append(int(tok, 16))
                else:
                    break
        if len(data) != length:
            raise VMTimeout(
                f"qemu-io read returned {len(data)} of {length} bytes:\n{out}", self.workdir
            )
        return bytes(data)

    def disk_counter(self) -> int | None:
        """The counter the guest last wrote to sector 0 of its disk (None if never written)."""
        m = re.match(rb"COUNTER (\d+)\n", self.read_disk(0, 32))
        return int(m.group(1)) if m else None

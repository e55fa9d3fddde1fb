"""qemu-system-x86_64 without a guest (machine pc, TCG) on one qcow2 disk: savevm (HMP
through QMP) and snapshot-save (a QMP job), killed with SIGKILL at a chosen moment.

Guest RAM is filled from a file of random bytes (`-device loader`), so that the VM state
has something to write and a save takes long enough to be interrupted in every phase:
RAM, the device state, the snapshot table, the header and the current-snapshot record.

The QMP client is the rig's (rig/qmp.py): the harness listens, QEMU connects,
and a job is waited for on its JOB_STATUS_CHANGE events, never by polling query-jobs.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rig import waiting
from rig.errors import VMTimeout
from rig.qmp import QMP

RAM_MB = 192
FILL_MB = 128  # random bytes loaded into guest RAM at 1 MiB
FILL_AT = 0x100000
KINDS = ("savevm", "snapshot-save")


class VMError(RuntimeError):
    pass


def fill_file(path: Path, seed: int, size: int = FILL_MB << 20) -> Path:
    if not path.exists() or path.stat().st_size != size:
        rnd = random.Random(seed)
        path.write_bytes(rnd.randbytes(size))
    return path


@dataclass
class VM:
    system: str
    image: Path
    fill: Path | None  # None: no RAM fill (small VM state)
    work: Path
    proc: subprocess.Popen | None = None
    qmp: QMP | None = None
    disk: str | None = None  # a -blockdev for node disk0 instead of the plain qcow2 one
    more_disks: tuple[str, ...] = ()  # -blockdevs for nodes disk1, disk2, ... (a device each)
    ram_mb: int = RAM_MB
    bios: Path | None = None  # a firmware image instead of SeaBIOS (vmops.stub_bios)
    paused: bool = True  # -S: the CPUs never run
    pidfd: int | None = None
    _sockdir: Path | None = field(default=None, init=False, repr=False)

    @property
    def sockdir(self) -> Path:
        """Where the monitor sockets go: a short private directory (a socket's path may
        not exceed 107 bytes, and test directories can be deep), removed at kill/quit."""
        if self._sockdir is None:
            self._sockdir = Path(tempfile.mkdtemp(prefix="qrel-"))
        return self._sockdir

    @property
    def hmp_path(self) -> Path:
        return self.sockdir / "hmp.sock"

    def argv(self, sock: Path) -> list[str]:
        return [self.system, "-nodefaults", "-no-user-config", "-machine", "pc",
                "-accel", "tcg", "-display", "none", "-m", str(self.ram_mb),
                *(("-S",) if self.paused else ()),
                *(("-bios", str(self.bios)) if self.bios else ()),
                "-chardev", f"socket,id=mon,path={sock}", "-mon", "chardev=mon,mode=control",
                # a second, readline monitor: savevm is typed there and not waited for
                "-chardev", f"socket,id=hmp,path={self.hmp_path},server=on,wait=off",
                "-mon", "chardev=hmp,mode=readline",
                *(("-blockdev", self.disk) if self.disk else
                  ("-blockdev", f"driver=file,filename={self.image},node-name=file0",
                   "-blockdev", "driver=qcow2,file=file0,node-name=disk0")),
                "-device", "virtio-blk-pci,drive=disk0",
                *(arg for i, d in enumerate(self.more_disks, 1)
                  for arg in ("-blockdev", d, "-device", f"virtio-blk-pci,drive=disk{i}")),
                *(("-device", f"loader,file={self.fill},addr={FILL_AT:#x},force-raw=on")
                  if self.fill else ())]

    def launch(self, timeout: float = 30) -> VM:
        """Start QEMU; its QMP chardev connects to a socket the harness listens on."""
        sock = self.sockdir / "qmp.sock"
        sock.unlink(missing_ok=True)
        listener = waiting.Listener(sock)
        try:
            log = open(self.work / "qemu.log", "ab")
            log.write(f"$ {shlex.join(self.argv(sock))}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(sock), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.pidfd = waiting.pidfd(self.proc.pid)
            try:
                conn = listener.accept(timeout, self.pidfd)
                self.qmp = QMP(conn, self.work / "qmp.log", timeout=timeout)
                self.qmp.connect()
            except (waiting.ProcessExited, TimeoutError, OSError) as exc:
                self.kill()
                raise VMError(f"QEMU did not connect to QMP ({type(exc).__name__}: {exc}); "
                              f"exit {self.proc.returncode} (log: {self.work}/qemu.log)")
        finally:
            listener.close()
            sock.unlink(missing_ok=True)
        return self

    def cmd(self, name: str, **args) -> dict:
        """The whole response (``return`` or ``error``)."""
        return self.qmp.cmd_raw(name, **args)

    def hmp(self, line: str) -> str:
        resp = self.cmd("human-monitor-command", **{"command-line": line})
        if "error" in resp:
            raise VMError(f"HMP {line}: {resp['error']}")
        return resp["return"]

    def status(self) -> str:
        return self.cmd("query-status")["return"]["status"]

    def start_job(self, command: str, job: str, **args) -> None:
        """Start a job command (its stale events forgotten first, so that wait_job cannot
        take one of an earlier job of the same id)."""
        self.qmp.discard_events(QMP.event("JOB_STATUS_CHANGE", id=job))
        resp = self.cmd(command, **{"job-id": job, **args})
        if "error" in resp:
            raise VMError(f"{command}: {resp['error']}")

    def wait_job(self, job: str, timeout: float = 120) -> str:
        """Wait for the job's JOB_STATUS_CHANGE to "concluded" (blocking on the QMP socket),
        dismiss it, return its error ('' if none)."""
        try:
            self.qmp.wait_event(QMP.event("JOB_STATUS_CHANGE", id=job, status="concluded"),
                                timeout, f"JOB_STATUS_CHANGE concluded of job {job}")
        except VMTimeout as exc:
            raise VMError(f"job {job} did not conclude: {exc}") from None
        mine = next((j for j in self.cmd("query-jobs").get("return", []) if j["id"] == job),
                    None)
        if mine is None:
            raise VMError(f"job {job} is gone")
        self.cmd("job-dismiss", id=job)
        return mine.get("error", "")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self._sockdir is not None and (self.proc is None or self.proc.poll() is not None):
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def quit(self) -> None:
        """quit, waited for on the process's pidfd; SIGKILL if it does not exit."""
        try:
            self.cmd("quit")
        except Exception:  # noqa: BLE001 - QEMU may close the socket before it answers
            pass
        if self.proc is not None:
            waiting.wait_exit(self.proc, self.pidfd, 30)
        self.kill()


def start_save(vm: VM, kind: str, tag: str) -> socket.socket | None:
    """Start a save without waiting for it: savevm typed on the readline monitor (the
    returned socket, to be closed once QEMU is gone), snapshot-save as a job."""
    if kind == "savevm":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(vm.hmp_path))
        sock.sendall(f"savevm {tag}\n".encode())
        return sock
    vm.start_job("snapshot-save", "save", tag=tag, vmstate="disk0", devices=["disk0"])
    return None


def timed_save(vm: VM, kind: str, tag: str) -> float:
    """An uninterrupted save: how long it takes (the kill points are drawn from it)."""
    t0 = time.monotonic()
    if kind == "savevm":
        out = vm.hmp(f"savevm {tag}")
        if out.strip():
            raise VMError(f"savevm {tag}: {out.strip()}")
    else:
        start_save(vm, kind, tag)
        err = vm.wait_job("save")
        if err:
            raise VMError(f"snapshot-save {tag}: {err}")
    return time.monotonic() - t0

"""qemu-system-x86_64 without a guest (machine pc, TCG, stopped) on one qcow2 disk: savevm
(HMP through QMP) and snapshot-save (a QMP job), killed with SIGKILL at a chosen moment.

Guest RAM is filled from a file of random bytes (`-device loader`), so that the VM state
has something to write and a save takes long enough to be interrupted in every phase:
RAM, the device state, the snapshot table, the header and the current-snapshot record.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

RAM_MB = 192
FILL_MB = 128  # random bytes loaded into guest RAM at 1 MiB
KINDS = ("savevm", "snapshot-save")


class VMError(RuntimeError):
    pass


def fill_file(path: Path, seed: int) -> Path:
    if not path.exists() or path.stat().st_size != FILL_MB << 20:
        rnd = random.Random(seed)
        path.write_bytes(rnd.randbytes(FILL_MB << 20))
    return path


@dataclass
class VM:
    system: str
    image: Path
    fill: Path | None  # None: no RAM fill (small VM state)
    work: Path
    proc: subprocess.Popen | None = None
    qmp: QEMUMonitorProtocol | None = None
    disk: str | None = None  # a -blockdev for node disk0 instead of the plain qcow2 one

    @property
    def hmp_path(self) -> Path:
        return self.work / f"hmp-{os.getpid()}.sock"

    def argv(self, sock: Path) -> list[str]:
        return [self.system, "-nodefaults", "-no-user-config", "-machine", "pc",
                "-accel", "tcg", "-display", "none", "-m", str(RAM_MB), "-S",
                "-chardev", f"socket,id=mon,path={sock}", "-mon", "chardev=mon,mode=control",
                # a second, readline monitor: savevm is typed there and not waited for
                "-chardev", f"socket,id=hmp,path={self.hmp_path},server=on,wait=off",
                "-mon", "chardev=hmp,mode=readline",
                *(("-blockdev", self.disk) if self.disk else
                  ("-blockdev", f"driver=file,filename={self.image},node-name=file0",
                   "-blockdev", "driver=qcow2,file=file0,node-name=disk0")),
                "-device", "virtio-blk-pci,drive=disk0",
                *(("-device", f"loader,file={self.fill},addr=0x100000,force-raw=on")
                  if self.fill else ())]

    def launch(self, timeout: float = 30) -> VM:
        sock = self.work / f"qmp-{os.getpid()}.sock"
        sock.unlink(missing_ok=True)
        self.qmp = QEMUMonitorProtocol(str(sock), server=True)
        log = open(self.work / "qemu.log", "ab")
        log.write(f"$ {shlex.join(self.argv(sock))}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv(sock), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        try:
            self.qmp.accept(timeout)
        except Exception as exc:
            self.kill()
            raise VMError(f"QEMU did not connect to QMP: {exc} (log: {self.work}/qemu.log)")
        self.qmp.settimeout(timeout)
        return self

    def cmd(self, name: str, **args) -> dict:
        return self.qmp.cmd_obj({"execute": name, **({"arguments": args} if args else {})})

    def hmp(self, line: str) -> str:
        resp = self.cmd("human-monitor-command", **{"command-line": line})
        if "error" in resp:
            raise VMError(f"HMP {line}: {resp['error']}")
        return resp["return"]

    def wait_job(self, job: str, timeout: float = 120) -> str:
        """Wait for the job to conclude, return its error ('' if none): query-jobs after
        each event (JOB_STATUS_CHANGE), at least every second."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            jobs = self.cmd("query-jobs").get("return", [])
            mine = next((j for j in jobs if j["id"] == job), None)
            if mine is None:
                raise VMError(f"job {job} is gone")
            if mine["status"] == "concluded":
                self.cmd("job-dismiss", id=job)
                return mine.get("error", "")
            try:
                self.qmp.get_events(wait=1.0)
            except Exception:  # noqa: BLE001 - no event within the second: ask again
                pass
        raise VMError(f"job {job} did not conclude in {timeout}s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.qmp:
            try:
                self.qmp.close()
            except Exception:  # noqa: BLE001 - the peer is gone
                pass

    def quit(self) -> None:
        try:
            self.cmd("quit")
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - one shutdown path: kill what did not quit
            pass
        self.kill()


def start_save(vm: VM, kind: str, tag: str) -> socket.socket | None:
    """Start a save without waiting for it: savevm typed on the readline monitor (the
    returned socket, to be closed once QEMU is gone), snapshot-save as a job."""
    if kind == "savevm":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(vm.hmp_path))
        sock.sendall(f"savevm {tag}\n".encode())
        return sock
    resp = vm.cmd("snapshot-save", **{"job-id": "save", "tag": tag, "vmstate": "disk0",
                                      "devices": ["disk0"]})
    if "error" in resp:
        raise VMError(f"snapshot-save: {resp['error']}")
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


def blklogwrites_blockdev(image: Path, log: Path) -> str:
    return ("driver=qcow2,node-name=disk0,file.driver=blklogwrites,file.file.driver=file,"
            f"file.file.filename={image},file.log.driver=file,file.log.filename={log},"
            "file.log-sector-size=512,file.log-super-update-interval=1")


def run_vm_op(system: str, image: Path, log: Path, steps: tuple, work: Path):
    """The steps (("hmp", LINE) or ("job", COMMAND, ARGS)) in a VM whose disk is ``image``
    on blklogwrites, then quit. An observe.Result: exit 0, or 1 with the first error."""
    from .observe import Result
    t0 = time.monotonic()
    vm = VM(system, image, None, work, disk=blklogwrites_blockdev(image, log))
    argv = vm.argv(work / "qmp.sock")
    try:
        vm.launch()
        for step in steps:
            if step[0] == "hmp":
                out = vm.hmp(step[1]).strip()
                if out:
                    raise VMError(f"HMP {step[1]}: {out}")
            else:
                resp = vm.cmd(step[1], **{"job-id": "op", **step[2]})
                if "error" in resp:
                    raise VMError(f"{step[1]}: {resp['error']}")
                err = vm.wait_job("op")
                if err:
                    raise VMError(f"{step[1]}: {err}")
    except VMError as exc:
        vm.quit()
        return Result(argv, 1, "", str(exc), time.monotonic() - t0)
    vm.quit()
    code = vm.proc.returncode if vm.proc else 0
    return Result(argv, code if code is not None else 0, "", "", time.monotonic() - t0)

"""rig/waiting.py and the rig's event waits, without QEMU: real processes, files
and sockets, each wait proven to return on the event and not before."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from rig import waiting
from rig.console import Console
from rig.errors import GuestFailure, VMTimeout


def _later(seconds: float, fn) -> threading.Timer:
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def test_file_watch_wakes_on_write_not_on_other_files(tmp_path):
    target = tmp_path / "console.log"
    watch = waiting.FileWatch(target)  # before the file exists
    (tmp_path / "other.log").write_text("noise")
    assert watch.wait(0.2) is False
    _later(0.1, lambda: target.write_text("hello"))
    start = time.monotonic()
    assert watch.wait(10) is True
    assert time.monotonic() - start < 5
    watch.close()


def test_file_watch_raises_when_the_process_exits(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    fd = waiting.pidfd(proc.pid)
    assert fd is not None
    watch = waiting.FileWatch(tmp_path / "never")
    with pytest.raises(waiting.ProcessExited):
        watch.wait(30, fd)
    assert waiting.wait_exit(proc, fd, 5) and proc.returncode == 0


def test_wait_exit_times_out_then_sees_the_exit():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    fd = waiting.pidfd(proc.pid)
    assert waiting.wait_exit(proc, fd, 0.1) is False
    proc.stdin.close()
    assert waiting.wait_exit(proc, fd, 10) is True and proc.returncode == 0


def test_listener_accepts_a_client_and_notices_an_exit(tmp_path):
    lst = waiting.Listener(tmp_path / "sock")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "sock"))
    conn = lst.accept(5)
    client.sendall(b"x")
    assert conn.recv(1) == b"x"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    with pytest.raises(waiting.ProcessExited):
        lst.accept(30, waiting.pidfd(proc.pid))
    proc.wait()
    with pytest.raises(TimeoutError):
        lst.accept(0.1)
    lst.close()


def test_reserved_ports_keep_others_out_but_let_a_reuser_bind():
    with waiting.reserved_ports(2) as ports:
        assert len(set(ports)) == 2
        for port in ports:
            plain = socket.socket()
            with pytest.raises(OSError):
                plain.bind(("127.0.0.1", port))
            plain.close()
            assert waiting.port_is_bindable_by_reuser(port)
    with waiting.reserved_ports(1, socket.SOCK_DGRAM) as (udp,):
        assert waiting.port_is_bindable_by_reuser(udp, socket.SOCK_DGRAM)


def test_console_wait_returns_on_the_write_and_fails_on_exit(tmp_path):
    path = tmp_path / "vm-console.log"
    path.write_text("booting\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    fd = waiting.pidfd(proc.pid)
    console = Console(path, alive=lambda: proc.poll() is None, exit_fd=lambda: fd)
    mark = console.mark()
    _later(0.2, lambda: path.open("a").write("COUNTER 1\nCOUNTER 2\n"))
    assert console.wait_counter(at_least=2, since=mark, timeout=10) == 2
    with pytest.raises(VMTimeout):
        console.wait_for("never", timeout=0.2)
    _later(0.1, proc.stdin.close)
    start = time.monotonic()
    with pytest.raises(GuestFailure, match="QEMU exited"):
        console.wait_for("never", timeout=30)
    assert time.monotonic() - start < 10
    proc.wait()
    console.close()


def test_console_reads_incrementally_and_restarts_when_cut(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"abc\r\n")
    console = Console(path)
    assert console.text() == "abc\n" and console.mark() == 5
    with path.open("ab") as f:
        f.write(b"def\n")
    assert console.text(5) == "def\n"
    path.write_bytes(b"x\n")  # QEMU truncates the file of a new VM
    assert console.text() == "x\n"


def _fake_qemu_qmp(sock: socket.socket, events_after: dict[str, list[dict]],
                   replies: dict[str, object]) -> threading.Thread:
    """A QMP server on ``sock``: greeting, then a reply per command (``replies``) followed by
    the events ``events_after[command]`` (sent 0.2 s later, as a job's would be)."""
    import json

    def send(obj):
        sock.sendall(json.dumps(obj).encode() + b"\n")

    def serve():
        send({"QMP": {"version": {"qemu": {"major": 10, "minor": 2, "micro": 2},
                                  "package": ""}, "capabilities": []}})
        decoder, buf = json.JSONDecoder(), ""
        while data := sock.recv(65536):  # (clients send JSON objects, not lines)
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                name = msg["execute"]
                reply = {"return": replies.get(name, {})}
                if "id" in msg:
                    reply["id"] = msg["id"]
                send(reply)
                if name in events_after:
                    time.sleep(0.2)  # (the fake QEMU's job runs; the client must not poll)
                    for ev in events_after[name]:
                        send({**ev, "timestamp": {"seconds": 0, "microseconds": 0}})

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_run_job_waits_for_the_concluded_event(tmp_path):
    from rig.qmp import QMP

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    change = [{"event": "JOB_STATUS_CHANGE", "data": {"id": "j1", "status": s}}
              for s in ("created", "running", "concluded")]
    _fake_qemu_qmp(theirs, {"snapshot-save": change},
                   {"query-jobs": [{"id": "j1", "status": "concluded", "type": "snapshot-save"}]})
    qmp = QMP(ours, tmp_path / "qmp.log", timeout=10)
    qmp.connect()
    job = qmp.run_job("snapshot-save", "j1", timeout=10, tag="t")
    assert job["status"] == "concluded"
    log = (tmp_path / "qmp.log").read_text()
    assert log.count('"query-jobs"') == 1, "run_job polled query-jobs"
    assert log.index('"concluded"') < log.index('"query-jobs"')
    assert [e["data"]["status"] for e in qmp.seen_events] == ["created", "running", "concluded"]
    with pytest.raises(VMTimeout):
        qmp.wait_event(qmp.event("DEVICE_DELETED", device="x"), 0.3, "DEVICE_DELETED")
    qmp.close()


def test_reliability_vm_wait_job_waits_for_the_concluded_event(tmp_path):
    """tests/reliability/lib/vmkill.VM.wait_job: on the rig's QMP client, blocking on
    JOB_STATUS_CHANGE events; query-jobs once, after "concluded", to read the error."""
    from rig.qmp import QMP
    from rig.reliability import vmkill

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    change = [{"event": "JOB_STATUS_CHANGE", "data": {"id": "save", "status": s}}
              for s in ("created", "running", "concluded")]
    _fake_qemu_qmp(theirs, {"snapshot-save": change},
                   {"query-jobs": [{"id": "save", "status": "concluded",
                                    "type": "snapshot-save", "error": "No space left"}]})
    vm = vmkill.VM("qemu-system-x86_64", tmp_path / "x.qcow2", None, tmp_path)
    vm.qmp = QMP(ours, tmp_path / "qmp.log", timeout=10)
    vm.qmp.connect()
    start = time.monotonic()
    vmkill.start_save(vm, "snapshot-save", "t")
    assert vm.wait_job("save", timeout=10) == "No space left"
    assert time.monotonic() - start < 5
    log = (tmp_path / "qmp.log").read_text()
    assert log.count('"query-jobs"') == 1, "wait_job polled query-jobs"
    assert log.index('"concluded"') < log.index('"query-jobs"') < log.index('"job-dismiss"')
    # a job that never concludes: the wait ends at its timeout, with no query-jobs either
    with pytest.raises(vmkill.VMError, match="did not conclude"):
        vm.wait_job("other", timeout=0.3)
    assert (tmp_path / "qmp.log").read_text().count('"query-jobs"') == 1
    vm.qmp.close()


def test_heartbeat_asks_the_guest_and_takes_only_a_later_line(tmp_path):
    """VM.heartbeat writes a line to the console's input and returns the first counter the
    guest prints after that (a fake guest: a thread answering each line on the FIFO)."""
    import os

    from rig.machine import VM

    vm = VM(build=None, guest=None, workdir=tmp_path, disk=None)
    vm.console_path.write_text("HARNESS-READY\nCOUNTER 7\n")
    vm.console = Console(vm.console_path)
    read_end, vm._console_in = os.pipe()
    asked = []

    def guest():
        with os.fdopen(read_end, "rb") as f:
            for line in f:
                asked.append(line)
                with open(vm.console_path, "a") as console:
                    console.write(f"COUNTER {8 + len(asked) - 1}\n")

    answering = threading.Thread(target=guest)
    answering.start()
    try:
        assert vm.heartbeat(timeout=10) == 8, "the line printed before the call was taken"
        assert vm.heartbeat(timeout=10) == 9
        assert asked == [b"\n", b"\n"]
    finally:
        os.close(vm._console_in)
        answering.join(10)


def test_console_input_is_a_fifo_on_the_serial_chardev(tmp_path):
    from rig.machine import VM

    class Build:
        system = "qemu-system-x86_64"

    class Guest:
        kernel, initrd, cmdline = "vmlinuz", "initrd", "console=ttyS0"

    args = VM(Build(), Guest(), tmp_path, disk=None).args("q", "h", "/tmp/qh-x/console-in")
    serial = args[args.index("-serial") - 1]
    assert serial.startswith("file,id=serial0,") and serial.endswith(
        ",input-path=/tmp/qh-x/console-in")

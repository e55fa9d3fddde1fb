"""query-netdevs does not leak (the reverted 2021 query-netdev did): valgrind memcheck.

qemu-system-x86_64 -machine none (no guest: TCG under valgrind would be far too slow) runs
under `valgrind --leak-check=full`; over QMP it adds backends of several types (nested QAPI
options included), asks query-netdevs, deletes them, a few rounds, leaves some backends alive
for the exit path (net_cleanup) and quits. No "definitely lost" block may have a stack in the
net layer or in QAPI cloning. The valgrind log stays in the test directory (valgrind.log).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from rig import netdevs as nd
from rig import procs, waiting
from rig.machine import DEFAULT_PROFILE
from rig.qmp import QMP
from rig.waiting import Listener, ProcessExited

pytestmark = pytest.mark.series("query-netdevs")


def _inet(port: int) -> dict:
    return {"type": "inet", "host": "127.0.0.1", "port": str(port)}


def _connect(qmp_listener: Listener, proc: subprocess.Popen, fd, test_dir, timeout: float,
             log) -> QMP:
    """QEMU under valgrind connects to the rig's QMP socket: accept it (or learn that QEMU
    exited) without retrying."""
    try:
        sock = qmp_listener.accept(timeout, fd)
    except ProcessExited:
        proc.wait()
        raise AssertionError(f"QEMU under valgrind exited ({proc.returncode}):\n{log()}") from None
    except TimeoutError:
        raise AssertionError(f"QMP not up under valgrind after {timeout}s:\n{log()}") from None
    qmp = QMP(sock, test_dir / "vg-qmp.log", timeout=120)
    qmp.connect()
    return qmp


@pytest.mark.timeout(1800)  # QEMU under valgrind: minutes to start and to exit
@pytest.mark.parametrize("machine", ["none", "pc-paused"])
def test_query_netdevs_no_leak_under_valgrind(build, test_dir, machine, require, ports):
    """machine none: no guest at all. pc-paused: a PC whose CPU never runs (-S), so that a
    NIC can hold a backend that netdev_del removed; that backend outlives the list of net
    clients until exit, the case patch 0015 frees the configuration early for."""
    valgrind = require.tool("valgrind", package="valgrind")
    sockdir = tempfile.mkdtemp(prefix="qh-vg-", dir="/tmp")
    qmp_sock = os.path.join(sockdir, "qmp")
    vg_log = test_dir / "valgrind.log"
    out_log = test_dir / "vg-qemu.log"
    args = [
        valgrind,
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite",
        "--fullpath-after=",
        "--num-callers=40",
        f"--log-file={vg_log}",
        str(build.system),
        *(["-machine", "none"] if machine == "none" else
          ["-machine", "pc", "-S", *(a for d in DEFAULT_PROFILE.firmware_dirs for a in ("-L", d)),
           # a backend under a NIC at exit
           "-netdev", "user,id=withnic", "-device", "virtio-net-pci,netdev=withnic,romfile="]),
        "-nodefaults",
        "-display", "none",
        "-qmp", f"unix:{qmp_sock}",  # a client: the rig listens
        # backends from the command line, alive at exit: freed by net_cleanup()
        "-netdev", '{"type": "user", "id": "cl0", "hostname": "cmdline",'
                   ' "dnssearch": [{"str": "example.com"}]}',
        "-netdev", "hubport,id=clhp,hubid=3,netdev=cl0",
    ]  # fmt: skip
    (test_dir / "vg-cmdline.txt").write_text(shlex.join(args) + "\n")
    t0 = time.monotonic()
    listener = Listener(qmp_sock)
    inet = iter(ports(3))  # stream: 3 rounds x 1
    dgram = iter(ports(6, socket.SOCK_DGRAM))  # 3 rounds x (local, remote)
    with open(out_log, "wb") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=test_dir
        )
    procs.register(proc, f"valgrind qemu in {test_dir}")
    fd = waiting.pidfd(proc.pid)
    qmp = None
    try:
        qmp = _connect(listener, proc, fd, test_dir, 180,
                       lambda: out_log.read_text(errors="replace")[-2000:])
        listener.close()
        started = time.monotonic() - t0
        base = {n["id"] for n in qmp.cmd("query-netdevs")}
        assert base == {"cl0", "clhp"} | ({"withnic"} if machine != "none" else set()), base
        for _round in range(3):
            qmp.cmd("netdev_add", type="user", id="u1", hostname="h",
                    dnssearch=[{"str": "a.example"}, {"str": "b.example"}])  # fmt: skip
            qmp.cmd("netdev_add", type="hubport", id="hp1", hubid=1, netdev="u1")
            qmp.cmd("netdev_add", type="stream", id="st1", server=True, addr=_inet(next(inet)))
            qmp.cmd("netdev_add", type="dgram", id="dg1", local=_inet(next(dgram)),
                    remote=_inet(next(dgram)))
            qmp.hmp("netdev_add user,id=h1,hostname=hmp")
            nets = {n["id"]: n for n in qmp.cmd("query-netdevs")}
            assert set(nets) == base | {"u1", "hp1", "st1", "dg1", "h1"}, nets
            assert nets["u1"]["config"]["dnssearch"][1] == {"str": "b.example"}
            assert nets["hp1"]["peer-id"] == "u1"
            assert not nd.compare(list(nets.values()), qmp.hmp("info network"))
            for ident in ("dg1", "st1", "u1", "hp1", "h1"):  # u1 goes before its hub port
                qmp.cmd("netdev_del", id=ident)
                qmp.cmd("query-netdevs")
            assert {n["id"] for n in qmp.cmd("query-netdevs")} == base
        if machine != "none":
            # a backend deleted under its NIC: gone from the list, alive until the NIC goes
            qmp.cmd("netdev_add", type="user", id="under", hostname="nic-holds-me")
            qmp.cmd("device_add", driver="virtio-net-pci", netdev="under", id="holder",
                    romfile="")  # fmt: skip
            assert {n["id"]: n for n in qmp.cmd("query-netdevs")}["under"]["peer-id"] == "holder"
            qmp.cmd("netdev_del", id="under")
            assert "under" not in {n["id"] for n in qmp.cmd("query-netdevs")}
            if os.geteuid() == 0 and os.access("/dev/net/tun", os.R_OK | os.W_OK):
                # the same with a multiqueue backend (the config hangs off queue 0 only)
                qmp.cmd("netdev_add", type="tap", id="mq", ifname=f"qh{os.getpid() % 100000}v",
                        script="no", downscript="no", queues=2)  # fmt: skip
                qmp.cmd("device_add", driver="virtio-net-pci", netdev="mq", id="mqnic",
                        mq=True, vectors=6, romfile="")  # fmt: skip
                assert [n["id"] for n in qmp.cmd("query-netdevs")].count("mq") == 1
                qmp.cmd("netdev_del", id="mq")
        # added at run time and alive at exit
        qmp.cmd("netdev_add", type="user", id="left", hostname="at-exit")
        qmp.cmd("netdev_add", type="hubport", id="lefthp", hubid=1, netdev="left")
        qmp.cmd("query-netdevs")
    finally:
        listener.close()
        if proc.poll() is None and qmp is not None:
            try:
                qmp.cmd_raw("quit")  # also after a failure: exit cleanly, fast
            except Exception:  # noqa: BLE001 - QMP may be down; killed below
                pass
        if qmp is not None:
            qmp.close()
        if not waiting.wait_exit(proc, fd, 120):
            proc.kill()
            proc.wait(timeout=30)
        if fd is not None:
            os.close(fd)
        shutil.rmtree(sockdir, ignore_errors=True)
    (test_dir / "timings.json").write_text(
        f'{{"valgrind_start": {started:.1f}, "valgrind_total": {time.monotonic() - t0:.1f}}}\n'
    )
    assert proc.returncode == 0, f"QEMU under valgrind exited {proc.returncode}; see {vg_log}"
    text = vg_log.read_text(errors="replace")
    assert "ERROR SUMMARY" in text, f"valgrind did not finish its report: {vg_log}"
    records, summary = nd.parse_valgrind_leaks(text)
    assert "LEAK SUMMARY" not in text or "definitely" in summary, "unparsed LEAK SUMMARY"
    ours = [r for r in records if r.kind == "definitely" and r.mentions(nd.SERIES_LEAK_FRAMES)]
    assert not ours, (
        f"{len(ours)} definitely lost record(s) in net/ or QAPI clone code (see {vg_log}):\n"
        + "\n\n".join(
            f"{r.bytes} bytes in {r.blocks} blocks\n  " + "\n  ".join(r.stack) for r in ours
        )
    )

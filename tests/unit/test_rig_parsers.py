"""The real-guest rig's parsers, on outputs recorded from the builds (no QEMU needed).

Recordings live in tests/unit/data/rig/ (README.md there says where each comes from;
record.py re-records the monitor ones):
  iotests `check -tap` output        -> tests/qemu/test_iotests.parse_tap
  HMP readline bytes + transcripts   -> rig/hmp.clean and the HMP client (replayed through a
                                        fake monitor socket: echo stripping, error patterns)
  `info network` (+ query-netdevs)   -> rig/netdevs.parse_info_network / compare, and
                                        test_vm_monitors.parse_info_network
  `info snapshots`                   -> rig/snapshots.HMPSnapshots.tags
  the guest kernel's modules.dep     -> images/guest.module_load_order
  valgrind --leak-check=full logs    -> rig/netdevs.parse_valgrind_leaks
  guest console logs                 -> rig/console.Console counters / wait_for
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from images import guest as guest_mod
from rig import hmp as hmp_mod
from rig import netdevs as nd
from rig.console import Console
from rig.errors import HMPError
from rig.iotests import IOTESTS, parse_tap
from rig.snapshots import HMPSnapshots, parse_info_snapshots

DATA = Path(__file__).resolve().parent / "data" / "rig"
BUILDS = ("patched", "stock")

# -- recorded HMP conversations --------------------------------------------------------

_SENDS = re.compile(r"\n\[\d\d:\d\d:\d\d rig sends: (.*?)\]\n")
_SECTION = re.compile(r"^### (\S+)\n", re.M)
_TRANSCRIPT_CMD = re.compile(r"\(qemu\) (.*?)    \[\d\d:\d\d:\d\d\]\n(.*?)(?=\(qemu\) )", re.S)


def _sections(text: str) -> dict[str, str]:
    parts = _SECTION.split(text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def raw_conversations(build: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """scenario -> (banner as sent, [(command line, raw response up to and with the prompt)])."""
    out = {}
    for name, body in _sections((DATA / f"hmp-{build}.raw.log").read_text()).items():
        pieces = _SENDS.split(body)
        banner, rest = pieces[0], pieces[1:]
        pairs = [
            (ast.literal_eval(rest[i]), rest[i + 1].removesuffix("\n"))
            for i in range(0, len(rest), 2)
        ]
        out[name] = (banner, pairs)
    return out


def transcripts(build: str) -> dict[str, list[tuple[str, str]]]:
    """scenario -> [(command line, output as the HMP client returned it)]."""
    return {
        name: [(m.group(1), m.group(2).removesuffix("\n")) for m in _TRANSCRIPT_CMD.finditer(body)]
        for name, body in _sections((DATA / f"hmp-{build}.log").read_text()).items()
    }


def hmp_output(build: str, scenario: str, command: str, occurrence: int = -1) -> str:
    return [out for cmd, out in transcripts(build)[scenario] if cmd == command][occurrence]


def query_netdevs(build: str, scenario: str) -> list:
    return json.loads((DATA / f"qmp-{build}.json").read_text())[scenario]


# -- iotests TAP -------------------------------------------------------------------------

TAP_FILES = {
    # file: (expected failures, expected "not run")
    "iotests-patched.tap": (set(), set()),
    "iotests-stock-failures.tap": (
        {"060", "068", "153", "176", "201", "244", "267", "286", "qcow2-internal-snapshots"},
        set(),
    ),
    "iotests-stock-parallel.tap": ({"153"}, set()),  # check -j: results interleaved
    "iotests-patched-skip.tap": (set(), {"045", "077"}),
}


@pytest.mark.parametrize("name", sorted(TAP_FILES))
def test_parse_tap_recorded(name):
    text = (DATA / name).read_text()
    results = parse_tap(text)
    failures, not_run = TAP_FILES[name]
    assert {t for t, r in results.items() if r == "fail"} == failures
    assert {t for t, r in results.items() if r == "not run"} == not_run
    assert set(results.values()) <= {"pass", "fail", "not run"}
    # one result per test check announced, as many as the plan says
    plan = int(re.search(r"^1\.\.(\d+)$", text, re.M).group(1))
    running = re.findall(r"^# running qcow2 (\S+)$", text, re.M)
    assert len(results) == plan == len(running) and set(results) == set(running)


def test_parse_tap_full_runs_cover_the_rig_list():
    for name in ("iotests-patched.tap", "iotests-stock-failures.tap", "iotests-stock-parallel.tap"):
        assert set(parse_tap((DATA / name).read_text())) == set(IOTESTS), name


def test_parse_tap_ignores_header_and_directives():
    text = (DATA / "iotests-patched-skip.tap").read_text()
    header = text.split("1..", 1)[0]
    assert parse_tap(header) == {}  # "# QEMU -- ..." lines are not results
    assert parse_tap("ok qcow2 999 # TODO not yet\nnot ok qcow2 998 # TODO\n") == {
        "999": "pass",
        "998": "fail",
    }
    assert parse_tap("ok raw 001\nok qcow2\n") == {}  # other formats, no name


# -- HMP: clean() and the client on recorded bytes ----------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_recordings_line_up(build):
    raw, logs = raw_conversations(build), transcripts(build)
    assert set(raw) == set(logs) == {"default", "empty", "hubs", "under-nic", "snapshots"}
    for name in raw:
        assert [c for c, _ in raw[name][1]] == [c for c, _ in logs[name]], name


@pytest.mark.parametrize("build", BUILDS)
def test_clean_recorded_monitor_bytes(build):
    """clean() leaves no escape sequence or CR; after the echoed command line (redrawn per
    key: the last of its redraws is the command) comes exactly what the client returned."""
    logs = transcripts(build)
    for name, (banner, pairs) in raw_conversations(build).items():
        assert "\x1b" in "".join(r for _, r in pairs)  # the recordings do hold escapes
        assert (
            hmp_mod.clean(banner)
            == "QEMU 10.0.13 monitor - type 'help' for more information\n(qemu) "
        )
        for (command, raw), (_, expected) in zip(pairs, logs[name], strict=True):
            text = hmp_mod.clean(raw)
            assert "\x1b" not in text and "\r" not in text
            assert text.endswith(hmp_mod.PROMPT)
            echo, _, out = text.removesuffix(hmp_mod.PROMPT).partition("\n")
            assert echo.endswith(command)
            assert out.rstrip("\n") == expected, (name, command)


def test_clean_escape_forms():
    assert hmp_mod.clean("a\x1b[K\x1b[D\x1b[1;31mb\x1b[0m\r\n") == "ab\n"
    assert hmp_mod.clean("\x1b(B\x1b)0\x1b=\x1b>x\x1b[?25l") == "x"
    assert hmp_mod.clean("plain text\n") == "plain text\n"


class FakeMonitor:
    """A unix socket that answers like QEMU's readline monitor did: recorded bytes."""

    def __init__(self, banner: str, pairs: list[tuple[str, str]]):
        self.dir = tempfile.mkdtemp(prefix="qh-fake-", dir="/tmp")  # short socket path
        self.path = f"{self.dir}/hmp"
        self.banner, self.pairs = banner, list(pairs)
        self.received: list[str] = []
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(self.path)
        self._srv.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._srv.accept()
        with conn:
            conn.sendall(self.banner.encode())
            buf = b""
            for _command, response in self.pairs:
                while b"\r" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                line, _, buf = buf.partition(b"\r")
                self.received.append(line.decode())
                conn.sendall(response.encode())
            conn.recv(1)  # until the client closes

    def close(self) -> None:
        self._srv.close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("scenario", ["default", "hubs", "under-nic", "snapshots"])
def test_hmp_client_replays_recorded_conversation(build, scenario, tmp_path):
    """The HMP client, fed the recorded bytes, returns what it returned live; commands that
    failed live raise HMPError from cmd() and are accepted by cmd_error()."""
    banner, pairs = raw_conversations(build)[scenario]
    expected = transcripts(build)[scenario]
    fake = FakeMonitor(banner, pairs)
    client = hmp_mod.HMP(fake.path, tmp_path / "hmp.log", timeout=10)
    try:
        client.connect()
        assert client.banner.startswith("QEMU 10.0.13 monitor")
        for command, out in expected:
            failed = bool(re.search(r"^(Error: |unknown command: )", out, re.M))
            got = client.cmd_error(command) if failed else client.cmd(command)
            assert got == out, command
    finally:
        client.close()
        fake.close()
    assert fake.received == [c for c, _ in expected]


def test_hmp_cmd_raises_on_recorded_errors(tmp_path):
    banner, pairs = raw_conversations("patched")["default"]
    fake = FakeMonitor(banner, pairs)
    client = hmp_mod.HMP(fake.path, tmp_path / "hmp.log", timeout=10)
    try:
        client.connect()
        for command, _ in pairs:
            if command in ("netdev_del no-such-netdev", "no-such-command"):
                with pytest.raises(HMPError) as info:
                    client.cmd(command)
                assert command.split()[-1] in info.value.output
            else:
                client.cmd_unchecked(command)
    finally:
        client.close()
        fake.close()


# -- info network / query-netdevs --------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_parse_info_network_default_vm(build):
    clients = nd.parse_info_network(hmp_output(build, "default", "info network", 0))
    assert {n: (c.type, c.peer) for n, c in clients.items()} == {
        "nic0": ("nic", "net0"),
        "net0": ("user", "nic0"),
        "nic1": ("nic", "net1"),
        "net1": ("user", "nic1"),
    }
    assert clients["nic0"].info == "model=virtio-net-pci,macaddr=52:54:00:12:34:01"
    assert clients["net0"].info == "net=10.0.2.0,restrict=on"
    after_add = nd.backends_from_info(hmp_output(build, "default", "info network", 1))
    assert after_add["hot0"] == ("user", None)


@pytest.mark.parametrize("build", BUILDS)
def test_parse_info_network_hubs_sockets_nic_legacy(build):
    clients = nd.parse_info_network(hmp_output(build, "hubs", "info network"))
    legacy_user = next(n for n in clients if n.startswith("#net"))
    assert nd.backends_from_info(clients) == {
        "hub0port1": ("hubport", legacy_user),
        legacy_user: ("user", "hub0port1"),
        "hub0port0": ("hubport", "virtio-net-pci.1"),
        "hp2": ("hubport", None),
        "hp1": ("hubport", "hnic"),
        "hp0": ("hubport", "u0"),
        "u0": ("user", "hp0"),
        "sl": ("socket", None),
        "sc": ("socket", None),
        "lonely": ("user", None),
        "n0": ("user", "virtio-net-pci.0"),
    }
    assert {n: c.hub for n, c in clients.items() if c.type == "hubport"} == {
        "hub0port0": 0, "hub0port1": 0, "hp0": 1, "hp1": 1, "hp2": 1,
    }  # fmt: skip
    assert clients["u0"].filters == ["f0"]
    assert clients["hnic"].is_nic and clients["hnic"].peer == "hp1"
    assert clients["sl"].info.startswith("socket: connection from 127.0.0.1:")
    assert clients["sc"].info == "socket: connect to 127.0.0.1:47123"


@pytest.mark.parametrize("build", BUILDS)
def test_parse_info_network_empty_and_dead_peer(build):
    assert nd.parse_info_network(hmp_output(build, "empty", "info network")) == {}
    under = nd.parse_info_network(hmp_output(build, "under-nic", "info network"))
    assert {n: (c.type, c.peer) for n, c in under.items()} == {
        "orphan": ("nic", "doomed"),
        "doomed": ("user", "orphan"),
    }


def test_parse_info_network_rejects_unknown_lines():
    with pytest.raises(nd.InfoNetworkParseError):
        nd.parse_info_network("something new: else\n")
    with pytest.raises(nd.InfoNetworkParseError):
        nd.parse_info_network(" \\ net0: index=0,type=user,net=10.0.2.0\n")  # no NIC before
    with pytest.raises(nd.InfoNetworkParseError):
        nd.parse_info_network("filters:\n")


def test_parse_info_network_multiqueue_keeps_queue0():
    text = (
        "nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\n"
        " \\ t0: index=0,type=tap,ifname=tap0,script=no,downscript=no\n"
        "nic0: index=1,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\n"
        " \\ t0: index=1,type=tap,ifname=tap0,script=no,downscript=no\n"
    )
    clients = nd.parse_info_network(text)
    assert (clients["t0"].index, clients["t0"].peer) == (0, "nic0")
    assert nd.backends_from_info(clients) == {"t0": ("tap", "nic0")}


@pytest.mark.parametrize("scenario", ["default", "empty", "hubs"])
def test_compare_recorded_query_netdevs_with_info_network(scenario):
    """The patched build's query-netdevs answers, taken right after each `info network`,
    agree with it (ids, types, peers both ways)."""
    infos = [out for cmd, out in transcripts("patched")[scenario] if cmd == "info network"]
    answers = query_netdevs("patched", scenario)
    assert len(infos) == len(answers)
    for text, answer in zip(infos, answers, strict=True):
        assert nd.compare(answer, text) == []


def test_compare_reports_each_difference():
    text = hmp_output("patched", "under-nic", "info network")
    assert nd.compare(query_netdevs("patched", "under-nic")[0], text) == [
        "doomed: in info network ('user', 'orphan'), not in query-netdevs"
    ]
    answer = query_netdevs("patched", "default")[0]
    text = hmp_output("patched", "default", "info network", 0)
    wrong = [dict(answer[0], type="socket"), {k: v for k, v in answer[1].items() if k != "peer-id"},
             {"id": "ghost", "type": "user"}]  # fmt: skip
    assert nd.compare(wrong, text) == [
        "ghost: in query-netdevs ('user', None), not in info network",
        "net0: query-netdevs (type, peer) ('socket', 'nic0') != info network ('user', 'nic0')",
        "net1: query-netdevs (type, peer) ('user', None) != info network ('user', 'nic1')",
    ]
    with pytest.raises(AssertionError, match="twice"):
        nd.backends_from_query(answer + answer[:1])


def test_stock_has_no_query_netdevs():
    for answers in json.loads((DATA / "qmp-stock.json").read_text()).values():
        assert all(a["class"] == "CommandNotFound" for a in answers)


# -- info snapshots ------------------------------------------------------------------------


class _FakeVM:
    def __init__(self, output: str):
        self.hmp = type("H", (), {"cmd": staticmethod(lambda line, timeout=None: output)})()


@pytest.mark.parametrize("build", BUILDS)
def test_hmp_snapshot_tags_recorded(build):
    before = hmp_output(build, "snapshots", "info snapshots", 0)
    after = hmp_output(build, "snapshots", "info snapshots", 1)
    assert HMPSnapshots(_FakeVM(before)).tags() == []
    assert HMPSnapshots(_FakeVM(after)).tags() == ["first", "second"]
    # the series adds UUID columns and a "Current snapshot:" line; stock has neither
    assert ("Current snapshot:" in after) == (build == "patched")


@pytest.mark.parametrize("build", BUILDS)
def test_info_snapshots_parser_reads_both_formats(build):
    """One parser for the stock table and the series' (UUID and PARENT_UUID columns taken
    from the right, the "Current snapshot:" line): second's parent is first, and current."""
    info = parse_info_snapshots(hmp_output(build, "snapshots", "info snapshots", 1))
    assert list(info.loadable) == ["first", "second"] and info.partial == {}
    assert [r["id"] for r in info.loadable.values()] == ["--", "--"]  # ids differ per disk
    assert info.has_current_line == (build == "patched")
    if build == "stock":
        assert "uuid" not in info.loadable["first"] and info.current is None
        return
    first, second = info.loadable["first"], info.loadable["second"]
    assert first["parent-uuid"] is None and second["parent-uuid"] == first["uuid"]
    assert info.current == second["uuid"]
    assert parse_info_snapshots(hmp_output(build, "snapshots", "info snapshots", 0)).current \
        is None


def test_info_snapshots_parser_partial_table():
    u1, u2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    head = "ID        TAG               VM_SIZE                DATE     VM_CLOCK     ICOUNT"
    text = "\n".join([
        "List of snapshots present on all disks:",
        f"{head} UUID                                 PARENT_UUID",
        f"--        full             1.2 MiB 2026-12-03 10:00:00  00:00:01.000     -- {u1} --",
        "",
        "List of partial (non-loadable) snapshots:",
        f"{head} UUID                                 PARENT_UUID     DEVICES",
        f"2         half                 0 B 2026-12-03 10:00:01  00:00:02.000     -- {u2} {u1} "
        "disk0,disk1",
        f"Current snapshot: {u1}", ""])
    info = parse_info_snapshots(text)
    assert info.loadable == {"full": {"id": "--", "uuid": u1, "parent-uuid": None}}
    assert info.partial["half"]["devices"] == ["disk0", "disk1"]
    assert info.partial["half"]["parent-uuid"] == info.current


# -- guest image: module load order --------------------------------------------------------


def _modules_dep() -> str:
    return gzip.decompress((DATA / "modules.dep-6.1.0-56-amd64.gz").read_bytes()).decode()


def test_module_load_order_recorded_kernel():
    """On the Debian kernel the guest is built from, the order is the one the image builder
    recorded in its manifest: every dependency before its users."""
    manifest = json.loads((DATA / "guest-manifest.json").read_text())
    order = guest_mod.module_load_order(_modules_dep(), guest_mod.MODULES)
    names = [Path(p).name.removesuffix(".ko") for p in order]
    assert names == manifest["modules"]
    assert manifest["kernel_release"] == "6.1.0-56-amd64"
    deps = {
        line.split(":")[0]: line.split(":")[1].split()
        for line in _modules_dep().splitlines()
        if ":" in line
    }
    for i, mod in enumerate(order):
        assert set(deps[mod]) <= set(order[:i]), mod


def test_module_load_order_errors():
    with pytest.raises(guest_mod.ImageError, match="not in modules.dep"):
        guest_mod.module_load_order(_modules_dep(), ("no_such_module",))
    cyclic = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"
    with pytest.raises(guest_mod.ImageError, match="cycle"):
        guest_mod.module_load_order(cyclic, ("a",))
    # compressed modules and dashes in file names
    dep = "kernel/x/virtio-rng.ko.xz: kernel/v/virtio.ko.xz\nkernel/v/virtio.ko.xz:\n"
    assert guest_mod.module_load_order(dep, ("virtio_rng",)) == [
        "kernel/v/virtio.ko.xz",
        "kernel/x/virtio-rng.ko.xz",
    ]


# -- valgrind ------------------------------------------------------------------------------


def test_parse_valgrind_definitely_lost():
    """A real valgrind log (a small program built from leaky/; --fullpath-after=)."""
    records, summary = nd.parse_valgrind_leaks((DATA / "valgrind-definitely-lost.log").read_text())
    assert [(r.kind, r.bytes, r.blocks) for r in records] == [
        ("definitely", 24, 1),
        ("definitely", 100, 1),
    ]
    assert records[0].stack[1] == "qapi_clone (/tmp/leak/net/leaky.c:3)"
    assert len(records[0].stack) == 4 and len(records[1].stack) == 3
    assert records[0].mentions(nd.SERIES_LEAK_FRAMES)
    assert not records[1].mentions(nd.SERIES_LEAK_FRAMES)
    assert summary == {"definitely": 124, "indirectly": 0, "possibly": 0}


def test_parse_valgrind_qemu_logs():
    clean, summary = nd.parse_valgrind_leaks(
        (DATA / "valgrind-query-netdevs-clean.log").read_text()
    )
    assert clean == [] and summary["definitely"] == 0
    records, summary = nd.parse_valgrind_leaks(
        (DATA / "valgrind-qemu-possibly-lost.log").read_text()
    )
    assert [(r.kind, r.bytes) for r in records] == [("possibly", 400)]
    assert "qemu_thread_create (qemu-thread-posix.c:581)" in records[0].stack
    assert not records[0].mentions(nd.SERIES_LEAK_FRAMES)  # RCU thread: not ours
    assert summary == {"definitely": 0, "indirectly": 0, "possibly": 400}


@pytest.mark.parametrize(
    "frame, ours",
    [
        ("net_client_init1 (/work/main/qemu/build/../net/net.c:1368)", True),
        ("qapi_clone (../qapi/qapi-clone-visitor.c:190)", True),
        ("qmp_query_netdevs (net.c:1680)", True),
        ("qapi_free_Netdev (qapi-types-net.c:12)", True),
        ("g_malloc (in /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6)", False),
        ("qemu_thread_create (../util/qemu-thread-posix.c:581)", False),
        ("virtio_net_device_realize (../hw/net/virtio-net.c:3700)", True),
    ],
)
def test_series_leak_frames(frame, ours):
    rec = nd.LeakRecord("definitely", 1, 1, [frame])
    assert rec.mentions(nd.SERIES_LEAK_FRAMES) == ours


# -- guest console -------------------------------------------------------------------------


def test_console_counters_recorded(tmp_path):
    after_load = Console(DATA / "console-after-loadvm.log")
    assert after_load.counters() == [2, 3, 4, 5, 6, 7, 5, 6]  # loadvm went back to 5
    assert after_load.last_counter() == 6
    cold = Console(DATA / "console-cold-boot.log")
    m = cold.wait_for(guest_mod.READY_MARKER + r" kernel=(\S+) disk=(\S+) nics=(\S+)", timeout=1)
    assert m.groups() == ("6.1.0-56-amd64", "/dev/vda", "eth0,eth1,")
    assert cold.counters() == [1, 2, 3]
    assert cold.counters(since=cold.mark()) == []
    # a partial line (no newline yet) is not a counter
    partial = tmp_path / "c.log"
    partial.write_bytes((DATA / "console-cold-boot.log").read_bytes() + b"COUNTER 4")
    assert Console(partial).counters() == [1, 2, 3]

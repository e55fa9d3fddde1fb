"""Network backends as HMP `info network` and QMP `query-netdevs` show them, and valgrind logs.

Pure functions (no QEMU needed; unit-tested in tests/unit/test_rig_parsers.py with recorded
outputs) plus small helpers that take a running VM:

  parse_info_network(text)   -> {name: NetClient} for every net client the text shows
  backends_from_info(text)   -> {id: (type, peer)} of the backends (non-NIC clients) it shows
  backends_from_query(list)  -> the same shape from a query-netdevs answer
  wait_device_deleted(vm, id) waits for DEVICE_DELETED of a device (guest-acknowledged unplug)
  parse_valgrind_leaks(text) -> the "definitely lost" records of a valgrind log, with stacks

`info network` (net/net-hmp-cmds.c, net/hub.c) prints, for QEMU 10.0:

    hub 1                                 a hub, then one line per port:
     \\ hp0: u0: index=0,type=user,...     port with a peer (the peer's description)
     \\ hp2                                port without a peer
    nic0: index=0,type=nic,model=...      a NIC (not on a hub) ...
     \\ net0: index=0,type=user,...        ... and the backend it is connected to
    lonely: index=0,type=user,...         a client without a peer
    filters:                              after any client with net filters:
      - f0: type=filter-dump,...

Hub ports have no `type=` of their own there; their type is "hubport".
"""

from __future__ import annotations

import dataclasses
import re

from .errors import VMTimeout

_CLIENT = re.compile(
    r"^(?P<name>[^\s:]+): index=(?P<index>\d+),type=(?P<type>[\w-]+),?(?P<info>.*)$"
)
_HUB = re.compile(r"^hub (?P<id>-?\d+)$")
_PORT = re.compile(r"^ \\ (?P<port>[^\s:]+)(?:: (?P<rest>.*))?$")
_PEER = re.compile(r"^ \\ (?P<rest>.*)$")
_FILTER = re.compile(r"^  - (?P<name>[^\s:]+): type=(?P<type>[\w-]+)(?P<info>.*)$")


@dataclasses.dataclass
class NetClient:
    name: str
    type: str  # NetClientDriver name; "hubport" for hub ports
    info: str = ""  # the rest of the line after "type=...,"
    peer: str | None = None
    hub: int | None = None  # the hub a hub port belongs to
    index: int = 0
    filters: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_nic(self) -> bool:
        return self.type == "nic"


class InfoNetworkParseError(ValueError):
    pass


def parse_info_network(text: str) -> dict[str, NetClient]:
    """Every net client `info network` shows, by name (queue 0 of multiqueue clients).

    Raises InfoNetworkParseError on a line it does not understand, so that a change of the
    format shows up as a parser failure rather than as silently missing clients.
    """
    clients: dict[str, NetClient] = {}
    hub: int | None = None
    last: NetClient | None = None  # the client the previous line described

    def add(client: NetClient) -> NetClient:
        if client.name not in clients or client.index == 0:
            clients[client.name] = client
        return client

    def describe(line: str) -> NetClient:
        m = _CLIENT.match(line)
        if not m:
            raise InfoNetworkParseError(f"not a net client description: {line!r}")
        return NetClient(
            m.group("name"), m.group("type"), m.group("info"), index=int(m.group("index"))
        )

    for raw in text.replace("\r", "").split("\n"):
        line = raw.rstrip()
        if not line:
            continue
        if m := _HUB.match(line):
            hub = int(m.group("id"))
            last = None
            continue
        if line == "filters:":
            if last is None:
                raise InfoNetworkParseError("'filters:' without a net client before it")
            continue
        if m := _FILTER.match(line):
            if last is None:
                raise InfoNetworkParseError(f"filter without a net client: {line!r}")
            last.filters.append(m.group("name"))
            continue
        if line.startswith(" \\ "):
            m = _PORT.match(line)
            if hub is not None and m and not (m.group("rest") or "").startswith("index="):
                # " \ hp0" or " \ hp0: peer: index=..." inside a hub section
                port = add(NetClient(m.group("port"), "hubport", hub=hub))
                last = port
                if m.group("rest"):
                    peer = add(describe(m.group("rest")))
                    port.peer, peer.peer = peer.name, port.name
                    last = peer
                continue
            # " \ net0: index=..." : the peer of the NIC on the line before
            if last is None or not last.is_nic:
                raise InfoNetworkParseError(f"peer line without a NIC before it: {line!r}")
            nic = last
            peer = add(describe(_PEER.match(line).group("rest")))
            nic.peer, peer.peer = peer.name, nic.name
            last = peer
            continue
        if line.startswith(" "):
            raise InfoNetworkParseError(f"unexpected indented line: {line!r}")
        hub = None  # top-level clients come after all hubs
        last = add(describe(line))
    return clients


def backends_from_info(text_or_clients) -> dict[str, tuple[str, str | None]]:
    """{id: (type, peer)} of the backends (every non-NIC net client) `info network` shows."""
    clients = (
        parse_info_network(text_or_clients) if isinstance(text_or_clients, str) else text_or_clients
    )
    return {c.name: (c.type, c.peer) for c in clients.values() if not c.is_nic}


def backends_from_query(netdevs: list[dict]) -> dict[str, tuple[str, str | None]]:
    """{id: (type, peer-id)} from a query-netdevs answer (each id must appear once)."""
    out: dict[str, tuple[str, str | None]] = {}
    for n in netdevs:
        if n["id"] in out:
            raise AssertionError(f"query-netdevs lists {n['id']!r} twice: {netdevs}")
        out[n["id"]] = (n["type"], n.get("peer-id"))
    return out


def compare(query: list[dict], info_text: str) -> list[str]:
    """Differences between query-netdevs and `info network` (ids, types, peers); [] if none."""
    q = backends_from_query(query)
    h = backends_from_info(info_text)
    problems = []
    for name in sorted(set(q) | set(h)):
        if name not in h:
            problems.append(f"{name}: in query-netdevs {q[name]}, not in info network")
        elif name not in q:
            problems.append(f"{name}: in info network {h[name]}, not in query-netdevs")
        elif q[name] != h[name]:
            problems.append(
                f"{name}: query-netdevs (type, peer) {q[name]} != info network {h[name]}"
            )
    return problems


def snapshot(vm) -> tuple[dict[str, dict], str]:
    """(query-netdevs by id, `info network` text), both asked now; asserts they agree."""
    netdevs = vm.qmp.cmd("query-netdevs")
    text = vm.hmp.cmd("info network")
    problems = compare(netdevs, text)
    assert not problems, "query-netdevs and info network disagree:\n" + "\n".join(
        problems + ["query-netdevs:", repr(netdevs), "info network:", text]
    )
    return {n["id"]: n for n in netdevs}, text


def wait_device_deleted(vm, device_id: str, timeout: float = 60.0) -> dict:
    """Wait for the DEVICE_DELETED event of ``device_id`` (blocking on the QMP socket)."""
    try:
        return vm.qmp.wait_event(vm.qmp.event("DEVICE_DELETED", device=device_id), timeout,
                                 f"DEVICE_DELETED of {device_id}")
    except VMTimeout as exc:
        raise VMTimeout(str(exc), getattr(vm, "workdir", None)) from None


# -- valgrind -------------------------------------------------------------------------

_VG_PREFIX = re.compile(r"^==\d+== ?")
_VG_LOSS = re.compile(
    r"^(?P<bytes>[\d,]+)(?: \([\d,]+ direct, [\d,]+ indirect\))? bytes in (?P<blocks>[\d,]+) "
    r"blocks are (?P<kind>definitely|indirectly|possibly) lost in loss record"
)
_VG_FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-Fa-f]+: (?P<frame>.*)$")
_VG_SUMMARY = re.compile(
    r"^\s*(?P<kind>definitely|indirectly|possibly) lost: "
    r"(?P<bytes>[\d,]+) bytes in (?P<blocks>[\d,]+) blocks"
)


@dataclasses.dataclass
class LeakRecord:
    kind: str  # definitely / indirectly / possibly
    bytes: int
    blocks: int
    stack: list[str]  # "func (file:line)" or "func (in /lib/...)", innermost first

    def mentions(self, pattern: str) -> bool:
        return any(re.search(pattern, frame) for frame in self.stack)


def parse_valgrind_leaks(text: str) -> tuple[list[LeakRecord], dict[str, int]]:
    """Loss records of a valgrind --leak-check=full log, and the LEAK SUMMARY bytes by kind."""
    records: list[LeakRecord] = []
    summary: dict[str, int] = {}
    current: LeakRecord | None = None
    for raw in text.splitlines():
        line = _VG_PREFIX.sub("", raw)
        if m := _VG_LOSS.match(line):
            current = LeakRecord(
                m.group("kind"),
                int(m.group("bytes").replace(",", "")),
                int(m.group("blocks").replace(",", "")),
                [],
            )
            records.append(current)
            continue
        if current is not None and (m := _VG_FRAME.match(line)):
            current.stack.append(m.group("frame"))
            continue
        if m := _VG_SUMMARY.match(line):
            summary[m.group("kind")] = int(m.group("bytes").replace(",", ""))
        current = None
    return records, summary


# Frames that make a leak this series' business: the net layer and QAPI cloning.
SERIES_LEAK_FRAMES = r"(?:^|[\s(/])net/|qapi_clone|clone-visitor|qmp_query_netdevs|Netdev"

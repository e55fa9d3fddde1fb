"""Upstream monitor behaviour on a real guest: `info qdm` vs qom-list-types, `info network`."""

from __future__ import annotations

import re

import pytest

from tests.qemu.lib.machine import DEFAULT_PROFILE


def _qdm_names(text: str) -> set[str]:
    return set(re.findall(r'^name "([^"]+)"', text, re.M))


def test_info_qdm_matches_qom_list_types(vm):
    """HMP `info qdm` lists exactly the non-abstract device types QMP reports."""
    hmp_names = _qdm_names(vm.hmp.cmd("info qdm"))
    qmp_names = {
        t["name"] for t in vm.qmp.cmd("qom-list-types", implements="device", abstract=False)
    }
    assert "virtio-blk-pci" in hmp_names and "virtio-net-pci" in hmp_names
    assert len(hmp_names) > 100
    assert hmp_names == qmp_names, (
        f"only in info qdm: {sorted(hmp_names - qmp_names)}; only in qom-list-types: "
        f"{sorted(qmp_names - hmp_names)}"
    )


# `info network` lines: "nic0: index=0,type=nic,model=...,macaddr=..." and, for the peer of a
# NIC, " \ net0: index=0,type=user,net=10.0.2.0,restrict=on"; unconnected netdevs at top level.
_NET_LINE = re.compile(
    r"^(?P<peer> \\ )?(?P<name>[^\s:]+): index=\d+,type=(?P<type>\w+)(?P<rest>.*)$", re.M
)


def parse_info_network(text: str) -> dict[str, dict]:
    """name -> {type, info, peer}: peer is the NIC a netdev hangs off (or the netdev of a NIC)."""
    entries: dict[str, dict] = {}
    last_top = None
    for m in _NET_LINE.finditer(text):
        entry = {"type": m.group("type"), "info": m.group("rest").lstrip(","), "peer": None}
        if m.group("peer"):
            if last_top is not None:
                entry["peer"] = last_top
                entries[last_top]["peer"] = m.group("name")
        else:
            last_top = m.group("name")
        entries[m.group("name")] = entry
    return entries


def test_info_network_lists_startup_netdevs(vm):
    """Every -netdev the VM started with is listed with its type and the NIC it serves."""
    entries = parse_info_network(vm.hmp.cmd("info network"))
    for nic in DEFAULT_PROFILE.nics:
        assert nic.netdev_id in entries, entries
        assert entries[nic.netdev_id]["type"] == nic.netdev.split(",")[0]
        assert entries[nic.netdev_id]["peer"] == nic.device_id
        assert entries[nic.device_id]["type"] == "nic"
        assert f"macaddr={nic.mac}" in entries[nic.device_id]["info"]
        assert "model=virtio-net-pci" in entries[nic.device_id]["info"]


def test_info_network_follows_netdev_add_del(vm, monitor):
    """A netdev added at run time (over the monitor under test) appears, then goes."""
    if monitor == "hmp":
        vm.hmp.cmd("netdev_add user,id=hot0,restrict=on")
    else:
        vm.qmp.cmd("netdev_add", type="user", id="hot0", restrict=True)
    entries = parse_info_network(vm.hmp.cmd("info network"))
    assert entries.get("hot0", {}).get("type") == "user", entries
    assert entries["hot0"]["peer"] is None
    if monitor == "hmp":
        vm.hmp.cmd("netdev_del hot0")
    else:
        vm.qmp.cmd("netdev_del", id="hot0")
    entries = parse_info_network(vm.hmp.cmd("info network"))
    assert "hot0" not in entries
    assert {n.netdev_id for n in DEFAULT_PROFILE.nics} <= set(entries)


def test_hmp_reports_errors(vm):
    """The HMP client sees monitor errors: unknown commands and bad arguments."""
    assert "unknown command" in vm.hmp.cmd_error("no-such-command")
    out = vm.hmp.cmd_error("netdev_del no-such-netdev")
    assert "no-such-netdev" in out
    # the monitor still works afterwards
    assert "running" in vm.hmp.cmd("info status")


@pytest.mark.parametrize("command", ["query-status", "query-name"])
def test_qmp_basics(vm, command):
    ret = vm.qmp.cmd(command)
    assert ret == (
        {"running": True, "status": "running"} if command == "query-status" else {"name": "vm"}
    )

"""Upstream monitor behaviour on a real guest: `info qdm` vs qom-list-types, `info network`."""

from __future__ import annotations

import re

import pytest

from rig import netdevs as nd
from rig.machine import DEFAULT_PROFILE


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


def test_info_network_lists_startup_netdevs(vm):
    """Every -netdev the VM started with is listed with its type and the NIC it serves."""
    entries = nd.parse_info_network(vm.hmp.cmd("info network"))
    for nic in DEFAULT_PROFILE.nics:
        assert nic.netdev_id in entries, entries
        assert entries[nic.netdev_id].type == nic.netdev.split(",")[0]
        assert entries[nic.netdev_id].peer == nic.device_id
        assert entries[nic.device_id].type == "nic"
        assert f"macaddr={nic.mac}" in entries[nic.device_id].info
        assert "model=virtio-net-pci" in entries[nic.device_id].info


def test_info_network_follows_netdev_add_del(vm, monitor):
    """A netdev added at run time (over the monitor under test) appears, then goes."""
    if monitor == "hmp":
        vm.hmp.cmd("netdev_add user,id=hot0,restrict=on")
    else:
        vm.qmp.cmd("netdev_add", type="user", id="hot0", restrict=True)
    entries = nd.parse_info_network(vm.hmp.cmd("info network"))
    assert "hot0" in entries and entries["hot0"].type == "user", entries
    assert entries["hot0"].peer is None
    if monitor == "hmp":
        vm.hmp.cmd("netdev_del hot0")
    else:
        vm.qmp.cmd("netdev_del", id="hot0")
    entries = nd.parse_info_network(vm.hmp.cmd("info network"))
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

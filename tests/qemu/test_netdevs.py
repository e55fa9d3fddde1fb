"""query-netdevs (series part 3, patches 0015-0017) on real guests, cross-checked with HMP.

Every answer of QMP `query-netdevs` is compared with HMP `info network` asked at the same
moment (rig/netdevs.snapshot): the same backend ids, the same types, the same peers, both ways.
Backend-only cases start the guest paused (-S, no cold boot needed); the main NIC case and NIC
hot(un)plug run on a fast-started, running guest, whose kernel acknowledges the ACPI unplug.

tests/qemu/test_vm_series.py::test_query_netdevs already covers user netdev_add/del over
both monitors on the default VM; these go further.
"""

from __future__ import annotations

import os
import socket

import pytest

from rig import netdevs as nd
from rig.errors import QMPCommandError
from rig.machine import DEFAULT_PROFILE, MachineProfile

pytestmark = pytest.mark.series("query-netdevs")

NO_NICS = MachineProfile(nics=())


def _paused(vm_factory, name: str, *args: str, profile: MachineProfile = NO_NICS):
    """A VM whose guest never runs (-S): enough for the backends, cheap on two cores."""
    return vm_factory(name, fast=False, profile=profile, extra_args=("-S", *args))


def test_user_netdev_with_virtio_nic(vm):
    """The running guest's -netdev user backends: type user, peer = the virtio-net NIC's id,
    config = the -netdev options; NICs are not listed; HMP agrees."""
    nets, text = nd.snapshot(vm)
    assert set(nets) == {n.netdev_id for n in DEFAULT_PROFILE.nics}, nets
    for nic in DEFAULT_PROFILE.nics:
        info = nets[nic.netdev_id]
        assert info["type"] == "user"
        assert info["peer-id"] == nic.device_id
        assert info["config"] == {"id": nic.netdev_id, "type": "user", "restrict": True}
        assert f"{nic.device_id}: index=0,type=nic,model=virtio-net-pci,macaddr={nic.mac}" in text
    # the guest is alive and running on those NICs' machine
    assert vm.qmp.cmd("query-status")["status"] == "running"
    vm.console.wait_counter(timeout=30)


def test_socket_listen_connect_pair(vm_factory, ports):
    """-netdev socket listen= and connect= on 127.0.0.1, each under a NIC, in one VM: both
    listed as type socket with their NIC as peer and their own endpoint in config."""
    (port,) = ports(1)
    vm = _paused(
        vm_factory,
        "sock",
        "-netdev", f"socket,id=sl,listen=127.0.0.1:{port}",
        "-device", "virtio-net-pci,netdev=sl,id=nicl,romfile=",
        "-netdev", f"socket,id=sc,connect=127.0.0.1:{port}",
        "-device", "virtio-net-pci,netdev=sc,id=nicc,romfile=",
    )  # fmt: skip
    # QEMU's main loop accepts the connection; each monitor round trip lets it run (no
    # event tells, so a bounded number of round trips, not a sleep)
    for _ in range(1000):
        if "connection from 127.0.0.1" in vm.hmp.cmd("info network"):
            break
    else:
        raise AssertionError("the listening socket never saw the connection")
    nets, text = nd.snapshot(vm)
    assert set(nets) == {"sl", "sc"}
    assert (nets["sl"]["type"], nets["sl"]["peer-id"]) == ("socket", "nicl")
    assert (nets["sc"]["type"], nets["sc"]["peer-id"]) == ("socket", "nicc")
    assert nets["sl"]["config"] == {"id": "sl", "type": "socket", "listen": f"127.0.0.1:{port}"}
    assert nets["sc"]["config"] == {"id": "sc", "type": "socket", "connect": f"127.0.0.1:{port}"}
    assert f"connect to 127.0.0.1:{port}" in text


def test_hubports(vm_factory):
    """Hub ports connected to a netdev, to a NIC and to nothing: type hubport, the right
    peers on both sides (the user netdev's peer is its hub port), hubid in config."""
    vm = _paused(
        vm_factory,
        "hub",
        "-netdev", "user,id=u0,restrict=on",
        "-netdev", "hubport,id=hp0,hubid=1,netdev=u0",
        "-netdev", "hubport,id=hp1,hubid=1",
        "-device", "virtio-net-pci,netdev=hp1,id=hnic,romfile=",
        "-netdev", "hubport,id=hp2,hubid=1",
    )  # fmt: skip
    nets, text = nd.snapshot(vm)
    assert nd.backends_from_query(list(nets.values())) == {
        "u0": ("user", "hp0"),
        "hp0": ("hubport", "u0"),
        "hp1": ("hubport", "hnic"),
        "hp2": ("hubport", None),
    }
    assert nets["hp0"]["config"] == {"id": "hp0", "type": "hubport", "hubid": 1, "netdev": "u0"}
    assert nets["hp2"]["config"] == {"id": "hp2", "type": "hubport", "hubid": 1}
    clients = nd.parse_info_network(text)
    assert {c.hub for c in clients.values() if c.type == "hubport"} == {1}


def test_nic_shorthand(vm_factory):
    """-nic user,...,model=,mac=: one user backend whose peer is the NIC QEMU named
    (virtio-net-pci.0, as info network shows); model and mac are not backend options.
    A -nic without id gets a generated backend id, listed the same in both monitors."""
    vm = _paused(
        vm_factory,
        "nic",
        "-nic", "user,id=n0,model=virtio-net-pci,mac=52:54:00:12:34:77",
        "-nic", "user,model=virtio-net-pci,restrict=on",
    )  # fmt: skip
    nets, text = nd.snapshot(vm)
    assert len(nets) == 2 and list(nets)[0] == "n0", nets
    assert (nets["n0"]["type"], nets["n0"]["peer-id"]) == ("user", "virtio-net-pci.0")
    assert nets["n0"]["config"] == {"id": "n0", "type": "user"}
    assert "virtio-net-pci.0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:77" in (
        text
    )
    gen_id, gen = list(nets.items())[1]
    assert gen_id.startswith("#net") and gen["peer-id"] == "virtio-net-pci.1", gen
    assert gen["config"] == {"id": gen_id, "type": "user", "restrict": True}


def test_query_netdevs_in_preconfig(vm_factory):
    """allow-preconfig: before x-exit-preconfig the -netdev backends are listed with their
    config but no peer (the NIC does not exist yet); afterwards the NIC is their peer."""
    vm = _paused(
        vm_factory,
        "pre",
        "--preconfig",
        "-netdev", "user,id=pre,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=pre,id=prenic,romfile=",
    )  # fmt: skip
    assert vm.qmp.cmd("query-status")["status"] == "prelaunch"
    before = vm.qmp.cmd("query-netdevs")
    assert before == [
        {
            "id": "pre",
            "type": "user",
            "config": {"id": "pre", "type": "user", "hostfwd": [{"str": "tcp:127.0.0.1:0-:22"}]},
        }
    ]
    vm.qmp.cmd("x-exit-preconfig")
    nets, _ = nd.snapshot(vm)
    assert nets["pre"]["peer-id"] == "prenic"
    assert nets["pre"]["config"] == before[0]["config"]


def test_netdev_without_nic(vm_factory):
    """A -netdev no device uses has no peer-id (and is a top-level client in info network)."""
    vm = _paused(vm_factory, "alone", "-netdev", "user,id=lonely,hostname=solo")
    nets, text = nd.snapshot(vm)
    assert list(nets) == ["lonely"]
    assert "peer-id" not in nets["lonely"]
    assert nets["lonely"]["config"] == {"id": "lonely", "type": "user", "hostname": "solo"}
    assert text.replace("\r", "").startswith("lonely: index=0,type=user,")


def test_no_netdev_empty_list(vm_factory):
    """A VM without any network backend: query-netdevs is [] and info network shows none."""
    vm = _paused(vm_factory, "none")
    assert vm.qmp.cmd("query-netdevs") == []
    assert nd.parse_info_network(vm.hmp.cmd("info network")) == {}


def test_netdev_add_del_follows_at_once(vm_factory, ports):
    """netdev_add/netdev_del of user, hubport, stream and dgram backends, three rounds: each
    change shows at once (config as given, nested addresses included) and HMP agrees after
    every step; failed adds change nothing; a deleted id can be added again."""
    (port,) = ports(1)
    local, remote = ports(2, socket.SOCK_DGRAM)
    vm = _paused(vm_factory, "hot", "-netdev", "user,id=base")
    added = {
        "u1": {"type": "user", "hostname": "h1", "dnssearch": [{"str": "example.org"}]},
        "hp5": {"type": "hubport", "hubid": 5},
        "st0": {
            "type": "stream",
            "server": True,
            "addr": {"type": "inet", "host": "127.0.0.1", "port": str(port)},
        },
        "dg0": {
            "type": "dgram",
            "local": {"type": "inet", "host": "127.0.0.1", "port": str(local)},
            "remote": {"type": "inet", "host": "127.0.0.1", "port": str(remote)},
        },
    }
    for _round in range(3):
        for ident, args in added.items():
            vm.qmp.cmd("netdev_add", id=ident, **args)
            nets, _ = nd.snapshot(vm)
            assert nets[ident]["type"] == args["type"] and "peer-id" not in nets[ident]
            assert nets[ident]["config"] == {"id": ident, **args}
        assert list(nets) == ["base", *added], "creation order"
        # a duplicate id and a bad option are refused and leave everything as it was
        before = vm.qmp.cmd("query-netdevs")
        with pytest.raises(QMPCommandError):
            vm.qmp.cmd("netdev_add", id="u1", type="user", hostname="other")
        with pytest.raises(QMPCommandError):
            vm.qmp.cmd("netdev_add", id="bad", type="user", **{"ipv6-prefixlen": 200})
        assert vm.qmp.cmd("query-netdevs") == before
        for ident in reversed(list(added)):
            vm.qmp.cmd("netdev_del", id=ident)
            nets, _ = nd.snapshot(vm)
            assert ident not in nets
        assert list(nets) == ["base"]
    # HMP's netdev_add goes through QemuOpts, not QMP's visitor
    vm.hmp.cmd("netdev_add user,id=h0,hostname=via-hmp")
    nets, _ = nd.snapshot(vm)
    assert nets["h0"]["config"] == {"id": "h0", "type": "user", "hostname": "via-hmp"}
    vm.hmp.cmd("netdev_del h0")
    nets, _ = nd.snapshot(vm)
    assert list(nets) == ["base"]


def test_nic_hotplug_changes_peer(vm):
    """device_add of a virtio-net NIC sets the backend's peer-id at once; device_del (the
    running guest acknowledges the ACPI unplug: DEVICE_DELETED) clears it; HMP agrees."""
    vm.qmp.cmd("netdev_add", type="user", id="hot", restrict=True)
    nets, _ = nd.snapshot(vm)
    assert "peer-id" not in nets["hot"]
    for nic in ("hotnic0", "hotnic1"):
        vm.qmp.cmd("device_add", driver="virtio-net-pci", netdev="hot", id=nic, romfile="")
        nets, _ = nd.snapshot(vm)
        assert nets["hot"]["peer-id"] == nic
        # a second NIC cannot take a backend that is in use: nothing changes
        with pytest.raises(QMPCommandError):
            vm.qmp.cmd("device_add", driver="virtio-net-pci", netdev="hot", id="x" + nic)
        assert nd.snapshot(vm)[0]["hot"]["peer-id"] == nic
        vm.qmp.cmd("device_del", id=nic)
        nd.wait_device_deleted(vm, nic, timeout=90)
        nets, _ = nd.snapshot(vm)
        assert "peer-id" not in nets["hot"], nets["hot"]
    vm.qmp.cmd("netdev_del", id="hot")
    nets, _ = nd.snapshot(vm)
    assert set(nets) == {n.netdev_id for n in DEFAULT_PROFILE.nics}
    vm.console.wait_counter(timeout=30)  # the guest survived the unplugs


def test_netdev_del_under_nic(vm):
    """netdev_del of a backend a NIC still uses: query-netdevs drops it at once (the
    documented contract) and the NIC is still there; after the NIC's unplug neither monitor
    shows it. (While the NIC exists, info network still prints the dead backend under it.)"""
    vm.qmp.cmd("netdev_add", type="user", id="doomed")
    vm.qmp.cmd("device_add", driver="virtio-net-pci", netdev="doomed", id="orphan", romfile="")
    vm.qmp.cmd("netdev_del", id="doomed")
    assert "doomed" not in {n["id"] for n in vm.qmp.cmd("query-netdevs")}
    text = vm.hmp.cmd("info network")
    assert nd.parse_info_network(text)["orphan"].is_nic
    # The one known disagreement: info network prints the NIC's (unlisted) dead peer.
    assert nd.compare(vm.qmp.cmd("query-netdevs"), text) == [
        "doomed: in info network ('user', 'orphan'), not in query-netdevs"
    ]
    # the id is free again: a new backend of that name, unconnected, with its own config
    vm.qmp.cmd("netdev_add", type="user", id="doomed", hostname="reborn")
    reborn = [n for n in vm.qmp.cmd("query-netdevs") if n["id"] == "doomed"]
    assert reborn == [
        {"id": "doomed", "type": "user", "config": {"id": "doomed", "type": "user",
                                                    "hostname": "reborn"}}
    ]  # fmt: skip
    assert vm.hmp.cmd("info network").count("doomed: index=0,type=user") == 2  # dead + new
    vm.qmp.cmd("device_del", id="orphan")
    nd.wait_device_deleted(vm, "orphan", timeout=90)
    nets, text = nd.snapshot(vm)
    assert "orphan" not in text and nets["doomed"]["config"]["hostname"] == "reborn"
    assert "peer-id" not in nets["doomed"]
    vm.qmp.cmd("netdev_del", id="doomed")
    nets, text = nd.snapshot(vm)
    assert "doomed" not in text
    assert set(nets) == {n.netdev_id for n in DEFAULT_PROFILE.nics}


def test_query_netdevs_and_info_network_agree(vm_factory, ports):
    """One VM with every kind of backend the rig can make unprivileged (user with a NIC,
    socket pair, stream, hub ports on a netdev / a NIC / nothing, -nic, legacy -net, a lone
    netdev): every id and type info network shows is in query-netdevs and vice versa, with
    the same peers; legacy -net hub ports have no config, everything else has its own."""
    port, stream_port = ports(2)
    vm = _paused(
        vm_factory,
        "all",
        "-netdev", f"socket,id=sl,listen=127.0.0.1:{port}",
        "-netdev", f"socket,id=sc,connect=127.0.0.1:{port}",
        "-device", "virtio-net-pci,netdev=sc,id=nicc,romfile=",
        "-netdev", "stream,id=st,server=on,addr.type=inet,addr.host=127.0.0.1,"
                   f"addr.port={stream_port}",
        "-netdev", "user,id=u0,restrict=on",
        "-netdev", "hubport,id=hp0,hubid=1,netdev=u0",
        "-netdev", "hubport,id=hp1,hubid=1",
        "-device", "virtio-net-pci,netdev=hp1,id=hnic,romfile=",
        "-netdev", "hubport,id=hp2,hubid=1",
        "-nic", "user,id=n0,model=virtio-net-pci",
        "-net", "nic,model=virtio-net-pci",
        "-net", "user,restrict=on",
        "-netdev", "user,id=lonely",
        profile=DEFAULT_PROFILE,
    )  # fmt: skip
    nets, text = nd.snapshot(vm)  # asserts the two-way agreement
    types = {i: n["type"] for i, n in nets.items()}
    for ident, t in {"net0": "user", "net1": "user", "sl": "socket", "sc": "socket",
                     "st": "stream", "u0": "user", "hp0": "hubport", "hp1": "hubport",
                     "hp2": "hubport", "n0": "user", "lonely": "user"}.items():  # fmt: skip
        assert types.get(ident) == t, (ident, nets)
    legacy = {i: n for i, n in nets.items() if i.startswith("hub0port")}
    assert len(legacy) == 2 and all("config" not in n for n in legacy.values()), legacy
    legacy_user = [i for i, n in nets.items() if i.startswith("#net")]
    assert len(legacy_user) == 1 and nets[legacy_user[0]]["config"]["restrict"] is True
    assert all("config" in n for i, n in nets.items() if i not in legacy), nets
    assert all(n["config"]["id"] == i for i, n in nets.items() if "config" in n)
    # "in the order they were created" (net_init_clients): first the -netdev QEMU parses
    # with keyval (stream, a QAPI-only type), then the other -netdev in command-line order,
    # -nic, then -net (legacy -net nic makes hub0port0, -net user hub0port1 then itself)
    assert list(nets) == ["st", "net0", "net1", "sl", "sc", "u0", "hp0", "hp1", "hp2",
                          "lonely", "n0", "hub0port0", "hub0port1", legacy_user[0]]  # fmt: skip


def test_multiqueue_tap_listed_once(vm_factory, require):
    """A tap backend with several queues is several net clients of one name: query-netdevs
    lists it once (queues in its config), info network shows every queue; netdev_add and
    netdev_del (also under its NIC) of a multiqueue backend act on the whole backend."""
    require.tap()
    tag = f"qh{os.getpid() % 100000}"  # tap names: at most 15 bytes, unique per process
    vm = _paused(
        vm_factory,
        "mq",
        "-netdev", f"tap,id=t0,ifname={tag}a,script=no,downscript=no,queues=2",
        "-device", "virtio-net-pci,netdev=t0,id=tnic,mq=on,vectors=6,romfile=",
    )  # fmt: skip
    text = vm.hmp.cmd("info network")
    assert "t0: index=1,type=tap" in text and "tnic: index=1,type=nic" in text
    nets, _ = nd.snapshot(vm)
    assert list(nets) == ["t0"]
    assert (nets["t0"]["type"], nets["t0"]["peer-id"]) == ("tap", "tnic")
    assert nets["t0"]["config"]["queues"] == 2
    vm.qmp.cmd(
        "netdev_add", type="tap", id="t1", ifname=f"{tag}b", script="no", downscript="no",
        queues=3,
    )  # fmt: skip
    # unconnected queues all print as index 0 (a NIC's peer numbers them)
    assert vm.hmp.cmd("info network").count("t1: index=0,type=tap") == 3
    nets, _ = nd.snapshot(vm)
    assert list(nets) == ["t0", "t1"] and "peer-id" not in nets["t1"]
    vm.qmp.cmd("netdev_del", id="t1")
    vm.qmp.cmd("netdev_del", id="t0")  # under its NIC: all queues leave the list at once
    assert vm.qmp.cmd("query-netdevs") == []

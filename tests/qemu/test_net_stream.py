"""Stream netdevs whose asynchronous listen or connect outlives them (both builds: no
series feature is needed; the fix is a stable patch of the query-netdevs series)."""

from __future__ import annotations

import socket

import pytest

from rig.machine import MachineProfile


def test_stream_netdev_deleted_before_its_listen_or_connect_completes(build, vm_factory,
                                                                     ports, request):
    """netdev_del right after netdev_add of a stream server (its listen is asynchronous) or
    client (its connect too), twenty times each: QEMU must not use the deleted netdev when
    the listen or connect completes afterwards (10.2.2 segfaults in
    qio_channel_socket_get_local_address, fixed by 'net/stream: Do not complete a listen
    or connect for a deleted netdev'). On stock the crash depends on scheduling (most
    runs on a loaded machine, few on an idle one), hence a non-strict xfail there."""
    if build.name != "patched":
        request.applymarker(pytest.mark.xfail(
            reason="upstream use-after-free in net/stream.c (shows only when the listen "
                   "or connect completes after the delete)", strict=False))
    server_port, client_port = ports(2)
    vm = vm_factory("stream-del", fast=False, profile=MachineProfile(nics=()),
                    extra_args=("-S",))
    with socket.socket() as listener:  # the clients connect here
        # the port is reserved with SO_REUSEADDR (the ports fixture)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", client_port))
        listener.listen(64)
        for i in range(20):
            vm.qmp.cmd("netdev_add", id=f"srv{i}", type="stream", server=True,
                       addr={"type": "inet", "host": "127.0.0.1", "port": str(server_port)})
            vm.qmp.cmd("netdev_del", id=f"srv{i}")
            vm.qmp.cmd("netdev_add", id=f"cli{i}", type="stream", server=False,
                       addr={"type": "inet", "host": "127.0.0.1", "port": str(client_port)})
            vm.qmp.cmd("netdev_del", id=f"cli{i}")
        # every pending listen and connect completes within the main loop's next rounds
        for _ in range(20):
            assert vm.qmp.cmd("query-status")["status"] == "prelaunch"  # -S: never run
    assert vm.hmp.cmd("info network").strip() == ""

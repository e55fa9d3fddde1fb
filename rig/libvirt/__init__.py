"""Library of the libvirt suite: libvirt drives the patched QEMU, the image is the oracle.

One concern per module:
  nsinit.py    run inside a new mount namespace: private binds, chroot, exec the daemon
  daemon.py    Daemon: one private libvirtd per test (config, namespace, start, stop, logs)
  virsh.py     the client by argument list against that daemon; readers of its output
  domain.py    the test domain as libvirt XML
  lineage.py   snapshot trees by name (image, libvirt, expected) and their differences
  scenario.py  the steps libvirt takes, as data
  summary.py   the step tables: per test, merged into libvirt.json, as text
"""

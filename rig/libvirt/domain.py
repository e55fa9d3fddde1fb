"""The test domain as libvirt XML: the patched QEMU as <emulator>, TCG (type 'qemu'), the
test guest by direct kernel boot, one qcow2 disk (virtio), the serial console to a file, no
network, no USB, no balloon, no display.

Paths are as the daemon sees them (in a chroot: the chroot's view). Pure (unit tested).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class DomainSpec:
    name: str
    emulator: str
    kernel: str
    initrd: str
    cmdline: str
    disk: str
    console: str
    memory_mib: int = 256
    machine: str = "pc"
    cpu: str = "qemu64"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type="qemu")
    _sub(dom, "name", spec.name)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", "1")
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    _sub(os_, "kernel", spec.kernel)
    _sub(os_, "initrd", spec.initrd)
    _sub(os_, "cmdline", spec.cmdline)
    # Without <acpi/> libvirt 9.0 passes -no-acpi, which QEMU 10 no longer accepts.
    _sub(_sub(dom, "features"), "acpi")
    cpu = _sub(dom, "cpu", mode="custom", match="exact")
    _sub(cpu, "model", spec.cpu, fallback="allow")
    _sub(dom, "clock", offset="utc")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(dom, event, "destroy")  # a guest panic (panic=-1 reboots) ends the domain
    dev = _sub(dom, "devices")
    _sub(dev, "emulator", spec.emulator)
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    serial = _sub(dev, "serial", type="file")
    _sub(serial, "source", path=spec.console)
    _sub(serial, "target", port="0")
    _sub(dev, "controller", type="usb", model="none")
    _sub(dev, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"

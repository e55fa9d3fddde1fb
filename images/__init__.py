"""Test guests for the harness, built from Debian packages (stdlib only).

    from images import ensure_guest, make_disk
    guest = ensure_guest()          # Guest(kernel, initrd, cmdline, manifest, ...)
    make_disk("/path/qemu-img", "disk.qcow2", "qcow2", "64M")

``python3 -m images [--cache-dir DIR]`` builds (or finds) the guest and prints it as JSON.
"""

from .disks import DiskError, make_disk
from .guest import (
    BUILDER_VERSION,
    COUNTER_RE,
    READY_MARKER,
    Guest,
    ImageError,
    default_cache_dir,
    ensure_guest,
)

__all__ = [
    "BUILDER_VERSION",
    "COUNTER_RE",
    "READY_MARKER",
    "DiskError",
    "Guest",
    "ImageError",
    "default_cache_dir",
    "ensure_guest",
    "make_disk",
]

"""Make test disks with qemu-img (argument lists only)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_SIZE = "64M"


class DiskError(Exception):
    """qemu-img failed; the message carries its command line and output."""


def make_disk(
    qemu_img: str | Path,
    path: str | Path,
    fmt: str = "qcow2",
    size: str = DEFAULT_SIZE,
    options: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> Path:
    """Create ``path`` as a ``fmt`` (qcow2 or raw) image of ``size`` and return it."""
    path = Path(path)
    args = [str(qemu_img), "create", "-q", "-f", fmt]
    for opt in options:
        args += ["-o", opt]
    args += [str(path), size]
    if log:
        log("$ " + shlex.join(args))
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DiskError(
            f"{shlex.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return path

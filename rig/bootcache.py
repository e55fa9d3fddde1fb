"""The booted guest's saved state, cached across sessions and shared by parallel workers.

A fast start (``-incoming``) needs the migration stream of a guest that booted on the same
binary, guest image, machine profile and accelerator; a cold boot costs seconds under TCG.
So the stream is made once per key and kept in
``~/.cache/qemu-snap-harness/booted-state/<key>/`` (``state.mig``, ``state.json``), where
the key is a hash over the qemu-system binary's bytes, the guest's key and kernel command
line, the profile's key, the accelerator and the firmware files the profile loads
(``BootKey``). ``QEMU_HARNESS_BOOT_CACHE`` names another directory.

Concurrency (pytest-xdist workers, other sessions on the machine): ``<key>.lock`` beside
the entry. A user holds it shared for as long as it fast-starts VMs from the entry; the
process that finds no entry takes it exclusively, boots and saves into a temporary
directory and renames that into place, then goes back to shared; the others wait on the
lock (flock blocks until it is released) and find the entry made. Eviction keeps the
``KEEP`` most recently used entries and removes an older one only when nobody holds its
lock.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.core.digest import sha256_file

from .locks import FileLock, write_atomically

KEEP = 6  # entries kept (about 57 MB each: the 256 MiB guest's non-zero pages)
RECIPE = "2"  # how booted() makes the state; bump when that changes (a new key for all)
STATE, META = "state.mig", "state.json"
ENV = "QEMU_HARNESS_BOOT_CACHE"


def default_root() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qemu-snap-harness" / "booted-state"


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)  # size, mtime and inode only key the cache


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (computed once per process while the file is unchanged)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@dataclasses.dataclass(frozen=True)
class BootKey:
    """What the saved state depends on; ``digest()`` names the cache entry."""

    binary: str  # sha256 of qemu-system-x86_64
    guest: str  # the guest image's key (images/: packages, init script, builder version)
    cmdline: str  # the kernel command line
    profile: str  # MachineProfile.key()
    accel: str
    firmware: str  # sha256 over the firmware files the profile loads
    recipe: str = RECIPE

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True)
                              .encode()).hexdigest()[:16]


def key_for(system: Path, guest, profile, accel: str) -> BootKey:
    firmware = hashlib.sha256()
    for path in profile.firmware_files():
        firmware.update(f"{path.name} {file_sha256(path)}\n".encode())
    return BootKey(binary=file_sha256(system), guest=guest.manifest["key"],
                   cmdline=guest.cmdline, profile=profile.key(), accel=accel,
                   firmware=firmware.hexdigest())


class Entry:
    """A made cache entry, its lock held shared until ``close()``."""

    def __init__(self, directory: Path, meta: dict, made: bool, lock: FileLock):
        self.directory = directory
        self.state = directory / STATE
        self.meta = meta
        self.made = made  # this process booted the guest and saved it
        self._lock = lock

    def close(self) -> None:
        self._lock.close()


def _read(directory: Path) -> dict | None:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if (directory / STATE).is_file() else None


def ensure(key: BootKey, make: Callable[[Path], dict], root: Path | None = None,
           keep: int = KEEP) -> Entry:
    """The entry for ``key``, made by ``make(directory)`` if missing: it must leave the
    stream in ``directory/state.mig`` and return what to record about it (JSON-able)."""
    root = Path(root) if root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    digest = key.digest()
    final = root / digest
    lock = FileLock(root / f"{digest}.lock")
    try:
        lock.acquire(shared=True)
        made = False
        meta = _read(final)
        if meta is None:
            lock.acquire()  # exclusive: one maker; the others wait here
            meta = _read(final)  # made while this process waited for the lock?
            if meta is None:
                meta = _make(root, final, key, make)
                made = True
            lock.acquire(shared=True)
        os.utime(final / META)  # last use, for eviction
    except BaseException:
        lock.close()
        raise
    if made:
        evict(root, keep)
    return Entry(final, meta, made, lock)


def _make(root: Path, final: Path, key: BootKey, make: Callable[[Path], dict]) -> dict:
    shutil.rmtree(final, ignore_errors=True)  # a partial entry (no state.json): made again
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        meta = {"key": dataclasses.asdict(key), **make(tmp)}
        meta["size"] = (tmp / STATE).stat().st_size
        write_atomically(tmp / META, json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def evict(root: Path, keep: int = KEEP) -> list[str]:
    """Remove entries beyond the ``keep`` most recently used that nobody holds; their names."""
    entries = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    entries.sort(key=lambda d: _last_use(d), reverse=True)
    # a maker that died (killed mid-boot) leaves its temporary directory: ".<digest>-..."
    partial = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(".")]
    removed = []
    for directory in entries[keep:] + partial:
        digest = directory.name.lstrip(".").split("-")[0]
        with FileLock(root / f"{digest}.lock") as lock:
            if lock.acquire(block=False):  # nobody uses or makes it
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory.name)
    return removed


def _last_use(directory: Path) -> float:
    try:
        return (directory / META).stat().st_mtime
    except OSError:
        return 0.0


def booted(build, guest, logs: Path, profile, accel: str,
           record: Callable[[str, float], None] = lambda name, seconds: None) -> Entry:
    """The entry for a guest booted on ``build`` with ``profile``: cold-booted now when
    missing (its logs in ``logs``), stopped right after a heartbeat and saved (a paused
    stream: the incoming VM needs `cont`), with a disk of its own that is dropped after the
    save (every fast-started VM gets a fresh one). ``record(name, seconds)`` gets the
    boot's timings."""
    import images  # stdlib-only package at the repository root

    from .machine import VM

    def boot_and_save(directory: Path) -> dict:
        disk = images.make_disk(build.img, directory / "disk.qcow2", "qcow2", "64M")
        t0 = time.monotonic()
        with VM(build, guest, logs, disk=disk, accel=accel, profile=profile,
                name="coldboot") as vm:
            vm.console.wait_for(guest.ready_marker, timeout=180)
            boot = time.monotonic() - t0
            counter = vm.console.wait_counter(timeout=30)
            # stopped at once: the guest has just printed a heartbeat (its disk write
            # went to this VM's disk) and waits out its pause, so the first heartbeat of a
            # restored guest is a whole one, its write on the restored VM's fresh disk
            vm.qmp.cmd("stop")
            t1 = time.monotonic()
            vm.save_state(directory / STATE)
            record(f"{build.name}.cold_boot_to_ready_seconds", boot)
            record(f"{build.name}.save_state_seconds", time.monotonic() - t1)
        disk.unlink()
        return {"build": str(build.system), "profile": repr(profile),
                "counter_at_save": counter, "boot_seconds": round(boot, 3)}

    return ensure(key_for(build.system, guest, profile, accel), boot_and_save)

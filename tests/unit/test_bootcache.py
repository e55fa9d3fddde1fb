"""The booted-state cache (rig/bootcache.py) and what parallel workers share
(lib/locks.py, lib/timings.py): made once per key, waited for by the others, evicted only
when unused. No QEMU: ``make`` writes a fake stream."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig import bootcache, timings
from rig.locks import FileLock, locked


def key(n: int = 0) -> bootcache.BootKey:
    return bootcache.BootKey(binary=f"bin{n}", guest="g", cmdline="c", profile="p",
                             accel="tcg", firmware="f")


def maker(calls: list, counter: int = 7):
    def make(directory: Path) -> dict:
        calls.append(directory)
        (directory / bootcache.STATE).write_bytes(b"stream")
        return {"counter_at_save": counter, "boot_seconds": 1.0}
    return make


def test_made_once_then_found(tmp_path):
    calls = []
    first = bootcache.ensure(key(), maker(calls), root=tmp_path)
    first.close()
    second = bootcache.ensure(key(), maker(calls), root=tmp_path)
    second.close()
    assert len(calls) == 1
    assert first.made and not second.made
    assert second.state.read_bytes() == b"stream"
    assert second.meta["counter_at_save"] == 7 and second.meta["size"] == len(b"stream")
    assert second.meta["key"]["binary"] == "bin0"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [key().digest()]


def test_a_second_user_waits_for_the_maker_and_does_not_boot_again(tmp_path):
    """Two xdist workers ask at once: one boots, the other blocks on the lock until the
    entry is there, then uses it."""
    started, go = threading.Event(), threading.Event()
    made = []

    def slow_make(directory: Path) -> dict:
        made.append(directory)
        started.set()
        assert go.wait(30)
        (directory / bootcache.STATE).write_bytes(b"slow")
        return {"counter_at_save": 1, "boot_seconds": 2.0}

    results = {}
    maker_thread = threading.Thread(
        target=lambda: results.setdefault("a", bootcache.ensure(key(), slow_make, root=tmp_path)))
    maker_thread.start()
    assert started.wait(30)

    def must_not_make(directory: Path) -> dict:
        raise AssertionError("the second user booted the guest again")

    waiter = threading.Thread(
        target=lambda: results.setdefault("b", bootcache.ensure(key(), must_not_make,
                                                                root=tmp_path)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive(), "the second user did not wait for the maker"
    go.set()
    maker_thread.join(30)
    waiter.join(30)
    assert results["a"].made and not results["b"].made
    assert results["b"].state.read_bytes() == b"slow" and len(made) == 1
    for entry in results.values():
        entry.close()


def test_a_failed_boot_leaves_nothing_and_the_next_user_boots(tmp_path):
    def broken(directory: Path) -> dict:
        (directory / bootcache.STATE).write_bytes(b"half")
        raise RuntimeError("QEMU died")

    with pytest.raises(RuntimeError):
        bootcache.ensure(key(), broken, root=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
    calls = []
    entry = bootcache.ensure(key(), maker(calls), root=tmp_path)
    entry.close()
    assert entry.made and len(calls) == 1


def test_eviction_keeps_the_recent_and_the_used(tmp_path):
    entries = []
    for n in range(3):
        entries.append(bootcache.ensure(key(n), maker([]), root=tmp_path, keep=10))
        os.utime(entries[-1].directory / bootcache.META, (1000 + n, 1000 + n))
    entries[1].close()
    entries[2].close()
    # entry 0 is the oldest but still held (a worker fast-starts from it): kept
    assert bootcache.evict(tmp_path, keep=1) == [key(1).digest()]
    entries[0].close()
    assert bootcache.evict(tmp_path, keep=1) == [key(0).digest()]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [key(2).digest()]


def test_a_dead_makers_scratch_is_removed(tmp_path):
    scratch = tmp_path / f".{key().digest()}-abc"
    scratch.mkdir()
    (scratch / bootcache.STATE).write_bytes(b"partial")
    assert bootcache.evict(tmp_path) == [scratch.name]
    with FileLock(tmp_path / f"{key(5).digest()}.lock") as held:
        held.acquire()  # a live maker holds its lock: its scratch stays
        alive = tmp_path / f".{key(5).digest()}-def"
        alive.mkdir()
        assert bootcache.evict(tmp_path) == []
    assert alive.exists()


@dataclass
class Profile:
    files: list

    def firmware_files(self):
        return self.files

    def key(self):
        return "profile"


@dataclass
class Guest:
    manifest: dict
    cmdline: str = "console=ttyS0"


def test_key_follows_the_binary_the_guest_and_the_firmware(tmp_path):
    binary, bios = tmp_path / "qemu-system-x86_64", tmp_path / "bios-256k.bin"
    binary.write_bytes(b"v1")
    bios.write_bytes(b"bios")
    profile, guest = Profile([bios]), Guest({"key": "g1"})
    k1 = bootcache.key_for(binary, guest, profile, "tcg")
    assert bootcache.key_for(binary, guest, profile, "tcg") == k1
    binary.write_bytes(b"v2-rebuilt")
    k2 = bootcache.key_for(binary, guest, profile, "tcg")
    assert k2.binary != k1.binary and k2.digest() != k1.digest()
    assert bootcache.key_for(binary, Guest({"key": "g2"}), profile, "tcg").digest() != k2.digest()
    assert bootcache.key_for(binary, guest, profile, "kvm").digest() != k2.digest()
    bios.write_bytes(b"bios, newer")
    assert bootcache.key_for(binary, guest, profile, "tcg").digest() != k2.digest()


def test_shared_holders_coexist_an_exclusive_one_waits(tmp_path):
    with locked(tmp_path / "l", shared=True), locked(tmp_path / "l", shared=True):
        with FileLock(tmp_path / "l") as other:
            assert not other.acquire(block=False)
    with FileLock(tmp_path / "l") as other:
        assert other.acquire(block=False)


def test_timings_of_every_worker_end_up_in_one_file(tmp_path, monkeypatch):
    path = tmp_path / "timings.json"
    monkeypatch.setattr(timings, "_timings", {"patched.cold_boot": 7.0})
    timings.write(path)
    monkeypatch.setattr(timings, "_timings", {"stock.cold_boot": 6.0})
    timings.write(path)
    assert json.loads(path.read_text()) == {"patched.cold_boot": 7.0, "stock.cold_boot": 6.0}
    timings.clear(path)
    assert not path.exists()

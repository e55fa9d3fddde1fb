"""Every QEMU process the rig starts is registered here; the session-end check reads it."""

from __future__ import annotations

import subprocess
import threading

_lock = threading.Lock()
_started: list[tuple[subprocess.Popen, str]] = []


def register(proc: subprocess.Popen, label: str) -> None:
    with _lock:
        _started.append((proc, label))


def leftovers() -> list[tuple[int, str]]:
    """(pid, label) of started processes still running."""
    with _lock:
        return [(p.pid, label) for p, label in _started if p.poll() is None]


def kill_leftovers() -> list[tuple[int, str]]:
    """Kill (by pid, only our own children) what is still running; return what was killed."""
    left = []
    with _lock:
        for p, label in _started:
            if p.poll() is None:
                left.append((p.pid, label))
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
    return left


def count() -> int:
    with _lock:
        return len(_started)

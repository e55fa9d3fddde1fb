"""Every QEMU process the rig starts is registered here; the session-end check reads it."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

_lock = threading.Lock()
_started: list[tuple[subprocess.Popen, str]] = []
_cleanups: dict[int, Callable[[], None]] = {}


def register(proc: subprocess.Popen, label: str, cleanup: Callable[[], None] | None = None) -> None:
    """Track ``proc``; ``cleanup`` runs if the session-end check has to kill it."""
    with _lock:
        _started.append((proc, label))
        if cleanup is not None:
            _cleanups[proc.pid] = cleanup


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
                cleanup = _cleanups.pop(p.pid, None)
                if cleanup is not None:
                    cleanup()
    return left


def count() -> int:
    with _lock:
        return len(_started)

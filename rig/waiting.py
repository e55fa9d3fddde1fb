"""Waiting on events instead of polling: process exit (pidfd), a file growing (inotify), a
connection to a socket the harness listens on, and TCP/UDP ports held for a test.

Everything here blocks in select() on file descriptors the kernel signals; nothing sleeps
and looks again. Linux only (pidfd_open: 5.3, inotify), like the rest of the rig.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import socket
import struct
import time
from contextlib import contextmanager
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_CREATE = 0x100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


class ProcessExited(Exception):
    """The process a wait depended on ended first."""


def pidfd(pid: int) -> int | None:
    """A pidfd of ``pid`` (readable once it exits), or None where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_exit(proc, fd: int | None, timeout: float) -> bool:
    """Whether ``proc`` (a Popen) ended within ``timeout``: blocks on its pidfd ``fd`` (not
    Popen.wait(timeout), which polls); reaps it."""
    if fd is None:
        try:
            proc.wait(timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            return False
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        proc.wait()
    return bool(ready)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class FileWatch:
    """inotify on one file (watched through its directory, so it may not exist yet).

    ``wait(timeout)`` returns True when the file was created or written since the last
    call, False on timeout; with ``exit_fd`` (a pidfd) it raises ProcessExited when that
    process ended instead.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = _libc.inotify_add_watch(
            self._fd, os.fsencode(self.path.parent), _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE
        )
        if wd < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify_add_watch {self.path.parent}")

    def _drain(self) -> bool:
        """Consume the queued events; whether one was about our file."""
        hit = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return hit
            pos = 0
            while pos + _EVENT.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
                hit |= name == os.fsencode(self.path.name)
                pos += _EVENT.size + length

    def wait(self, timeout: float, exit_fd: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        fds = [self._fd] + ([exit_fd] if exit_fd is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [], _remaining(deadline))
            if not ready:
                return False
            if self._fd in ready and self._drain():
                return True
            if exit_fd is not None and exit_fd in ready:
                raise ProcessExited()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class Listener:
    """A unix socket the harness listens on; QEMU connects to it (a client chardev), so
    the harness never retries a connect: it accepts once QEMU is there, or learns at once
    that QEMU exited (``exit_fd``)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)

    def accept(self, timeout: float, exit_fd: int | None = None) -> socket.socket:
        fds = [self._sock] + ([exit_fd] if exit_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._sock in ready:  # connected: take it even if QEMU exited right after
            conn, _ = self._sock.accept()
            return conn
        if ready:
            raise ProcessExited()
        raise TimeoutError(f"nothing connected to {self.path} in {timeout}s")

    def close(self) -> None:
        self._sock.close()


def _bound(kind: int, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    # SO_REUSEADDR on both sides: QEMU (which sets it on the sockets it binds) may bind the
    # port while this socket holds it; nobody else gets it, not even as an ephemeral port
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s


@contextmanager
def reserved_ports(count: int, kind: int = socket.SOCK_STREAM):
    """``count`` free 127.0.0.1 ports, held (bound, never listening) until the block ends,
    so that no other test or process can take them between choosing and QEMU's bind."""
    held = []
    try:
        for _ in range(count):
            held.append(_bound(kind))
        yield [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def port_is_bindable_by_reuser(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether a process that sets SO_REUSEADDR (as QEMU does) can bind ``port`` now."""
    try:
        s = _bound(kind, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False
        raise
    s.close()
    return True

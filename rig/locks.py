"""Files shared by concurrent test processes (pytest-xdist workers, other sessions): an
advisory lock to wait on (flock blocks in the kernel until the holder lets go: an event
wait, never a retry loop) and writes that a reader never sees half done (write a temporary
file, rename it over the old one).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileLock:
    """An flock on ``path`` (created if missing), held until ``release()``/``close()``.

    ``acquire(shared=True)`` lets other shared holders in; ``acquire()`` is exclusive.
    ``acquire(..., block=False)`` returns False instead of waiting. Converting a held lock
    (shared to exclusive) is not atomic (flock(2)): re-check what the lock guards after it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def acquire(self, shared: bool = False, block: bool = True) -> bool:
        assert self._fd is not None, "lock closed"
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self._fd, op | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock with the descriptor
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[FileLock]:
    """Hold an flock on ``path`` for the ``with`` block."""
    with FileLock(path) as lock:
        lock.acquire(shared=shared)
        yield lock


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""The sha256 of a file's bytes, read in chunks (tarballs, images, binaries): one helper for
the harness and the rig."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()

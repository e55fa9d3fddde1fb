"""Which QEMU binaries the tests run: the lead's `build.py paths --json [--stock|--asan]`.

An environment variable naming a JSON file of the same shape wins over build.py:
QEMU_HARNESS_PATHS (patched), QEMU_HARNESS_STOCK_PATHS (stock) and
QEMU_HARNESS_ASAN_PATHS (patched-asan, the ASan build the bad-input tests also run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.core.config import BINARIES

from .errors import BuildMissing

REPO = Path(__file__).resolve().parents[1]
BUILDS = ("patched", "stock")  # what --builds selects; "patched-asan" only on request
ENV = {"patched": "QEMU_HARNESS_PATHS", "stock": "QEMU_HARNESS_STOCK_PATHS",
       "patched-asan": "QEMU_HARNESS_ASAN_PATHS"}
FLAGS = {"patched": (), "stock": ("--stock",), "patched-asan": ("--asan",)}
MAKE = {"patched": "python3 build.py", "stock": "python3 build.py",
        "patched-asan": "python3 build.py build --asan"}
KEYS = (*BINARIES, "build-dir", "source-dir")  # what a paths file must have


@dataclasses.dataclass(frozen=True)
class QemuBuild:
    name: str  # "patched", "stock" or "patched-asan"
    system: Path  # qemu-system-x86_64
    img: Path
    io: Path
    nbd: Path
    build_dir: Path
    source_dir: Path
    origin: str  # where the paths came from (env file or build.py)

    @classmethod
    def from_json(cls, name: str, data: dict, origin: str) -> QemuBuild:
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise BuildMissing(f"{origin}: keys {missing} missing from the {name} paths JSON")
        b = cls(
            name=name,
            system=Path(data["qemu-system-x86_64"]),
            img=Path(data["qemu-img"]),
            io=Path(data["qemu-io"]),
            nbd=Path(data["qemu-nbd"]),
            build_dir=Path(data["build-dir"]),
            source_dir=Path(data["source-dir"]),
            origin=origin,
        )
        for p in (b.system, b.img):
            if not os.access(p, os.X_OK):
                raise BuildMissing(
                    f"{name} build: {p} is not an executable (from {origin}); "
                    f"run `{MAKE.get(name, 'python3 build.py')}` to build it"
                )
        return b


def build_command(name: str) -> list[str]:
    return [
        sys.executable if sys.executable else "python3",
        str(REPO / "build.py"),
        "paths",
        "--json",
        *FLAGS[name],
    ]


def resolve(name: str) -> QemuBuild:
    """Find build ``name``; raise BuildMissing with the command that makes it."""
    if name not in ENV:
        raise ValueError(f"unknown build {name!r} (one of {tuple(ENV)})")
    env_file = os.environ.get(ENV[name])
    if env_file:
        try:
            data = json.loads(Path(env_file).read_text())
        except (OSError, ValueError) as exc:
            raise BuildMissing(f"{ENV[name]}={env_file}: cannot read paths JSON: {exc}") from exc
        return QemuBuild.from_json(name, data, f"{ENV[name]}={env_file}")
    if not (REPO / "build.py").is_file():
        raise BuildMissing(
            f"no {name} build: {REPO / 'build.py'} does not exist and {ENV[name]} is not set"
        )
    cmd = build_command(name)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildMissing(
            f"no {name} build (`{' '.join(cmd[1:])}` exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}); run `{MAKE[name]}` "
            f"or set {ENV[name]} to a paths JSON file"
        )
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise BuildMissing(f"`{' '.join(cmd[1:])}` printed no JSON: {proc.stdout[:200]!r}") from exc
    return QemuBuild.from_json(name, data, " ".join(cmd[1:]))

"""Pinned inputs and the project layout, as data.

The baseline pin lives here and nowhere else: to move to another point
release, change ``BASELINE`` (version, Debian version, tarball sha256) and
re-run ``build.py import``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Baseline:
    upstream_version: str
    upstream_tag: str
    upstream_git: str
    debian_package: str
    debian_version: str
    debian_suite: str
    orig_tarball: str
    orig_sha256: str
    orig_topdir: str
    # Tag of the imported baseline, and of baseline + repack fix-ups: the
    # commit the series applies on (and the stock build is built from).
    import_tag: str = "baseline"
    base_tag: str = "series-base"
    patched_branch: str = "series"

    @property
    def ident(self) -> str:
        return f"{self.debian_package} {self.debian_version}"


BASELINE = Baseline(
    upstream_version="10.0.13",
    upstream_tag="v10.0.13",
    upstream_git="https://gitlab.com/qemu-project/qemu.git",
    debian_package="qemu",
    debian_version="1:10.0.13+ds-0+deb13u1",
    debian_suite="trixie",
    orig_tarball="qemu_10.0.13+ds.orig.tar.xz",
    orig_sha256="6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae",
    orig_topdir="qemu-10.0.13",
)

# Debian packages the build and the guests need (checked with dpkg-query,
# installed with apt-get when running as root).
APT_PACKAGES = (
    "git", "build-essential", "ccache", "pkg-config", "python3-venv",
    "libglib2.0-dev", "libpixman-1-dev", "libslirp-dev", "libfdt-dev",
    "zlib1g-dev", "flex", "bison", "bzip2", "xz-utils", "dpkg-dev",
    "seabios", "qemu-system-data", "ipxe-qemu",
    "busybox-static", "cpio", "kmod",
    "qemu-utils",  # Debian's qemu-img 7.2: a real old peer for compatibility tests
    "mmdebstrap",  # chroots of older Debian releases: the peer matrix (harness/peers.py)
)

# Python packages for the project venv (PyPI).
PIP_PACKAGES = (
    "meson>=1.5", "ninja", "pycotap>=1.1.0", "pytest", "qemu.qmp", "pexpect",
    "nox", "ruff", "pytest-xdist",
)

BUILD_TARGETS = (
    "qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd",
    "storage-daemon/qemu-storage-daemon",
)


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qemu-snap-harness"


@dataclass(frozen=True)
class Layout:
    """Where everything lives, derived from the project root."""

    root: Path = ROOT
    cache: Path = field(default_factory=cache_home)

    @property
    def venv(self) -> Path:
        return self.root / ".venv"

    @property
    def qemu(self) -> Path:
        return self.root / "qemu"

    @property
    def stock(self) -> Path:
        return self.root / "qemu-stock"

    @property
    def patches(self) -> Path:
        return self.root / "patches"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def fixups(self) -> Path:
        return self.root / "harness" / "fixups"

    @property
    def src_cache(self) -> Path:
        return self.cache / "src"

    @property
    def peers_cache(self) -> Path:
        return self.cache / "peers"

    @property
    def bisect_tree(self) -> Path:
        return self.out / "bisect" / "qemu"

    def venv_bin(self, tool: str) -> Path:
        return self.venv / "bin" / tool

    def tool(self, name: str) -> str:
        """A tool from the venv, else from PATH (else its bare name, so that
        running it fails with the runner's "not installed" error)."""
        import shutil
        path = self.venv_bin(name)
        return str(path) if path.exists() else (shutil.which(name) or name)


@dataclass(frozen=True)
class BuildProfile:
    """One QEMU build: which tree, which build dir, which configure options."""

    name: str                 # "patched", "stock", "patched-asan"
    source_attr: str          # Layout attribute of the source tree
    build_subdir: str = "build"
    werror: bool = True
    asan: bool = False

    def source(self, layout: Layout) -> Path:
        return getattr(layout, self.source_attr)

    def build_dir(self, layout: Layout) -> Path:
        return self.source(layout) / self.build_subdir


PROFILES = {
    "patched": BuildProfile("patched", "qemu"),
    "stock": BuildProfile("stock", "stock"),
    "patched-asan": BuildProfile("patched-asan", "qemu", build_subdir="build-asan",
                                 asan=True),
    "bisect": BuildProfile("bisect", "bisect_tree"),
}

"""Pinned inputs and the project layout, as data.

The baselines (which QEMU release, from where, with which sha256) are
profiles in ``harness/baselines.toml``; ``select_baseline(NAME)`` gives one
(``build.py --baseline NAME``), checked on load. Moving to another point
release is an edit of that file and a re-run of ``build.py import``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import EnvironmentProblem, UsageError

ROOT = Path(__file__).resolve().parents[2]
BASELINES_FILE = ROOT / "harness" / "baselines.toml"
# The profile to use when the command line names none (and what `build.py
# --baseline NAME test` hands down to the test processes it starts).
BASELINE_ENV = "QEMU_HARNESS_BASELINE"
UPSTREAM_GIT = "https://gitlab.com/qemu-project/qemu.git"


@dataclass(frozen=True)
class Baseline:
    name: str                 # the profile name in baselines.toml, e.g. "10.2.2"
    upstream_version: str
    upstream_tag: str
    debian_package: str
    debian_version: str
    debian_suite: str
    orig_tarball: str
    orig_sha256: str
    orig_topdir: str
    upstream_git: str = UPSTREAM_GIT
    apt_options: tuple[str, ...] = ()
    # Tag of the imported baseline, and of baseline + repack fix-ups: the
    # commit the series applies on (and the stock build is built from).
    import_tag: str = "baseline"
    base_tag: str = "series-base"
    patched_branch: str = "series"

    @property
    def ident(self) -> str:
        return f"{self.debian_package} {self.debian_version}"


# Keys a profile must have / may have in baselines.toml.
PROFILE_KEYS = ("upstream_version", "upstream_tag", "debian_package", "debian_version",
                "debian_suite", "orig_tarball", "orig_sha256", "orig_topdir")
OPTIONAL_KEYS = ("upstream_git", "apt_options")
_CHECKS = {
    "upstream_version": (r"\d+\.\d+\.\d+(-rc\d+)?", "a QEMU version like 10.2.2"),
    "upstream_tag": (r"v\S+", "a git tag like v10.2.2"),
    "debian_package": (r"[a-z0-9][a-z0-9.+-]+", "a Debian source package name"),
    "debian_version": (r"(\d+:)?[0-9][A-Za-z0-9.+~-]*", "a Debian version like 1:10.2.2+ds-1"),
    "debian_suite": (r"[a-z][a-z0-9-]*", "a Debian suite like sid or trixie"),
    "orig_tarball": (r"[^/\s]+\.tar\.(xz|gz|bz2)", "a tarball file name (no directory)"),
    "orig_sha256": (r"[0-9a-f]{64}", "64 lowercase hex digits (`sha256sum TARBALL`)"),
    "orig_topdir": (r"[^/\s]+", "the tarball's top directory, e.g. qemu-10.2.2"),
    "upstream_git": (r"\S+", "a git URL"),
}
_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]*"      # used in paths: fixups/NAME, out/port/NAME
_APT_OPTION_RE = r'[A-Za-z0-9][A-Za-z0-9:_-]* "[^"\n;]*"'


@dataclass(frozen=True)
class Baselines:
    """The profiles of baselines.toml, and the name of the default one."""

    default: str
    profiles: dict[str, Baseline]
    path: Path = BASELINES_FILE

    def get(self, name: str | None = None) -> Baseline:
        name = name or self.default
        if name not in self.profiles:
            known = ", ".join(self.profiles)
            raise UsageError(
                f"no baseline profile '{name}' in {self.path} (known: {known})",
                hint=f"pick one with `python3 build.py --baseline {self.default} ...` "
                     f"(or unset {BASELINE_ENV}), or add [profiles.\"{name}\"] to "
                     f"{self.path}")
        return self.profiles[name]


def _bad(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: {what}",
                      hint=f"fix {path} (its header comment lists the keys of a profile), "
                           "then run the command again")


def _profile(path: Path, name: str, table) -> Baseline:
    where = f"profile '{name}'"
    if not re.fullmatch(_NAME_RE, name):
        raise _bad(path, f"{where}: a profile name is letters, digits, '.', '_', '-'")
    if not isinstance(table, dict):
        raise _bad(path, f"{where} is not a table ([profiles.\"{name}\"])")
    missing = [k for k in PROFILE_KEYS if k not in table]
    if missing:
        raise _bad(path, f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(table) - set(PROFILE_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise _bad(path, f"{where}: unknown key(s) {', '.join(unknown)}")
    for key, (pattern, meaning) in _CHECKS.items():
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise _bad(path, f"{where}: {key} = {value!r} is not {meaning}")
    options = table.get("apt_options", [])
    if not isinstance(options, list) or not all(
            isinstance(o, str) and re.fullmatch(_APT_OPTION_RE, o) for o in options):
        raise _bad(path, f"{where}: apt_options must be a list of strings like "
                         "'Acquire::Check-Valid-Until \"false\"'")
    values = {k: table[k] for k in PROFILE_KEYS + ("upstream_git",) if k in table}
    return Baseline(name=name, apt_options=tuple(options), **values)


def load_baselines(path: Path = BASELINES_FILE) -> Baselines:
    """All profiles of ``path``, validated; UsageError naming what is wrong."""
    try:
        import tomllib
    except ModuleNotFoundError as exc:  # python3 < 3.11
        raise EnvironmentProblem("reading harness/baselines.toml needs python3 >= 3.11",
                                 hint="run build.py with python3.11 or newer") from exc
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"default", "profiles"})
    if unknown:
        raise _bad(path, f"unknown top-level key(s) {', '.join(unknown)}")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise _bad(path, "no [profiles.\"NAME\"] tables")
    result = {name: _profile(path, name, table) for name, table in profiles.items()}
    default = data.get("default")
    if not isinstance(default, str) or default not in result:
        raise _bad(path, f"default = {default!r} does not name a profile "
                         f"(profiles: {', '.join(result)})")
    return Baselines(default, result, path)


def select_baseline(name: str | None = None, path: Path = BASELINES_FILE) -> Baseline:
    """Profile ``name``; without one, $QEMU_HARNESS_BASELINE, else the default."""
    return load_baselines(path).get(name or os.environ.get(BASELINE_ENV) or None)


# Debian's firmware for the +ds repack (which lacks these blobs): the builds link them into
# their qemu-bundle, the rig's VMs and libvirt's chroot find them here (one list for all).
FIRMWARE_DIRS = (
    "/usr/share/seabios",  # seabios: bios-256k.bin, vgabios-*.bin
    "/usr/share/qemu",  # qemu-system-data: linuxboot_dma.bin, ...
    "/usr/lib/ipxe/qemu",  # ipxe-qemu: efi-*.rom / pxe-*.rom for NICs
)

# Debian packages the build and the guests need (checked with dpkg-query,
# installed with apt-get when running as root).
APT_PACKAGES = (
    "git", "build-essential", "ccache", "pkg-config", "python3-venv",
    "libglib2.0-dev", "libpixman-1-dev", "libslirp-dev", "libfdt-dev",
    "zlib1g-dev", "flex", "bison", "bzip2", "xz-utils", "dpkg-dev",
    "device-tree-compiler",  # dtc: 10.2's pc-bios/dtb ships only .dts sources
    "seabios", "qemu-system-data", "ipxe-qemu",
    "busybox-static", "cpio", "kmod",
    "qemu-utils",  # Debian's qemu-img 7.2: a real old peer for compatibility tests
    "mmdebstrap",  # chroots of older Debian releases: the peer matrix (harness/stages/peers.py)
    "valgrind",  # the query-netdevs leak checks (tests/qemu/test_netdevs_leaks.py)
    # headless Chromium: the report checked in a browser (tests/unit/test_report_browser.py)
    # and its screenshot (build.py report: out/results/report.png); the fonts the report and
    # its SVG name first, so that the picture is the same anywhere
    "chromium", "fonts-dejavu-core",
    # the machine's libvirt (9.0 on Debian 12) drives the patched QEMU: tests/libvirt; the
    # daemon and virsh only (no libvirt-daemon-system: no service, users or networks)
    "libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients",
)

# Python packages for the project venv (PyPI).
PIP_PACKAGES = (
    "meson>=1.5", "ninja", "pycotap>=1.1.0", "pytest", "pytest-timeout", "qemu.qmp",
    "pexpect", "nox", "ruff", "pytest-xdist",
    # tests/unit/test_gitlab_ci.py reads .gitlab-ci.yml
    "pyyaml",
    "hypothesis",  # the reliability suite's snapshot-table fuzzer (tests/reliability)
)

# The binaries of a build, by their keys in `build.py paths --json` (the stable interface:
# rig/builds.py, bench and scripts read these keys; also their paths in the build tree).
BINARIES = ("qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd")
PATHS_KEYS = (*BINARIES, "build-dir", "source-dir", "baseline")
BUILD_TARGETS = (*BINARIES, "storage-daemon/qemu-storage-daemon")


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

    @property
    def port_dir(self) -> Path:
        return self.out / "port"

    def port_tree(self, profile: str) -> Path:
        """Where `port` imports baseline ``profile`` and applies the series."""
        return self.port_dir / profile / "qemu"

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
    source_path: Path | None = None  # a tree outside the layout's (`port`)

    def source(self, layout: Layout) -> Path:
        return self.source_path or getattr(layout, self.source_attr)

    def build_dir(self, layout: Layout) -> Path:
        return self.source(layout) / self.build_subdir


PROFILES = {
    "patched": BuildProfile("patched", "qemu"),
    "stock": BuildProfile("stock", "stock"),
    # No -Werror under the sanitizers: GCC's ASan/UBSan instrumentation makes its flow
    # analysis warnings (-Wmaybe-uninitialized, -Wstringop-overflow) spurious; the patched
    # and bisect builds keep -Werror for the code itself.
    "patched-asan": BuildProfile("patched-asan", "qemu", build_subdir="build-asan",
                                 asan=True, werror=False),
    "bisect": BuildProfile("bisect", "bisect_tree"),
}

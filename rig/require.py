"""What the QEMU tests need from the machine, checked in one place (as QEMU's own
tests/functional/qemu_test/decorators.py does with skipIfMissingCommands & co.).

Without a capability a test is skipped with a reason a user can act on (the command that
provides it). In a run that requires everything it fails instead, so that a missing build,
tool or firmware can never turn CI green:

  --require-all                 (pytest option)
  QEMU_HARNESS_REQUIRE_ALL=1    (environment; `build.py test --require-all` sets it for the
                                suites that run QEMU)
  CI=true                       (nightly CI sets it)

The `require` fixture (conftest.py) is a Requirements for the session:

  require.build("stock")                        -> QemuBuild (also "patched-asan")
  require.tool("valgrind", package="valgrind")  -> path of a command in PATH
  require.executable(path, package=...)         -> path of a given executable
  require.iotests_check(build)                  -> the build's tests/qemu-iotests/check
  require.firmware(build)                       -> the build's firmware directory
  require.kvm()                                 (QEMU_HARNESS_ACCEL=kvm asked for it)
  require.tap()                                 (root and /dev/net/tun)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

from . import builds
from .builds import QemuBuild
from .errors import BuildMissing

ENV = "QEMU_HARNESS_REQUIRE_ALL"
_TRUE = ("1", "true", "yes", "on")


def required_by(option: bool, environ: Mapping[str, str] | None = None) -> str | None:
    """What makes every capability required in this run (None: a missing one skips)."""
    environ = os.environ if environ is None else environ
    if option:
        return "--require-all"
    if environ.get(ENV, "").strip().lower() in _TRUE:
        return f"{ENV}={environ[ENV]}"
    if environ.get("CI", "").strip().lower() in _TRUE:
        return f"CI={environ['CI']}"
    return None


class Requirements:
    def __init__(self, required_by: str | None = None):
        self.required_by = required_by

    def missing(self, reason: str) -> NoReturn:
        """Skip with ``reason``; fail with it when everything is required."""
        if self.required_by:
            pytest.fail(f"missing capability: {reason}\n({self.required_by}: every "
                        "capability is required, a missing one fails the test)",
                        pytrace=False)
        pytest.skip(reason)

    def build(self, name: str) -> QemuBuild:
        try:
            return builds.resolve(name)
        except BuildMissing as exc:
            self.missing(str(exc))

    def tool(self, name: str, package: str) -> str:
        path = shutil.which(name)
        if path is None:
            self.missing(f"{name} is not installed: apt-get install {package} "
                         "(`python3 build.py setup` installs it)")
        return path

    def executable(self, path: Path, package: str, why: str = "") -> Path:
        if not os.access(path, os.X_OK):
            self.missing(f"{path} is absent: apt-get install {package} "
                         f"(`python3 build.py setup` installs it){why}")
        return path

    def iotests_check(self, build: QemuBuild) -> Path:
        check = build.build_dir / "tests" / "qemu-iotests" / "check"
        if not check.exists():
            self.missing(f"{check} missing: configure the {build.name} build with "
                         "--enable-tools and build it (`python3 build.py`)")
        return check

    def firmware(self, build: QemuBuild) -> Path:
        bundle = build.build_dir / "qemu-bundle" / "usr" / "local" / "share" / "qemu"
        if not (bundle / "bios-256k.bin").exists():
            self.missing(f"the {build.name} build cannot find its firmware: "
                         f"{bundle}/bios-256k.bin is missing (link /usr/share/seabios/*.bin, "
                         "/usr/share/qemu/linuxboot_dma.bin, ... there; `python3 build.py` "
                         "does it)")
        return bundle

    def kvm(self) -> None:
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            self.missing("QEMU_HARNESS_ACCEL=kvm but /dev/kvm is not usable: unset it to "
                         "use tcg")

    def tap(self) -> None:
        if not (os.geteuid() == 0 and os.access("/dev/net/tun", os.R_OK | os.W_OK)):
            self.missing("tap backends need root and /dev/net/tun (deselect with "
                         "-k 'not tap' where neither can be had)")

"""What the libvirt suite needs from the machine, checked in one place.

Without a capability a test is skipped with a reason a user can act on (the command that
provides it). In a run that requires everything it fails instead, so that a missing
libvirt, chroot, build or root can never turn CI green:

  --require-all                 (pytest option)
  QEMU_HARNESS_REQUIRE_ALL=1    (environment)
  CI=true                       (nightly CI sets it)

The same rule, and the same spelling, as the QEMU suites' capability checks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import NoReturn

import pytest

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

    def root(self, why: str) -> None:
        if os.geteuid() != 0:
            self.missing(f"not root: {why}; run the libvirt suite as root")

    def tool(self, name: str, package: str) -> str:
        path = shutil.which(name)
        if path is None:
            self.missing(f"{name} is not installed: apt-get install {package} "
                         "(`python3 build.py setup` installs it)")
        return path

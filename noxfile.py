"""nox sessions: lint, unit, tests, iotests, peers, libvirt, reliability, bench.

They run in the project venv that `python3 build.py setup` makes
(`.venv/bin/nox -s unit`); nothing is installed per session.
"""

from __future__ import annotations

import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "unit"]

PY = sys.executable


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the pipeline, the QEMU driver, snaptree, the guest builder, tests, bench."""
    session.run(PY, "-m", "ruff", "check", "build.py", "noxfile.py", "harness", "rig",
                "snaptree", "images", "tests", "bench")


@nox.session
def unit(session: nox.Session) -> None:
    """The harness's own tests (no QEMU build needed)."""
    session.run(PY, "build.py", "test", "--suite", "unit", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """QEMU behaviour on real guests, patched beside stock (needs `build.py`)."""
    session.run(PY, "build.py", "test", "--suite", "qemu", *session.posargs)


@nox.session
def iotests(session: nox.Session) -> None:
    """The 24 snapshot-related upstream iotests, patched and stock."""
    session.run(PY, "build.py", "test", "--suite", "iotests", *session.posargs)


@nox.session
def peers(session: nox.Session) -> None:
    """Older QEMU releases on the series' images, and back (builds the peer chroots once)."""
    session.run(PY, "build.py", "test", "--suite", "peers", *session.posargs)


@nox.session
def libvirt(session: nox.Session) -> None:
    """libvirt 9.0 and 11.3 manage a snapshot tree of the patched QEMU (builds the chroot)."""
    session.run(PY, "build.py", "test", "--suite", "libvirt", *session.posargs)


@nox.session
def reliability(session: nox.Session) -> None:
    """Crash states, fault injection, kill -9 and the fuzzer (posargs: --full for the full
    run)."""
    session.run(PY, "build.py", "test", "--suite", "reliability", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (tables, never pass/fail on time)."""
    session.run(PY, "bench/run.py", *session.posargs)

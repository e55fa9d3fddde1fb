"""Set-up: Debian build dependencies and the project venv.

As root the missing Debian packages are installed with apt-get; otherwise
the exact apt-get line is printed and the stage stops. The venv gets its
PyPI packages once; a stamp makes later runs a no-op.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from harness.core.config import APT_PACKAGES, PIP_PACKAGES, Layout
from harness.core.errors import CommandFailed, EnvironmentProblem
from harness.core.pipeline import Context, NoRequest, Outcome, Stage
from harness.core.runner import StageLog, run


def missing_debs(packages=APT_PACKAGES, log: StageLog | None = None) -> list[str]:
    from harness.core.runner import NullLog
    res = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *packages],
              log or NullLog(), check=False)
    installed = {line.split()[0] for line in res.stdout.splitlines()
                 if len(line.split()) >= 2 and line.split()[1].startswith("ii")}
    return [p for p in packages if p not in installed]


def apt_lists_present(lists: Path = Path("/var/lib/apt/lists")) -> bool:
    return any(lists.glob("*_Packages*"))


def ensure_debs(log: StageLog, packages=APT_PACKAGES, is_root: bool | None = None) -> list[str]:
    if is_root is None:
        is_root = os.geteuid() == 0
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if is_root and not apt_lists_present():
        # a fresh machine: the guest builder's apt-get download needs lists too
        run(["apt-get", "update"], log, env=env)
    missing = missing_debs(packages, log)
    if not missing:
        log.note("all Debian build dependencies are installed")
        return []
    line = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not is_root:
        raise EnvironmentProblem(
            f"missing Debian packages: {' '.join(missing)}",
            hint="as root: apt-get update && " + " ".join(line))
    try:
        run(["apt-get", "update"], log, env=env)
        run(line, log, env=env)
    except CommandFailed as exc:
        raise EnvironmentProblem(f"apt-get could not install {' '.join(missing)}",
                                 log=exc.log, hint="read the log; then "
                                 "`python3 build.py setup` again") from exc
    return missing


def _stamp_text(packages) -> str:
    return hashlib.sha256("\n".join(packages).encode()).hexdigest() + "\n"


def ensure_venv(layout: Layout, log: StageLog, packages=PIP_PACKAGES) -> bool:
    """Create .venv and install the PyPI packages; False when nothing to do."""
    python = layout.venv_bin("python3")
    stamp = layout.venv / ".harness-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp_text(packages):
        log.note(f"{layout.venv} is up to date")
        return False
    try:
        if not python.exists():
            run([sys.executable, "-m", "venv", layout.venv], log)
        run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
             *packages], log)
    except CommandFailed as exc:
        raise EnvironmentProblem("could not set up the project venv", log=exc.log,
                                 hint="check PyPI is reachable (pip's error is in the "
                                      "log), then `python3 build.py setup` again") from exc
    stamp.write_text(_stamp_text(packages))
    return True


def venv_python(layout: Layout) -> Path:
    python = layout.venv_bin("python3")
    if not python.exists():
        raise EnvironmentProblem(f"no project venv at {layout.venv}",
                                 hint="run `python3 build.py setup`")
    return python


# -- the stage ---------------------------------------------------------------------------


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome[list[str]]:
    installed = ensure_debs(log)
    made = ensure_venv(ctx.layout, log)
    return Outcome((f"installed {' '.join(installed)}; " if installed else
                    "Debian packages ok; ") + ("venv set up" if made else "venv up to date"),
                   installed)


STAGE = Stage("setup", stage, "install Debian build deps (as root) and the venv")

"""The pipeline's stages, one module each; this registry is what the CLI offers.

Each module ends with its stage: a function ``(Context, Request, StageLog) -> Outcome`` that
prints nothing, its request type (a frozen dataclass of the stage's options) and ``STAGE``.
"""

from __future__ import annotations

from harness.core.pipeline import Stage
from harness.stages import (
    baseline,
    bisect,
    build,
    checkpatch,
    clean,
    export,
    images,
    libvirt,
    peers,
    port,
    report,
    series,
    setup,
    status,
)

STAGES: dict[str, Stage] = {m.STAGE.name: m.STAGE for m in (
    setup, baseline, series, build, images, export, status, clean, checkpatch, bisect, port,
    report, peers, libvirt)}

# `build.py` / `build.py all`: a fresh machine to binaries and a guest
ALL = ("setup", "import", "apply", "build", "images")

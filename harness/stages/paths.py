"""Where the binaries of a build are (``build.py paths --json``)."""

from __future__ import annotations

import json

from harness.core.config import BINARIES, PROFILES, BuildProfile, Layout
from harness.core.errors import BuildMissing
from harness.core.pipeline import Context
from harness.stages.baseline import tree_version


def build_paths(profile: BuildProfile, layout: Layout) -> dict[str, str]:
    """Absolute paths of a finished build; BuildMissing when any is missing."""
    bdir = profile.build_dir(layout)
    paths = {key: str(bdir / key) for key in BINARIES}
    paths["build-dir"] = str(bdir)
    paths["source-dir"] = str(profile.source(layout))
    # the QEMU version the build's tree holds (VERSION file, else the import record)
    paths["baseline"] = tree_version(profile.source(layout))
    missing = [k for k in BINARIES if not (bdir / k).is_file()]
    if missing:
        flag = {"stock": " --only stock", "patched-asan": " --asan"}.get(profile.name, "")
        raise BuildMissing(
            f"the {profile.name} build is missing {', '.join(missing)} (in {bdir})",
            hint=f"run `python3 build.py` (everything) or `python3 build.py build{flag}`")
    return paths


def paths_json(ctx: Context, profile: str) -> str:
    """`build.py paths --json`: the stable interface tests and scripts read."""
    from harness.stages.baseline import require_selected
    if (ctx.layout.qemu / ".git").exists():  # without a tree: "build missing" below
        require_selected(ctx, "paths")
    return json.dumps(build_paths(PROFILES[profile], ctx.layout), indent=2)

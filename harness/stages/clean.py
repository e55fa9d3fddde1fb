"""The `clean` stage: remove the builds, and with --trees the QEMU trees, never work that
is not exported."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from harness.core.config import PROFILES
from harness.core.errors import PatchConflict
from harness.core.git import Git
from harness.core.pipeline import Context, Outcome, Stage
from harness.core.runner import StageLog
from harness.stages import series


@dataclass(frozen=True)
class CleanRequest:
    trees: bool = False  # qemu/, qemu-stock/ and the port trees too
    force: bool = False  # even with work that is not exported


def stage(ctx: Context, request: CleanRequest, log: StageLog) -> Outcome[list[str]]:
    lay = ctx.layout
    if request.trees and (lay.qemu / ".git").exists() and not request.force:
        work = series.unexported_work(Git(lay.qemu, log), lay.patches, ctx.baseline)
        if work:
            raise PatchConflict(
                "qemu/ holds work that is not in patches/: " + "; ".join(work),
                hint="`python3 build.py export` first, or `clean --trees --force`; "
                     "nothing was removed")
    removed = []
    port_builds = sorted(lay.port_dir.glob("*/qemu/build")) if lay.port_dir.is_dir() else []
    for bdir in [prof.build_dir(lay) for prof in PROFILES.values()] + port_builds:
        if bdir.exists():
            shutil.rmtree(bdir)
            removed.append(str(bdir))
    if request.trees:
        for tree in (lay.stock, lay.qemu, lay.port_dir):
            if tree.exists():
                shutil.rmtree(tree)
                removed.append(str(tree))
    return Outcome("removed " + (", ".join(removed) if removed else "nothing"), removed)


STAGE = Stage("clean", stage, "remove builds (--trees: the QEMU trees too)", CleanRequest)

"""The `images` stage: the test guest (kernel + busybox initramfs), built by the images/
package at the repository root and cached by content hash."""

from __future__ import annotations

from harness.core.errors import EnvironmentProblem
from harness.core.pipeline import Context, NoRequest, Outcome, Stage
from harness.core.runner import StageLog


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome:
    try:
        import images as guest_images
    except ImportError as exc:
        raise EnvironmentProblem(f"the guest image builder cannot be loaded: {exc}") from exc
    try:
        guest = guest_images.ensure_guest(log=log.note)
    except guest_images.ImageError as exc:
        raise EnvironmentProblem(f"cannot build the test guest: {exc}",
                                 hint="read the images log; `python3 build.py setup` "
                                      "installs what the builder needs") from exc
    return Outcome(f"guest kernel {guest.kernel.name}, initrd {guest.initrd}", guest)


STAGE = Stage("images", stage, "build the test guest (kernel + initramfs)")

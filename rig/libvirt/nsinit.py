"""Start a daemon in its own mount namespace, with private directories bound over its
fixed paths, optionally inside a chroot.

    unshare --mount --propagation private -- python3 nsinit.py SPEC.json

SPEC.json (written by daemon.py; paths are host paths unless noted):

    {"root": "/" or a chroot directory,
     "mounts": [{"kind": "bind"|"rbind"|"proc"|"tmpfs", "source": HOST PATH (bind),
                 "target": PATH INSIDE ROOT, "readonly": bool}, ...],
     "argv": [the daemon and its arguments, as seen inside ROOT],
     "env": {...}}

Every mount is made in the new namespace only (private propagation): the host never sees
it, and it goes away with the last process of the namespace (the daemon and the QEMU
processes it starts). Mount points are created under ROOT when missing. Then chroot(ROOT)
(when not "/"), chdir("/") and exec the daemon: the pid stays the one the caller started.

Standard library only, one mount command per mount, argument lists only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def target_path(root: str, target: str) -> str:
    """The host path of ``target`` (a path inside ``root``)."""
    return os.path.join(root, target.lstrip("/")) if root != "/" else target


def mount_argv(mount: dict, where: str) -> list[str]:
    kind = mount["kind"]
    if kind in ("bind", "rbind"):
        opts = kind + (",ro" if mount.get("readonly") else "")
        return ["mount", "-o", opts, mount["source"], where]
    if kind == "proc":
        return ["mount", "-t", "proc", "proc", where]
    if kind == "tmpfs":
        return ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", where]
    raise ValueError(f"unknown mount kind {kind!r}")


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec = json.load(fh)
    root = spec["root"]
    for mount in spec["mounts"]:
        where = target_path(root, mount["target"])
        source = mount.get("source")
        if source and os.path.isfile(source):
            if not os.path.exists(where):
                os.makedirs(os.path.dirname(where), exist_ok=True)
                open(where, "a").close()
        else:
            os.makedirs(where, exist_ok=True)
        cmd = mount_argv(mount, where)
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"nsinit: {' '.join(cmd)} failed ({res.returncode}): "
                  f"{res.stderr.strip()}", file=sys.stderr, flush=True)
            return 126
    if root != "/":
        os.chroot(root)
    os.chdir("/")
    try:
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        print(f"nsinit: cannot run {spec['argv'][0]}: {exc}", file=sys.stderr, flush=True)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))

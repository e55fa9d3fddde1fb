"""The binaries of the writer (a build of the harness, or Debian's) and of the peers (chroots
of harness/stages/peers.py), run by argument list, every command and its output logged."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.stages import peers as hpeers
from rig.commands import CommandLog, Result

DEBIAN = {
    "qemu-img": "/usr/bin/qemu-img",
    "qemu-io": "/usr/bin/qemu-io",
    "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
}
# A VM with no guest (-S): enough for savevm/loadvm/delvm on the disk.
VM_ARGS = (
    "-nodefaults",
    "-no-user-config",
    "-machine",
    "pc",
    "-accel",
    "tcg",
    "-display",
    "none",
    "-m",
    "64",
    "-S",
    "-qmp",
    "stdio",
)


class CommandError(Exception):
    """A command of the writer or a peer failed (deliberately not an AssertionError: a
    strict xfail for lost data must not swallow a peer that could not even run)."""


@dataclass(frozen=True)
class Tools:
    """qemu-img, qemu-io, qemu-system-x86_64 of one QEMU, as argv prefixes."""

    name: str
    version: str
    img: tuple[str, ...]
    io: tuple[str, ...] | None = None
    system: tuple[str, ...] | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    chroot: hpeers.PeerRoot | None = None  # a peer: host paths under it are passed as seen inside
    series: bool = False  # the build carries the series

    @property
    def root(self) -> Path | None:
        return self.chroot.root if self.chroot else None

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return hpeers.version_tuple(self.version)

    @property
    def label(self) -> str:
        return f"{self.name} (QEMU {self.version})"

    def arg(self, a: str | os.PathLike) -> str:
        if isinstance(a, Path) and self.root is not None:
            return "/" + str(a.resolve().relative_to(self.root.resolve()))
        return os.fspath(a)

    @classmethod
    def of_peer(cls, root: hpeers.PeerRoot) -> Tools:
        return cls(
            root.name,
            root.qemu_version,
            tuple(root.command("qemu-img")),
            tuple(root.command("qemu-io")),
            tuple(root.command("qemu-system-x86_64")),
            env=dict(hpeers.ENV),
            chroot=root,
        )

    @classmethod
    def of_build(cls, build) -> Tools:
        """A QemuBuild of rig/builds.py (patched carries the series)."""
        return cls(
            build.name,
            probe_version([str(build.img)]),
            (str(build.img),),
            (str(build.io),),
            (str(build.system),) if os.access(build.system, os.X_OK) else None,
            series=build.name == "patched",
        )

    @classmethod
    def of_debian(cls) -> Tools | None:
        """Debian's own qemu-utils (7.2 on bookworm): a stand-in writer without the series."""
        if not os.access(DEBIAN["qemu-img"], os.X_OK):
            return None
        system = DEBIAN["qemu-system-x86_64"]
        return cls(
            "debian",
            probe_version([DEBIAN["qemu-img"]]),
            (DEBIAN["qemu-img"],),
            (DEBIAN["qemu-io"],) if os.access(DEBIAN["qemu-io"], os.X_OK) else None,
            (system,) if os.access(system, os.X_OK) else None,
        )


def probe_version(img: list[str]) -> str:
    out = subprocess.run([*img, "--version"], capture_output=True, text=True, check=False)
    return hpeers.parse_qemu_version(out.stdout + out.stderr)


class Commands:
    """Runs commands for one test (rig/commands.py) and logs each to the test's log."""

    def __init__(self, log: Path):
        self.log = CommandLog(log)

    def note(self, text: str) -> None:
        self.log.note(text)

    def run(
        self,
        tools: Tools,
        tool: str,
        *args: str | os.PathLike,
        rcs: Sequence[int] | None = (0,),
        stdin: str | None = None,
        timeout: float = 120,
    ) -> Result:
        prefix = {"img": tools.img, "io": tools.io, "system": tools.system}[tool]
        if prefix is None:
            raise CommandError(f"{tools.label} has no {tool} binary")
        argv = [*prefix, *(tools.arg(a) for a in args)]
        res = self.log.run(argv, env=tools.env, timeout=timeout, input=stdin)
        if res.timed_out:
            raise CommandError(f"{tools.label}: timed out: {shlex.join(argv)}")
        out = res.stdout + (res.stderr and f"[stderr]\n{res.stderr}")
        if res.returncode < 0 or (rcs is not None and res.returncode not in rcs):
            raise CommandError(
                f"{tools.label}: exit {res.returncode} (expected {tuple(rcs or ())}): "
                f"{shlex.join(argv)}\n{out[-2000:]}"
            )
        return res

    def vm(self, tools: Tools, image: Path, hmp: Sequence[str]) -> list[str]:
        """One qemu-system session on ``image`` (no guest); each HMP command through QMP
        human-monitor-command, in order. Returns their outputs; an 'Error' fails."""
        lines = [{"execute": "qmp_capabilities"}]
        lines += [
            {"execute": "human-monitor-command", "arguments": {"command-line": c}} for c in hmp
        ]
        lines.append({"execute": "quit"})
        drive = f"if=none,id=d0,format=qcow2,file={tools.arg(image)}"
        proc = self.run(
            tools,
            "system",
            *VM_ARGS,
            "-drive",
            drive,
            "-device",
            "virtio-blk-pci,drive=d0",
            stdin="".join(json.dumps(x) + "\n" for x in lines),
        )
        replies = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        replies = [r for r in replies if "return" in r or "error" in r][1 : 1 + len(hmp)]
        if len(replies) != len(hmp):
            raise CommandError(f"{tools.label}: {len(replies)} replies to {len(hmp)} commands")
        outs = []
        for cmd, reply in zip(hmp, replies, strict=True):
            text = reply.get("return")
            if not isinstance(text, str) or "Error" in text:
                raise CommandError(f"{tools.label}: HMP {cmd!r}: {reply}")
            outs.append(text)
        return outs

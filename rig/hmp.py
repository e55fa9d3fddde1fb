"""HMP through pexpect on a real readline monitor (`-mon chardev=...,mode=readline`).

QEMU serves the chardev (`server=on,wait=off`); we connect a unix socket and drive it with
pexpect.fdpexpect: wait for the `(qemu)` prompt, send a line, wait for the next prompt, strip
the echo and terminal control sequences, and look for known error patterns. The whole
conversation is logged to hmp.log in the test directory.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from .errors import HMPError, VMTimeout

PROMPT = "(qemu) "

# Lines HMP prints when a command fails (monitor_printf/error_report conventions).
ERROR_PATTERNS = (
    r"^Error: ",
    r"^unknown command: ",
    r"^Unknown command",
    r"^Could not ",
    r"^Parameter '[^']*' expects ",
    r"^Invalid parameter ",
    r"^invalid ",
    r"^Try \"help\"",
    r"^[a-z_-]+: extraneous characters at the end of line",
)
_ERROR_RE = re.compile("|".join(f"(?:{p})" for p in ERROR_PATTERNS), re.M)
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def clean(text: str) -> str:
    """Remove terminal control sequences and carriage returns from monitor output."""
    return _ANSI_RE.sub("", text).replace("\r", "")


class HMP:
    def __init__(self, path: str, log_path: Path, timeout: float = 60.0):
        self.path = path
        self.timeout = timeout
        # hmp.log: readable transcript; hmp.raw.log: the bytes exactly as the monitor sent them
        self._log = open(log_path, "a", buffering=1)
        self._raw = open(Path(log_path).with_suffix(".raw.log"), "a", buffering=1)
        self._sock: socket.socket | None = None
        self._child: pexpect.fdpexpect.fdspawn | None = None
        self.banner = ""

    def connect(self, timeout: float = 10.0, sock: socket.socket | None = None) -> None:
        """Take ``sock`` (QEMU connected to a socket the rig listens on), or connect to the
        path QEMU serves (for a QEMU the rig did not start: it is already listening)."""
        if sock is not None:
            s = sock
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(self.path)
            except OSError:
                s.close()
                raise
            s.settimeout(None)
        self._sock = s
        self._child = pexpect.fdpexpect.fdspawn(
            s.fileno(), timeout=self.timeout, encoding="utf-8", codec_errors="replace"
        )
        self._child.logfile_read = self._raw
        self._child.expect_exact(PROMPT)
        self.banner = clean(self._child.before)
        self._log.write(self.banner + PROMPT)

    def cmd_unchecked(self, command_line: str, timeout: float | None = None) -> str:
        """Run one command line; return its output (echo and escapes removed)."""
        assert self._child is not None, "HMP not connected"
        self._raw.write(f"\n[{time.strftime('%H:%M:%S')} rig sends: {command_line!r}]\n")
        self._log.write(f"{command_line}    [{time.strftime('%H:%M:%S')}]\n")
        self._child.send(command_line + "\r")
        try:
            self._child.expect_exact(PROMPT, timeout=timeout or self.timeout)
        except pexpect.TIMEOUT as exc:
            raise VMTimeout(
                f"HMP {command_line!r}: no prompt after {timeout or self.timeout}s; "
                f"got {clean(self._child.before)[-500:]!r}"
            ) from exc
        except pexpect.EOF as exc:
            raise HMPError(
                command_line,
                "monitor connection closed (QEMU exited?)\n" + clean(self._child.before),
            ) from exc
        out = clean(self._child.before)
        # The readline monitor echoes the command line (redrawn per key) first.
        first, _, rest = out.partition("\n")
        if command_line.strip() and first.endswith(command_line.strip()):
            out = rest
        out = out.rstrip("\n")
        self._log.write((out + "\n" if out else "") + PROMPT)
        return out

    def cmd(self, command_line: str, timeout: float | None = None) -> str:
        """Run a command that must succeed; raise HMPError if its output matches an error."""
        out = self.cmd_unchecked(command_line, timeout)
        if _ERROR_RE.search(out):
            raise HMPError(command_line, out)
        return out

    def cmd_error(self, command_line: str, timeout: float | None = None) -> str:
        """Run a command that must fail; return its error output (HMPError if it succeeded)."""
        out = self.cmd_unchecked(command_line, timeout)
        if not _ERROR_RE.search(out):
            raise HMPError(command_line, "expected an error, got:\n" + out)
        return out

    def close(self) -> None:
        if self._child is not None:
            try:
                self._child.close()
            except Exception:  # noqa: BLE001
                pass
            self._child = None
        if self._sock is not None:
            self._sock.detach()  # fdspawn.close() already closed the descriptor
            self._sock = None
        self._log.close()
        self._raw.close()

"""virsh, the management client: run by argument list against one daemon's socket, every
command and its output logged; and readers of what it prints.

libvirt's tree (``read_tree``) is read three ways, which must agree with each other before
they are compared with the image: ``snapshot-list --parent`` (a table), ``snapshot-list
--tree`` (virsh's ASCII tree) and ``snapshot-parent`` per snapshot; the current one from
``snapshot-current --name``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from rig.commands import CommandLog, Result  # noqa: F401 (CommandLog: the suite's log)

from .lineage import Tree

# What virsh runs with: nothing from the caller's environment.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}


class VirshError(Exception):
    """virsh failed (not an AssertionError: libvirt refusing an operation is not a tree
    mismatch, and the message says which command it was)."""


class Virsh:
    """``virsh -c URI`` of one daemon; ``prefix`` runs it in the daemon's chroot."""

    def __init__(self, uri: str, log: CommandLog, prefix: Sequence[str] = ()):
        self.uri = uri
        self.log = log
        self.prefix = list(prefix)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, "virsh", "-c", self.uri, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> Result:
        argv = self.argv(*args)
        res = self.log.run(argv, env=ENV, timeout=timeout)
        if res.timed_out:
            raise VirshError(f"timed out after {timeout}s: {shlex.join(argv)}")
        if check and res.returncode != 0:
            raise VirshError(f"exit {res.returncode}: {shlex.join(argv)}\n"
                             f"{(res.stderr or res.stdout).strip()[-1500:]}")
        return res

    # -- the snapshot tree ------------------------------------------------------------

    def read_tree(self, domain: str) -> Tree:
        """libvirt's tree; the notes say where its own views disagree."""
        listed = parse_list_parent(self("snapshot-list", domain, "--parent").stdout)
        tree_text = self("snapshot-list", domain, "--tree").stdout
        drawn = parse_tree(tree_text) if listed else {}
        each = {}
        for name in listed:
            res = self("snapshot-parent", domain, "--snapshotname", name, check=False)
            each[name] = parse_parent(res.returncode, res.stdout, res.stderr, name)
        current = parse_current(self("snapshot-current", domain, "--name", check=False))
        notes = []
        if drawn != listed:
            notes.append(f"libvirt: snapshot-list --tree shows {sorted(drawn.items(), key=_k)}"
                         f", snapshot-list --parent {sorted(listed.items(), key=_k)}")
        if each != listed:
            notes.append(f"libvirt: snapshot-parent says {sorted(each.items(), key=_k)}, "
                         f"snapshot-list --parent {sorted(listed.items(), key=_k)}")
        return Tree(listed, current, tuple(notes))


def _k(item: tuple[str, str | None]) -> str:
    return item[0]


def parse_list_parent(text: str) -> dict[str, str | None]:
    """`virsh [-q] snapshot-list DOM --parent`: name -> parent (None: a root).

    Columns are found by the header when there is one (Name, Creation Time, State, Parent);
    with -q there is none, and a row is NAME  DATE TIME ZONE  STATE  [PARENT]."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = next((ln for ln in lines if re.match(r"\s*Name\s+Creation Time", ln)), None)
    result: dict[str, str | None] = {}
    if header is not None:
        at = header.index("Parent")
        rows = [ln for ln in lines[lines.index(header) + 1:] if not re.fullmatch(r"-+", ln.strip())]
        for row in rows:
            name = row.split()[0]
            parent = row[at:].strip() if len(row) > at else ""
            result[name] = parent or None
        return result
    for row in lines:
        cols = re.split(r"\s{2,}", row.strip())
        if len(cols) < 3:
            raise ValueError(f"not a snapshot-list --parent row: {row!r}")
        result[cols[0]] = cols[3] if len(cols) > 3 else None
    return result


def parse_tree(text: str) -> dict[str, str | None]:
    """`virsh snapshot-list DOM --tree` (vshTreePrint): a root at column 0, a child as
    '+- NAME' under an indent that grows by 4 per level ('  +- ' then '  |   +- ')."""
    result: dict[str, str | None] = {}
    stack: list[str] = []
    for line in text.splitlines():
        if not line.strip() or set(line) <= {" ", "|"}:
            continue
        at = line.find("+- ")
        if at < 0:
            if line[0].isspace():
                raise ValueError(f"not a tree line: {line!r}")
            name, depth = line.strip(), 0
        else:
            if (at + 2) % 4 or set(line[:at]) - {" ", "|"}:
                raise ValueError(f"not a tree line: {line!r}")
            name, depth = line[at + 3:].strip(), (at + 2) // 4
        if depth > len(stack):
            raise ValueError(f"{name!r} is indented below no parent: {line!r}")
        del stack[depth:]
        result[name] = stack[-1] if stack else None
        stack.append(name)
    return result


def parse_parent(returncode: int, stdout: str, stderr: str, name: str) -> str | None:
    """`virsh snapshot-parent DOM --snapshotname NAME`: the parent, None for a root
    ("error: snapshot 'NAME' has no parent"); ValueError for any other failure."""
    if returncode == 0 and stdout.strip():
        return stdout.strip()
    if returncode != 0 and re.search(r"has no parent|does not have a parent", stderr):
        return None
    raise ValueError(f"snapshot-parent {name}: exit {returncode}: {(stderr or stdout).strip()}")


def parse_current(res: Result) -> str | None:
    """`virsh snapshot-current DOM --name`: the name; None when there is no current one."""
    if res.returncode == 0:
        return res.stdout.strip() or None
    if re.search(r"no current snapshot|has no current snapshot", res.stderr):
        return None
    raise VirshError(f"snapshot-current: exit {res.returncode}: {res.stderr.strip()}")


# -- what libvirt made QEMU do, from its logs ------------------------------------------------
# Each event is (timestamp, text); both logs stamp lines as '2026-12-03 08:04:09.548+0000',
# which sorts as text, so the events of both logs can be merged in order.

Event = tuple[str, str]
_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4})"
_HMP = re.compile(r'"execute":\s*"human-monitor-command".*?"command-line":\s*"(\w+)')
_EXEC = re.compile(r'"execute":\s*"([\w-]+)"')
SNAPSHOT_COMMANDS = ("savevm", "loadvm", "delvm", "snapshot-save", "snapshot-load",
                     "snapshot-delete")


def monitor_commands(daemon_log: str) -> list[Event]:
    """The snapshot commands libvirtd sent to QEMU (its log, qemu.qemu_monitor at debug):
    HMP ones as 'hmp savevm', QMP ones by name ('snapshot-save')."""
    found = []
    for line in daemon_log.splitlines():
        if "QEMU_MONITOR_SEND_MSG" not in line or not (m := re.match(_STAMP, line)):
            continue
        msg = line.partition("msg=")[2]
        if h := _HMP.search(msg):
            if h.group(1) in SNAPSHOT_COMMANDS:
                found.append((m.group(1), f"hmp {h.group(1)}"))
        elif (e := _EXEC.search(msg)) and e.group(1) in SNAPSHOT_COMMANDS:
            found.append((m.group(1), e.group(1)))
    return found


def qemu_starts(qemu_log: str) -> list[Event]:
    """Each QEMU start in a domain's log (/var/log/libvirt/qemu/DOM.log): 'qemu start', or
    'qemu start -loadvm TAG' (libvirt 9.0 reverts a running domain by restarting QEMU)."""
    parts = re.split(_STAMP + r": starting up libvirt", qemu_log, flags=re.M)
    starts = []
    for stamp, block in zip(parts[1::2], parts[2::2], strict=True):
        m = re.search(r"^-loadvm (\S+) \\$", block, re.M)
        starts.append((stamp, "qemu start" + (f" -loadvm {m.group(1)}" if m else "")))
    return starts

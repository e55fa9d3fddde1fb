"""The VM snapshot tree, for people: who descends from whom, which one is current.

Input is `query-vm-snapshots`-shaped data (SPEC.md §2)::

    {"current": "<uuid>"?, "snapshots": [{"name", "uuid"?, "parent-uuid"?, "id"?,
                                          "devices"?, "partial"?, ...}, ...]}

taken from a running VM (``from_qmp_socket``: a minimal QMP client on a unix socket) or from
an image file (``from_image``: ``qemu-img info --output=json`` for the snapshot table, the
qcow2 header's current snapshot record for the current one). ``render`` draws it:

    s1  5f1fc2a8-2a5b-4fd3-8b0e-4e2c1d0a7a64
    |-- s2  c9a4a0c3-...
    `-- s3  0e6a3f5c-... *
    s9  1234...  (parent 77aa... not in the list: dangling)
    without UUID:
      old  (id 1)
    * = current snapshot

Roots are snapshots without a parent and snapshots whose parent is not in the list (marked
dangling: their parent was deleted by a QEMU without the series; the series itself makes
the children of a deleted snapshot children of its parent). Snapshots without UUID
(written by QEMU before the series) have no lineage and are listed flat. Standard library
only; exit codes are harness/core/errors.py's (3: the image or VM cannot be read).

CLI:  python3 -m snaptree --image PATH [--qemu-img PATH]  |  --qmp SOCKET
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

from harness.core.errors import NotReady, fail

CURRENT_MARK = "*"
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXT_CURRENT = 0x43534E50  # "CSNP", docs/interop/qcow2.rst (series part 1)
# {snapshot UUID, snapshots_offset BE64, nb_snapshots BE32, reserved 4}
QCOW2_CURRENT_RECORD = struct.Struct(">16sQI4x")


class SnapTreeError(Exception):
    pass


# -- sources --------------------------------------------------------------------------



def device_names(snap: dict) -> list[str]:
    """The node names of a query-vm-snapshots entry's devices: since lineage v2 each
    device is {"node-name", "id"}; plain strings (the earlier format) still work."""
    return [d["node-name"] if isinstance(d, dict) else str(d)
            for d in snap.get("devices") or []]

def from_image(qemu_img: str | Path, path: str | Path) -> dict:
    """query-vm-snapshots-shaped data of one image (read with force-share: may be in use)."""
    args = [str(qemu_img), "info", "--output=json", "-U", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SnapTreeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    info = json.loads(proc.stdout)
    data: dict = {"snapshots": [dict(s) for s in info.get("snapshots", [])]}
    if info.get("format") == "qcow2":
        current = qcow2_current(path)
        if current and any(s.get("uuid") == current for s in data["snapshots"]):
            data["current"] = current
    return data


def qcow2_current(path: str | Path) -> str | None:
    """The current snapshot UUID from a qcow2 header, or None (SPEC.md §1).

    The record (header extension 0x43534e50, no feature bit) is trusted only when it is the
    one extension of its type, 32 bytes long, not nil, and its copy of snapshots_offset and
    nb_snapshots equals the header's: a QEMU without the series that created or deleted a
    snapshot moved the table and left the record stale. Whether the UUID is in the snapshot
    table is for the caller to check (from_image does).
    """
    with open(path, "rb") as f:
        header = f.read(104)
        if len(header) < 72 or header[:4] != QCOW2_MAGIC:
            return None
        version = struct.unpack(">I", header[4:8])[0]
        if version < 2 or (version >= 3 and len(header) < 104):
            return None
        header_length = struct.unpack(">I", header[100:104])[0] if version >= 3 else 72
        cluster_bits = struct.unpack(">I", header[20:24])[0]
        nb_snapshots, snapshots_offset = struct.unpack(">IQ", header[60:72])
        if not 9 <= cluster_bits <= 21:
            return None
        f.seek(header_length)
        area = f.read((1 << cluster_bits) - header_length)
    found: list[bytes] = []
    pos = 0
    while pos + 8 <= len(area):
        magic, length = struct.unpack(">II", area[pos : pos + 8])
        if magic == 0:
            break
        if magic == QCOW2_EXT_CURRENT:
            found.append(area[pos + 8 : pos + 8 + length])
        pos += 8 + ((length + 7) & ~7)
    if len(found) != 1 or len(found[0]) != QCOW2_CURRENT_RECORD.size:
        return None
    raw, rec_offset, rec_nb = QCOW2_CURRENT_RECORD.unpack(found[0])
    if (rec_offset, rec_nb) != (snapshots_offset, nb_snapshots):
        return None  # stale: the table changed under a program that does not maintain it
    u = uuidlib.UUID(bytes=raw)
    return None if u.int == 0 else str(u)


class _QMPSocket:
    """Just enough QMP: greeting, qmp_capabilities, one command at a time, events skipped."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise SnapTreeError(f"cannot connect to QMP socket {path}: {exc}") from exc
        self._buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise SnapTreeError(f"{path}: not a QMP greeting: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self) -> dict:
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise SnapTreeError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line) if line.strip() else self._read()

    def cmd(self, name: str, **args) -> object:
        msg = {"execute": name, **({"arguments": args} if args else {})}
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            resp = self._read()
            if "event" in resp:
                continue
            if "error" in resp:
                err = resp["error"]
                raise SnapTreeError(f"QMP {name}: {err.get('class')}: {err.get('desc')}")
            return resp["return"]

    def close(self) -> None:
        self._sock.close()


def from_qmp_socket(path: str | Path, timeout: float = 30.0) -> dict:
    """query-vm-snapshots of the VM whose (free) QMP monitor listens on ``path``."""
    client = _QMPSocket(path, timeout)
    try:
        return client.cmd("query-vm-snapshots")
    finally:
        client.close()


# -- the tree ---------------------------------------------------------------------------


class Node:
    def __init__(self, snap: dict):
        self.snap = snap
        self.children: list[Node] = []
        self.dangling = False  # has a parent UUID that is not in the list
        self.cycle = False  # reached only through a parent cycle (corrupt lineage)

    @property
    def uuid(self) -> str | None:
        return self.snap.get("uuid")

    @property
    def parent(self) -> str | None:
        return self.snap.get("parent-uuid")


class Tree:
    def __init__(self, roots: list[Node], flat: list[dict], current: str | None):
        self.roots = roots
        self.flat = flat  # snapshots without UUID
        self.current = current

    def walk(self):
        """(depth, node) in display order."""
        stack = [(0, n) for n in reversed(self.roots)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, c) for c in reversed(node.children))


def build(data: dict) -> Tree:
    """The tree of query-vm-snapshots-shaped ``data`` (list order is kept among siblings)."""
    snaps = list(data.get("snapshots") or [])
    nodes = [Node(s) for s in snaps if s.get("uuid")]
    flat = [s for s in snaps if not s.get("uuid")]
    by_uuid: dict[str, Node] = {}
    for n in nodes:
        by_uuid.setdefault(n.uuid.lower(), n)  # a duplicate UUID is kept as its own node
    roots: list[Node] = []
    for n in nodes:
        parent = n.parent.lower() if n.parent else None
        p = by_uuid.get(parent) if parent else None
        if p is None or p is n:
            n.dangling = parent is not None
            roots.append(n)
        else:
            p.children.append(n)
    # Nodes on a parent cycle are unreachable from the roots: show them as roots, marked.
    seen = {id(n) for _, n in Tree(roots, [], None).walk()}
    for n in nodes:
        if id(n) not in seen:
            n.cycle = True
            for p in nodes:
                if n in p.children:
                    p.children.remove(n)
            roots.append(n)
            seen |= {id(m) for _, m in Tree([n], [], None).walk()}
    current = data.get("current")
    return Tree(roots, flat, current.lower() if current else None)


def _label(node_snap: dict, current: str | None, width: int) -> str:
    uuid = node_snap.get("uuid")
    text = f"{node_snap.get('name', '?'):<{width}}  {uuid}"
    if current and uuid and uuid.lower() == current:
        text += f" {CURRENT_MARK}"
    if node_snap.get("partial"):
        text += f"  [partial: on {', '.join(device_names(node_snap)) or '?'} only]"
    return text


def render(data: dict | Tree, title: str | None = None) -> str:
    """The tree as text; the current snapshot is marked with ``*``."""
    tree = data if isinstance(data, Tree) else build(data)
    lines = [title] if title else []
    items = list(tree.walk())
    if not items and not tree.flat:
        lines.append("(no snapshots)")
        return "\n".join(lines) + "\n"
    width = max([len(str(n.snap.get("name", ""))) for _, n in items] + [1])
    # prefixes: "|-- " / "`-- " with "|   " / "    " continuation, per depth
    last_at: dict[int, bool] = {}
    for i, (depth, node) in enumerate(items):
        is_last = not any(d == depth for d, _ in _until_parent_level(items, i, depth))
        last_at[depth] = is_last
        prefix = "".join("    " if last_at[d] else "|   " for d in range(1, depth))
        if depth:
            prefix += "`-- " if is_last else "|-- "
        text = prefix + _label(node.snap, tree.current, width)
        if node.dangling:
            text += f"  (parent {node.parent} not in the list: dangling)"
        if node.cycle:
            text += "  (parent cycle)"
        lines.append(text)
    if tree.flat:
        lines.append("without UUID:")
        for s in tree.flat:
            extra = f"  (id {s['id']})" if s.get("id") else ""
            if s.get("partial"):
                extra += f"  [partial: on {', '.join(device_names(s))} only]"
            lines.append(f"  {s.get('name', '?')}{extra}")
    if tree.current:
        if any(n.uuid and n.uuid.lower() == tree.current for _, n in items):
            lines.append(f"{CURRENT_MARK} = current snapshot")
        else:
            lines.append(f"current snapshot {tree.current} is not in the list")
    else:
        lines.append("no current snapshot")
    return "\n".join(lines) + "\n"


def _until_parent_level(items, i, depth):
    """Items after i up to (excluding) the next one at a depth < ``depth``."""
    for d, n in items[i + 1 :]:
        if d < depth:
            return
        yield d, n


# -- CLI --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="snaptree", description="print the VM snapshot tree")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="an image file (qemu-img info)")
    src.add_argument("--qmp", help="a free QMP unix socket of a running VM")
    p.add_argument("--qemu-img", default="qemu-img", help="qemu-img to use with --image")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the data, not the tree")
    fmt.add_argument("--svg", action="store_true", help="print the tree as an SVG picture")
    args = p.parse_args(argv)
    return run(args.image, args.qmp, args.qemu_img, args.json, args.svg)


def load(image: Path | None, qmp: str | None, qemu_img: str = "qemu-img") -> dict:
    """The data of an image or a running VM; NotReady (exit 3, with the next step) when it
    cannot be read: no such image, no VM on the socket, not a QEMU with the series."""
    try:
        return from_image(qemu_img, image) if image else from_qmp_socket(qmp)
    except (SnapTreeError, OSError, ValueError) as exc:
        raise NotReady(f"cannot read the snapshots: {exc}",
                       hint="check the image path, or that the QMP socket is a free QMP "
                            "monitor of a running patched QEMU") from exc


def run(image: Path | None, qmp: str | None, qemu_img: str = "qemu-img",
        as_json: bool = False, as_svg: bool = False) -> int:
    try:
        data = load(image, qmp, qemu_img)
    except NotReady as exc:
        return fail(exc)
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if as_json else
                     _svg(data) if as_svg else render(data))
    return 0


def _svg(data: dict) -> str:
    from snaptree.svg import render_svg  # it builds on this module
    return render_svg(data)


if __name__ == "__main__":
    sys.exit(main())

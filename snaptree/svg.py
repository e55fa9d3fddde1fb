"""The VM snapshot tree as a picture: hand-written SVG of snaptree/tree.py's tree.

The layout is the text form's (``render``), drawn: one row per snapshot in the same
order, indented by depth, an elbow line from each parent to each child, so the two read side
by side. Each snapshot is a box with its name and the first 8 hex digits of its UUID (the
whole UUID and the parent's in its tooltip, ``<title>``); the current snapshot is filled and
marked "current"; a snapshot whose parent is not in the list gets a dashed stub to "parent
<short> missing"; one on a parent cycle is drawn in red; snapshots without UUID follow,
grey, without lines. Every name is escaped (and characters XML cannot hold are replaced), so
an image's snapshot named ``<x&y>`` is text, not markup.

Only presentation attributes, no ``<style>``: the SVG is inlined into the report's HTML,
where a style element would apply to the whole page. Standard library only.

    python3 -m snaptree --image PATH --svg > tree.svg
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from snaptree.tree import Tree, build, device_names

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FONT_SIZE = 12
CHAR_W = 7.3  # DejaVu Sans Mono advance at 12 px (0.6 em), a little generous
ROW = 32  # vertical distance between rows
BOX_H = 22
INDENT = 28  # per depth
PAD = 10
ELBOW_X = 12  # where a parent's line leaves its box, from the box's left edge

COLOURS = {
    "box": ("#ffffff", "#4b5563"),  # fill, stroke
    "current": ("#fde68a", "#b45309"),
    "cycle": ("#fee2e2", "#b91c1c"),
    "flat": ("#f3f4f6", "#9ca3af"),
    "edge": "#6b7280",
    "note": "#6b7280",
    "uuid": "#2563eb",
}

# XML 1.0 cannot hold these at all, escaped or not
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value: object) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", str(value)))


def _short(uuid: str | None) -> str:
    return (uuid or "")[:8]


def _width(chars: int) -> float:
    return round(chars * CHAR_W + 12, 1)


class _Canvas:
    def __init__(self):
        self.parts: list[str] = []
        self.right = 0.0
        self.bottom = 0.0

    def add(self, svg: str, right: float, bottom: float) -> None:
        self.parts.append(svg)
        self.right = max(self.right, right)
        self.bottom = max(self.bottom, bottom)

    def text(self, x: float, y: float, text: str, fill: str, cls: str, extra: str = "") -> None:
        self.add(f'<text class="{cls}" x="{x}" y="{y}" fill="{fill}"{extra}>{_text(text)}</text>',
                 x + _width(len(text)), y + 4)


def _box(canvas: _Canvas, x: float, y: float, snap: dict, kind: str, is_current: bool,
         tooltip: str) -> float:
    """A snapshot's box at (x, y) (top left); returns its right edge."""
    name = str(snap.get("name", "?"))
    uuid = _short(snap.get("uuid"))
    partial = " [partial]" if snap.get("partial") else ""
    chars = len(name) + (2 + len(uuid) if uuid else 0) + len(partial)
    w = _width(chars)
    fill, stroke = COLOURS["current" if is_current else kind]
    base = y + BOX_H / 2 + FONT_SIZE / 2 - 2
    label = f'<tspan font-weight="bold">{_text(name)}</tspan>'
    if uuid:
        label += f'<tspan fill="{COLOURS["uuid"]}">  {_text(uuid)}</tspan>'
    if partial:
        label += f"<tspan>{_text(partial)}</tspan>"
    cls = "node current" if is_current else f"node {kind}"
    canvas.add(
        f'<g class="{cls}"><title>{_text(tooltip)}</title>'
        f'<rect x="{x}" y="{y}" width="{w}" height="{BOX_H}" rx="4" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{2 if is_current else 1}"/>'
        f'<text x="{x + 6}" y="{base}" fill="#111827">{label}</text></g>',
        x + w, y + BOX_H)
    return x + w


def _tooltip(snap: dict) -> str:
    lines = [f"{snap.get('name', '?')}", f"uuid {snap.get('uuid') or '(none)'}"]
    if snap.get("parent-uuid"):
        lines.append(f"parent {snap['parent-uuid']}")
    if snap.get("id"):
        lines.append(f"id {snap['id']}")
    if snap.get("partial"):
        lines.append(f"partial: on {', '.join(device_names(snap)) or '?'} only")
    return "\n".join(lines)


def render_svg(data: dict | Tree, title: str | None = None) -> str:
    """The tree of query-vm-snapshots-shaped ``data`` (or a built Tree) as an SVG document."""
    tree = data if isinstance(data, Tree) else build(data)
    canvas = _Canvas()
    top = PAD
    if title:
        canvas.text(PAD, top + FONT_SIZE, title, "#111827", "title", ' font-weight="bold"')
        top += ROW
    items = list(tree.walk())
    anchor: dict[int, tuple[float, float]] = {}  # id(node) -> where its children's line leaves
    current_seen = False
    for row, (depth, node) in enumerate(items):
        x, y = PAD + depth * INDENT, top + row * ROW
        is_current = bool(tree.current and node.uuid and node.uuid.lower() == tree.current)
        current_seen |= is_current
        kind = "cycle" if node.cycle else "box"
        right = _box(canvas, x, y, node.snap, kind, is_current, _tooltip(node.snap))
        anchor[id(node)] = (x + ELBOW_X, y + BOX_H)
        notes = []
        if is_current:
            notes.append(("current", "#b45309"))
        if node.dangling:
            stub = f"M {right} {y + BOX_H / 2} h 18"
            canvas.add(f'<path class="dangling" d="{stub}" stroke="{COLOURS["note"]}" '
                       'stroke-dasharray="3 3" fill="none"/>', right + 18, y + BOX_H)
            right += 18
            notes.append((f"parent {_short(node.parent)} missing", COLOURS["note"]))
        if node.cycle:
            notes.append(("parent cycle", COLOURS["cycle"][1]))
        for text, colour in notes:
            canvas.text(right + 6, y + BOX_H / 2 + FONT_SIZE / 2 - 2, text, colour, "note")
            right += 6 + _width(len(text))
    # edges: one per parent link that the tree keeps (a child in some node's children)
    for _, node in items:
        px, py = anchor[id(node)]
        for child in node.children:
            cx, cy = anchor[id(child)]
            cx, cy = cx - ELBOW_X, cy - BOX_H / 2
            canvas.parts.insert(0, f'<path class="edge" d="M {px} {py} V {cy} H {cx}" '
                                   f'stroke="{COLOURS["edge"]}" stroke-width="1.5" fill="none"/>')
    y = top + len(items) * ROW
    if tree.flat:
        canvas.text(PAD, y + FONT_SIZE, "without UUID (no lineage):", COLOURS["note"], "note")
        y += ROW - 8
        for snap in tree.flat:
            _box(canvas, PAD, y, snap, "flat", False, _tooltip(snap))
            y += ROW
    if not items and not tree.flat:
        canvas.text(PAD, y + FONT_SIZE, "(no snapshots)", COLOURS["note"], "note")
    elif tree.current and not current_seen:
        canvas.text(PAD, y + FONT_SIZE, f"current snapshot {_short(tree.current)} is not in "
                    "the list", COLOURS["cycle"][1], "note")
    width = round(canvas.right + PAD)
    height = round(canvas.bottom + PAD)
    label = title or f"VM snapshot tree: {len(items) + len(tree.flat)} snapshot(s)"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="snaptree" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label={_attr(label)} font-family={_attr(FONT)} font-size="{FONT_SIZE}">'
            f"<title>{_text(label)}</title>" + "".join(canvas.parts) + "</svg>\n")

"""snaptree/svg.py: the snapshot tree as SVG, checked as XML (no browser: the report's
Chromium test, test_report_browser.py, looks at the picture)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from snaptree import tree as snaptree
from snaptree.svg import render_svg

U = {k: f"{i:08x}-2a5b-4fd3-8b0e-4e2c1d0a7a64" for i, k in enumerate("abcdefgh", 1)}
# query-vm-snapshots of a VM with two disks: s1 on both, s2 (child of s1) partial, s3 (child
# of s1) current, an old snapshot without UUID (the shape of tests/unit/test_snaptree.py's)
VM_SNAPSHOTS = {"current": U["c"], "snapshots": [
    {"id": "1", "name": "s1", "uuid": U["a"], "devices": ["disk0", "disk1"], "partial": False},
    {"id": "2", "name": "s2", "uuid": U["b"], "parent-uuid": U["a"], "devices": ["disk0"],
     "partial": True},
    {"id": "3", "name": "s3", "uuid": U["c"], "parent-uuid": U["a"],
     "devices": ["disk0", "disk1"], "partial": False},
    {"id": "4", "name": "old", "devices": ["disk0", "disk1"], "partial": False}]}
# an image's tree after a delete of a root (b and c roots), d under c, e under b (current)
IMAGE = {"current": U["e"], "snapshots": [
    {"name": "b", "uuid": U["b"], "id": "2"}, {"name": "c", "uuid": U["c"], "id": "3"},
    {"name": "d", "uuid": U["d"], "id": "4", "parent-uuid": U["c"]},
    {"name": "e", "uuid": U["e"], "id": "5", "parent-uuid": U["b"]}]}

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _nodes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iterfind("svg:g", NS) if "node" in g.get("class", "").split()]


def _edges(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iterfind("svg:path", NS) if p.get("class") == "edge"]


def _label(g: ET.Element) -> str:
    return "".join(g.find("svg:text", NS).itertext())


def _parent_links(data: dict) -> int:
    """Snapshots whose parent is in the list (and not themselves)."""
    uuids = {s["uuid"] for s in data["snapshots"] if s.get("uuid")}
    return sum(1 for s in data["snapshots"]
               if s.get("parent-uuid") in uuids and s.get("parent-uuid") != s.get("uuid"))


def test_one_node_per_snapshot_one_edge_per_parent_link():
    for data in (VM_SNAPSHOTS, IMAGE):
        root = _parse(render_svg(data))
        assert len(_nodes(root)) == len(data["snapshots"])
        assert len(_edges(root)) == _parent_links(data) > 0


def test_labels_follow_the_text_form_and_mark_the_current_snapshot():
    root = _parse(render_svg(VM_SNAPSHOTS))
    labels = [_label(g) for g in _nodes(root)]
    # the same order as the text form: s1, its children s2 then s3, the one without UUID
    assert labels == [f"s1  {U['a'][:8]}", f"s2  {U['b'][:8]} [partial]", f"s3  {U['c'][:8]}",
                      "old"]
    assert [n.snap["name"] for _, n in snaptree.build(VM_SNAPSHOTS).walk()] == \
        ["s1", "s2", "s3"]
    current = [g for g in _nodes(root) if "current" in g.get("class").split()]
    assert [_label(g) for g in current] == [f"s3  {U['c'][:8]}"]
    notes = ["".join(t.itertext()) for t in root.iterfind("svg:text", NS)]
    assert "current" in notes
    tips = {_label(g): g.find("svg:title", NS).text for g in _nodes(root)}
    assert f"uuid {U['c']}" in tips[f"s3  {U['c'][:8]}"]
    assert f"parent {U['a']}" in tips[f"s3  {U['c'][:8]}"]
    assert "partial: on disk0 only" in tips[f"s2  {U['b'][:8]} [partial]"]


def test_edges_run_from_the_parent_to_each_child():
    """s1 -> s2 and s1 -> s3: both lines leave s1's box and end at the child's left edge."""
    root = _parse(render_svg(VM_SNAPSHOTS))
    rects = {_label(g).split()[0]: g.find("svg:rect", NS) for g in _nodes(root)}
    s1 = rects["s1"]
    for child in ("s2", "s3"):
        r = rects[child]
        d = next(e.get("d") for e in _edges(root)
                 if e.get("d").endswith(f"H {r.get('x')}")
                 and float(e.get("d").split()[4]) == float(r.get("y")) + float(r.get("height")) / 2)
        start_y = float(d.split()[2])
        assert start_y == float(s1.get("y")) + float(s1.get("height"))


def test_a_tag_is_escaped_text_not_markup():
    data = {"current": U["b"], "snapshots": [
        {"name": "<x&y>", "uuid": U["a"]},
        {"name": 'q"uote\'s', "uuid": U["b"], "parent-uuid": U["a"]},
        {"name": "ctl\x01\x1b", "uuid": U["c"], "parent-uuid": U["a"]}]}
    svg = render_svg(data, title="tree of <x&y>")
    assert "<x&y>" not in svg and "&lt;x&amp;y&gt;" in svg
    root = _parse(svg)
    labels = [_label(g) for g in _nodes(root)]
    assert labels[0] == f"<x&y>  {U['a'][:8]}"
    assert labels[1] == f"q\"uote's  {U['b'][:8]}"
    assert labels[2].startswith("ctl\ufffd\ufffd")  # XML cannot hold control characters
    assert root.get("aria-label") == "tree of <x&y>"
    assert len(_edges(root)) == 2


def test_dangling_parents_cycles_and_an_absent_current():
    data = {"current": U["h"], "snapshots": [
        {"name": "orphan", "uuid": U["a"], "parent-uuid": U["g"]},
        {"name": "c1", "uuid": U["b"], "parent-uuid": U["c"]},
        {"name": "c2", "uuid": U["c"], "parent-uuid": U["b"]}]}
    root = _parse(render_svg(data))
    assert len(_nodes(root)) == 3
    stubs = [p for p in root.iterfind("svg:path", NS) if p.get("class") == "dangling"]
    assert len(stubs) == 1
    notes = ["".join(t.itertext()) for t in root.iterfind("svg:text", NS)]
    assert f"parent {U['g'][:8]} missing" in notes
    # snaptree breaks the cycle at c1 (a root, marked); c2 stays its child
    assert notes.count("parent cycle") == 1
    assert [_label(g).split()[0] for g in _nodes(root) if "cycle" in g.get("class")] == ["c1"]
    assert len(_edges(root)) == 1
    assert f"current snapshot {U['h'][:8]} is not in the list" in notes
    assert not [g for g in _nodes(root) if "current" in g.get("class").split()]


def test_no_snapshots_is_a_picture_that_says_so():
    root = _parse(render_svg({"snapshots": []}))
    assert _nodes(root) == [] and _edges(root) == []
    assert "(no snapshots)" in ["".join(t.itertext()) for t in root.iterfind("svg:text", NS)]


def test_size_holds_every_box():
    deep = {"snapshots": [{"name": f"s{i}", "uuid": f"{i:08x}-0000-4000-8000-000000000000",
                           **({"parent-uuid": f"{i - 1:08x}-0000-4000-8000-000000000000"}
                              if i else {})} for i in range(12)]}
    root = _parse(render_svg(deep))
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    for g in _nodes(root):
        r = g.find("svg:rect", NS)
        assert float(r.get("x")) + float(r.get("width")) <= width
        assert float(r.get("y")) + float(r.get("height")) <= height
    assert len(_edges(root)) == 11

"""The report in a real browser: headless Chromium draws report.html from a fake results
directory (no QEMU) — its DOM has the tables and the snapshot tree's SVG, and the screenshot
is the page's size, not blank, with the pass and fail colours and the current snapshot's
fill on it.

Chromium is a capability like QEMU's: `build.py setup` installs it (harness/config.py); on a
machine without it this test skips with the command that provides it, and under CI=true (or
--require-all's QEMU_HARNESS_REQUIRE_ALL=1) it fails (rig/require.py).
"""

from __future__ import annotations

import json
import struct
import zlib
from html.parser import HTMLParser

import pytest

from harness.core import browser
from harness.core.config import APT_PACKAGES, Layout
from harness.stages import report
from rig.require import Requirements, required_by

U = {k: f"{i:08x}-2a5b-4fd3-8b0e-4e2c1d0a7a64" for i, k in enumerate("abcd", 1)}
TREE = {"current": U["d"], "snapshots": [
    {"name": "s1", "uuid": U["a"]}, {"name": "s2", "uuid": U["b"], "parent-uuid": U["a"]},
    {"name": "s3", "uuid": U["c"], "parent-uuid": U["a"]},
    {"name": "s4", "uuid": U["d"], "parent-uuid": U["c"]}]}
BUILD = '<properties><property name="build" value="%s"/></properties>'
WIDTH = 1024
# background colours of report.CSS and harness/snapsvg.py, as Chromium paints them
WHITE = (255, 255, 255)
OK, BAD, CURRENT = (0xdc, 0xfc, 0xe7), (0xfe, 0xe2, 0xe2), (0xfd, 0xe6, 0x8a)


def need_chromium(environ=None) -> str:
    """chromium's path; a skip naming `apt-get install chromium`, or a failure when every
    capability is required (CI=true)."""
    return Requirements(required_by(False, environ)).tool(browser.CHROMIUM,
                                                          package=browser.PACKAGE)


@pytest.fixture(scope="module")
def chromium():
    return need_chromium()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results directory as a test run leaves it: the qemu suite with a failure on
    stock, the unit suite, one lineage tree."""
    root = tmp_path_factory.mktemp("report")
    layout = Layout(root=root, cache=root / "cache")
    res = layout.results
    res.mkdir(parents=True)
    cases = "".join(f'<testcase classname="t" name="test_{i}[{b}]">{BUILD % b}</testcase>'
                    for i in range(5) for b in ("patched", "stock"))
    (res / "junit-qemu.xml").write_text(
        f'<testsuites><testsuite name="qemu">{cases}<testcase classname="t" name="test_x'
        f'[stock]">{BUILD % "stock"}<failure message="boom"/></testcase></testsuite>'
        "</testsuites>")
    (res / "junit-unit.xml").write_text(
        '<testsuites><testsuite><testcase name="a"/><testcase name="b"/></testsuite>'
        "</testsuites>")
    tree_dir = res / "qemu" / "tests" / "test_vm_lineage" / "test_restart_qmp-patched"
    tree_dir.mkdir(parents=True)
    (tree_dir / "tree-after-restart.json").write_text(json.dumps(TREE))
    report.write(layout)
    return layout


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.classes: list[tuple[str, str]] = []
        self.svg_nodes = 0
        self.in_svg = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if attrs.get("class"):
            self.classes.append((tag, attrs["class"]))
        if tag == "svg" and "snaptree" in (attrs.get("class") or ""):
            self.in_svg += 1
        if self.in_svg and tag == "g" and "node" in (attrs.get("class") or "").split():
            self.svg_nodes += 1

    def handle_endtag(self, tag):
        if tag == "svg" and self.in_svg:
            self.in_svg -= 1


def test_each_recorded_tree_is_text_with_its_svg_beside(results):
    """No browser needed: the Markdown has the text form and links the SVG written next to
    the tree's JSON; the HTML has both side by side, the SVG inlined."""
    res = results.results
    md = (res / "report.md").read_text()
    rel = "qemu/tests/test_vm_lineage/test_restart_qmp-patched/tree-after-restart.svg"
    section = md.split("## Snapshot trees of the lineage tests", 1)[1].split("\n## ", 1)[0]
    assert "### test_vm_lineage" in section
    assert "**test_restart_qmp-patched**: after-restart" in section
    assert f"```\ns1  {U['a']}\n|-- s2  {U['b']}\n`-- s3  {U['c']}\n" in section
    assert f"![snapshot tree after-restart]({rel})" in section
    svg = (res / rel).read_text()
    page = (res / "report.html").read_text()
    assert f'<div class="tree"><pre>s1  {U["a"]}' in page
    assert f"</pre><figure>{svg}</figure></div>" in page


def test_cells_say_pass_and_fail():
    html = report.to_html("| suite | passed | failed | flaky | status |\n"
                          "|---|---:|---:|---:|---|\n"
                          "| a | 3 | 0 | 0 | ok |\n"
                          "| b | 0 | 2 | 1 | **LOST** s2 (known bug) |\n"
                          "| c | 1 | 0 | 0 | FAILED |\n")
    rows = html.split("<tr>")[2:]
    assert '<td class="num ok">3</td><td class="num ok">0</td><td class="num">0</td>' \
        '<td class="ok">ok</td>' in rows[0]
    assert '<td class="num bad">2</td><td class="num warn">1</td><td class="warn">' in rows[1]
    assert '<td class="bad">FAILED</td>' in rows[2]
    assert "<th class=\"num\">passed</th>" in html


def test_the_report_stage_without_chromium_still_writes_the_report(tmp_path, monkeypatch, log):
    """The screenshot is for people: without chromium the stage writes the report and says
    how to get the picture (the browser test above is what fails in CI)."""
    from harness.core.pipeline import Context, NoRequest
    monkeypatch.setattr(browser, "find", lambda: None)
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    outcome = report.stage(Context(layout=layout), NoRequest(), log)
    assert (layout.results / "report.html").exists()
    assert not (layout.results / report.SCREENSHOT).exists()
    assert "no screenshot: apt-get install chromium" in outcome.summary


def test_chromium_is_a_required_capability_in_ci(monkeypatch, tmp_path):
    """Installed by setup, and its absence fails under CI=true instead of skipping."""
    assert browser.PACKAGE in APT_PACKAGES
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium here
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        need_chromium({"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        need_chromium({})


def test_the_dom_has_the_tables_and_the_tree(chromium, results, log):
    dom = _Dom()
    dom.feed(browser.dump_dom(results.results / "report.html", log, WIDTH))
    md = (results.results / "report.md").read_text()
    lines = md.splitlines()
    md_tables = sum(1 for a, b in zip(lines, lines[1:], strict=False)
                    if a.startswith("|") and b.startswith("|---"))
    assert dom.tags.get("table") == md_tables >= 1
    assert dom.tags.get("svg") == 1 and dom.svg_nodes == len(TREE["snapshots"])
    assert dom.tags.get("pre", 0) >= 1  # the tree's text form beside it
    assert ("div", "tree") in dom.classes
    # the failed count of stock is red, the passed counts green
    assert ("td", "num bad") in dom.classes and ("td", "num ok") in dom.classes


def test_the_screenshot_is_the_page_and_not_blank(chromium, results, log):
    """The kept screenshot (report.png, what `build.py report` leaves for humans) is the
    whole page at the width asked for, mostly background but well covered with text and
    tables, and Chromium painted the CSS (pass and fail cells) and the SVG (the current
    snapshot's fill)."""
    png = report.screenshot(results, log, WIDTH)
    assert png == results.results / "report.png"
    width, height, rows = _decode_png(png.read_bytes())
    assert width == WIDTH and 600 <= height <= 3000
    count: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for x in range(0, len(row), 3):
            px = (row[x], row[x + 1], row[x + 2])
            count[px] = count.get(px, 0) + 1
    total = width * height
    background = count.get(WHITE, 0)
    assert 0.5 * total < background < 0.97 * total, "blank, or not a page of text"
    assert len(count) > 50, "no text drawn (anti-aliased glyphs give many colours)"
    for colour, what in ((OK, "a passed count"), (BAD, "a failed count"),
                         (CURRENT, "the current snapshot")):
        assert _near(count, colour) > 200, f"no {what} colour {colour} in the screenshot"


def _near(count: dict, colour: tuple[int, int, int], tolerance: int = 3) -> int:
    return sum(n for px, n in count.items()
               if all(abs(a - b) <= tolerance for a, b in zip(px, colour, strict=True)))


def _decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA PNG (alpha dropped)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:  # Sub
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + (left + prev[x]) // 2) & 255
        elif kind == 4:  # Paeth
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        rows.append(bytes(line) if bpp == 3 else
                    bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows

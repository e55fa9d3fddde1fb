"""One report for reviewers and nightly CI: out/results/report.{md,html}.

It only gathers what the other commands left in out/results and the build
metadata; a section whose input is missing says which command makes it.
The snapshot trees the lineage tests recorded (``tree-<label>.json`` in their
test directories, rig/lineage.py) are shown as text with a picture beside:
an SVG written next to each (``tree-<label>.svg``), linked from the Markdown
and inlined in the HTML. The stage also keeps a screenshot of the HTML as
headless Chromium draws it (``report.png``) when Chromium is installed.
"""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from harness.core import browser
from harness.core.config import PROFILES, Baseline, Layout
from harness.core.pipeline import Context, NoRequest, Outcome, Stage
from harness.core.runner import StageLog
from harness.stages import bisect
from harness.stages import checkpatch as review
from harness.stages.series import grouped

SUITES = (("qemu", "QEMU tests on real guests"), ("iotests", "Upstream iotests"),
          ("peers", "Peer matrix (older QEMU releases)"),
          ("libvirt", "libvirt drives the patched QEMU"),
          ("reliability", "Reliability (crash states, faults, kill -9, fuzzer)"),
          ("unit", "Harness unit tests"))


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def junit_counts(path: Path, split_builds: bool = True) -> dict[str, Counter] | None:
    """Outcome counts per build from a JUnit file: passed, failed, xfailed, skipped, and
    flaky (passed only when rerun). The build is the test's "build" property (the QEMU
    rig records it), "-" for tests without one; never guessed from a test's name."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts: dict[str, Counter] = {}
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        build = props.get("build", "-") if split_builds else "-"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif (sk := case.find("skipped")) is not None:
            outcome = "xfailed" if "xfail" in (sk.get("type", "") + sk.get("message", "")) \
                else "skipped"
        elif "flaky" in props:
            outcome = "flaky"
        else:
            outcome = "passed"
        counts.setdefault(build, Counter())[outcome] += 1
    return counts


def _section_builds(layout: Layout, selected: Baseline | None) -> list[str]:
    out = ["## Baseline and series", ""]
    if selected:
        out.append(f"Selected baseline profile: {selected.name} (QEMU "
                   f"{selected.upstream_version}, {selected.ident}).")
        out.append("")
    for name in ("patched", "stock"):
        meta = _load(PROFILES[name].build_dir(layout) / "metadata.json")
        if meta is None:
            out.append(f"- {name}: no build (run `python3 build.py build`)")
            continue
        b = meta["baseline"]
        if selected and b.get("profile", selected.name) != selected.name:
            out.append(f"- {name}: built from profile {b.get('profile')}, not the selected "
                       f"{selected.name} (`python3 build.py --baseline {b.get('profile')} "
                       "report` for that one)")
        out.append(f"- **{name}**: baseline {b.get('profile') or b.get('upstream')} "
                   f"(QEMU {b.get('upstream')}): {b['ident']} ({b.get('source')}, orig sha256 "
                   f"`{(b.get('orig_sha256') or '-')[:16]}…`), series-base "
                   f"`{(b.get('base_commit') or '')[:12]}`, HEAD `{meta['head'][:12]}`, "
                   f"{len(meta['series'])} patch(es); built {meta['built_at']}")
        if name == "patched":
            for series, commits in grouped(meta["series"], lambda c: c.get("series", "")):
                indent = "  "
                if series:
                    out.append(f"  - series **{series}**: {len(commits)} patch(es)")
                    indent = "    "
                out += [f"{indent}- `{c['commit'][:12]}` {c['subject']}" for c in commits]
            out.append(f"  - reproduce: `{meta['reproduce']}`")
    return out + [""]


def _section_json_table(layout: Layout, name: str, title: str, render, how: str):
    data = _load(layout.results / f"{name}.json")
    out = [f"## {title}", ""]
    if data is None:
        return out + [f"Not run: `{how}`.", ""]
    return out + render(data) + [""]


def _checkpatch_rows(data) -> list[str]:
    reviews = review.load(data)
    notes = review.details(reviews, kinds=("ERROR", "WARNING"))
    return review.table(reviews).splitlines() + \
        (["", *(f"- {line}" for line in notes.splitlines())] if notes else [])


def _bisect_rows(data) -> list[str]:
    return bisect.table(bisect.load(data)).splitlines()


def _section_ports(layout: Layout) -> list[str]:
    """One table per `build.py --baseline NAME port` run (port-NAME.json)."""
    from harness.stages.port import rows
    out = []
    for path in sorted(layout.results.glob("port-*.json")):
        data = _load(path)
        if not data:
            continue
        flag = "" if data.get("build", True) else " --no-build"
        out += [f"## Port to {data['profile']}", "",
                f"{data.get('summary', '')} (`python3 build.py --baseline "
                f"{data['profile']} port{flag}`, {data.get('generated_at', '')}).", ""]
        out += rows(data) + [""]
    return out


def _bench_rows(data) -> list[str]:
    rows = ["| benchmark | patched | stock | ratio | target |", "|---|---:|---:|---:|---|"]
    for r in data.get("rows", []):
        rows.append(f"| {r['name']} | {r.get('patched', '-')} | {r.get('stock', '-')} | "
                    f"{r.get('ratio', '-')} | {r.get('target', '')} |")
    return rows


CURRENT_NOTE = {"right": "", "stale": ", stale (detected)", None: "",
                "wrong": ", current wrong (undetectable)", "absent": ", no record"}


def _peer_cell(c: dict) -> str:
    problems = c.get("problems") or []
    first = problems[0] if problems else c.get("status", "?")
    short = first.split(":")[0] if "snapshots gone" in first else first[:44]
    known = " (known bug)" if c.get("known_loss") else ""
    status = c.get("status")
    if status == "ok":
        return "ok" + CURRENT_NOTE.get(c.get("current"), f", current {c.get('current')}")
    if status == "error":
        return f"ERROR {short}"
    label = {"lost": "LOST", "check": "CHECK", "current": "CURRENT"}.get(status, status)
    return f"**{label}** {short}{' +' + str(len(problems) - 1) if len(problems) > 1 else ''}" \
        + known


def _peers_rows(data) -> list[str]:
    """One table per writer: ops down, peers across; then the known bugs, once each."""
    peers = list(data.get("peers", {}))
    ops = [o["name"] for o in data.get("ops", [])] + ["new-reads"]
    writers: dict[str, list[dict]] = {}
    for c in data.get("cells", []):
        writers.setdefault(c["writer"], []).append(c)
    heads = [f"{p} ({data['peers'][p].get('qemu', '?')})" for p in peers]
    out = []
    for writer, cells in writers.items():
        first = next((c for c in cells if c.get("identity")), cells[0])
        out += [f"**writer {writer}** (QEMU {first.get('writer_version', '?')}, identity "
                f"{first.get('identity', '-')})", "",
                "| op | " + " | ".join(heads) + " |", "|---|" + "---|" * len(peers)]
        by = {(c["op"], c["peer"]): c for c in cells}
        for op in ops:
            if any((op, p) in by for p in peers):
                out.append(f"| {op} | " + " | ".join(
                    _peer_cell(by[(op, p)]) if (op, p) in by else "-" for p in peers) + " |")
        out.append("")
    bugs = sorted({c["known_loss"] for c in data.get("cells", []) if c.get("known_loss")})
    if bugs:
        out += ["Known data loss (strict xfails; the test fails when it stops happening):"]
        out += [f"- {b}" for b in dict.fromkeys(
            re.sub(r"every QEMU up to [^;)]*", "every peer", b) for b in bugs)]
    return out


def _libvirt_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    what = f" ({', '.join(row.get('commands') or [])})" if row.get("commands") else ""
    if row["status"] == "match":
        return "match" + what
    problems = row.get("problems") or ["?"]
    more = f" +{len(problems) - 1}" if len(problems) > 1 else ""
    label = "**MISMATCH**" if row["status"] == "mismatch" else "**ERROR**"
    return f"{label} {problems[0][:120]}{more}{what}"


def _libvirt_rows(data) -> list[str]:
    """Steps down, libvirts across: whether the image's tree was libvirt's after each."""
    names = list(data.get("results", {}))
    facts = data.get("libvirts", {})
    heads = [f"{n} ({facts.get(n, {}).get('version', '?')})" for n in names]
    steps: dict[int, str] = {}
    for rows in data["results"].values():
        for r in rows:
            steps.setdefault(r["n"], r["step"])
    by = {(n, r["n"]): r for n in names for r in data["results"][n]}
    out = ["| step | " + " | ".join(heads) + " |", "|---|" + "---|" * len(names)]
    for i in sorted(steps):
        out.append(f"| {i} {steps[i]} | "
                   + " | ".join(_libvirt_cell(by.get((n, i))) for n in names) + " |")
    times = [f"{n}: {facts[n].get('total_seconds', '?')} s (boot "
             f"{facts[n].get('boot_seconds', '?')} s)" for n in names if n in facts]
    return out + ["", "Time per libvirt: " + "; ".join(times) + "."] if times else out


def _known(ids) -> str:
    return ", ".join(ids) if ids else "-"


def _reliability_rows(data) -> list[str]:
    """tests/reliability's summary: a table per part, then the bugs it knows of."""
    mode = data.get("mode", {})
    out = [f"Mode {mode.get('name', '?')} (seed {mode.get('seed', '?')}), "
           f"{data.get('generated_at', '')}.", ""]
    crash = data.get("crash") or {}
    if crash:
        first = next(iter(crash.values()))
        out += [f"**Crash states** (blklogwrites; bound: {first.get('bound', '?')})", "",
                "| build | clusters | path | writes / flushes | states | distinct images | "
                "leaks or harmless flags (check exit 2) | failed | known bugs |",
                "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for c in crash.values():
            out.append(f"| {c.get('build')} | {c.get('cluster_size', 0) // 1024}k | "
                       f"{c.get('path')} | {_log_cell(c.get('log', {}))}"
                       f" | {c.get('states')} | {c.get('distinct_images')} | "
                       f"{c.get('harmless_inconsistent', 0)} ({c.get('check_exit2_harmless', '-')})"
                       f" | {c.get('failed_states')} | "
                       f"{_known(c.get('known_bugs'))} |")
        out.append("")
        loads = [c for c in crash.values() if c.get("loadvm")]
        if loads:
            out += ["**loadvm of a save's crash states** (a fresh VM loads the new snapshot "
                    "where the state lists it, else the previous current one; it must load, "
                    "run and hold the saved RAM)", "",
                    "| path | distinct states | loaded | new snapshot | previous | failed |",
                    "|---|---:|---:|---:|---:|---:|"]
            for c in loads:
                lv = c["loadvm"]
                out.append(f"| {c.get('path')} | {lv.get('states')} | {lv.get('loaded')} | "
                           f"{lv.get('new_snapshot')} | {lv.get('previous')} | "
                           f"{lv.get('failed_runs')} |")
            out.append("")
        pairs = [c for c in crash.values() if c.get("pairs")]
        if pairs:
            out += ["**Two disks in a VM** (a crash state per disk; every class pair: the "
                    "operation's snapshot listed or absent on each disk; query-vm-snapshots "
                    "partial exactly when one has it, loadvm of a save's snapshot only when "
                    "both have it, a load or delete done again works)", "",
                    "| path | distinct states (disk0, disk1) | pairs | by class | failed |",
                    "|---|---|---:|---|---:|"]
            for c in pairs:
                pr = c["pairs"]
                by = ", ".join(f"{k} {n}" for k, n in (pr.get("by_class") or {}).items())
                per_disk = ", ".join(map(str, pr.get("distinct_per_disk", [])))
                out.append(f"| {c.get('path')} | {per_disk} | {pr.get('pairs')} | {by} | "
                           f"{pr.get('failed_pairs')} |")
            out.append("")
    faults = data.get("faults") or {}
    if faults:
        out += ["**Fault injection** (blkdebug: every write and flush, errnos "
                f"{', '.join(str(e) for e in mode.get('fault_errnos', []))}"
                + (", qcow2 events" if mode.get("fault_events") else "") + ")", "",
                "| build | path | writes / flushes | fault runs | op failed | "
                "failed runs | known bugs |", "|---|---|---:|---:|---:|---:|---|"]
        for f in faults.values():
            on = f" (on {f['fault_on']})" if f.get("fault_on") else ""
            out.append(f"| {f.get('build')} | {f.get('path')} | {f.get('writes')} / "
                       f"{f.get('flushes')}{on} | {f.get('runs')} | {f.get('op_failed')} | "
                       f"{f.get('failed_runs')} | {_known(f.get('known_bugs'))} |")
        out.append("")
    for k in (data.get("kill") or {}).values():
        out += ["**kill -9 during savevm / snapshot-save**", "",
                "| runs | new snapshot complete | absent | failed runs | known bugs |",
                "|---:|---:|---:|---:|---|",
                f"| {k.get('runs')} | {k.get('snapshot_complete')} | "
                f"{k.get('snapshot_absent')} | {k.get('failed_runs')} | "
                f"{_known(k.get('known_bugs'))} |", ""]
    for z in (data.get("fuzz") or {}).values():
        hits = ", ".join(f"{b} x{n}" for b, n in (z.get("known_bug_hits") or {}).items())
        failure = z.get("failure")
        out += ["**Snapshot-table fuzzer** (hypothesis)", "",
                "| build | sanitizers | examples | qemu-img runs | seconds | runs/s | "
                "known bugs hit | new crash |", "|---|---|---:|---:|---:|---:|---|---|",
                f"| {z.get('build')} | {'ASan+UBSan' if z.get('sanitizers') else 'none'} | "
                f"{z.get('examples')} | {z.get('executions')} | {z.get('seconds')} | "
                f"{z.get('exec_per_second')} | {hits or '-'} | "
                f"{'**yes**: ' + failure.get('kept', '') if failure else 'no'} |", ""]
    bugs, fixed = data.get("bugs") or [], data.get("fixed_bugs") or []
    if bugs or fixed:
        out += ["Bugs found (tests/reliability/bugs/BUGS.md has the reproducers):"]
        out += [f"- **{b['id']}** ({b['origin']}, open): {b['title']}" for b in bugs]
        out += [f"- **{b['id']}**: fixed by `{b['fixed_by']}`" for b in fixed]
    return out


def _log_cell(log: dict) -> str:
    """Writes / flushes of a path's log; per disk for a path with several."""
    if "writes" in log or not log:
        return f"{log.get('writes', '-')} / {log.get('flushes', '-')}"
    return ", ".join(f"{disk} {c.get('writes')} / {c.get('flushes')}" for disk, c in log.items())


def _section_tests(layout: Layout) -> list[str]:
    out = ["## Tests", "", "| suite | build | passed | failed | flaky | xfailed | skipped |",
           "|---|---|---:|---:|---:|---:|---:|"]
    missing = []
    for suite, title in SUITES:
        counts = junit_counts(layout.results / f"junit-{suite}.xml",
                              split_builds=suite != "unit")
        if counts is None:
            missing.append(suite)
            continue
        for build, c in sorted(counts.items()):
            out.append(f"| {title} | {build} | {c['passed']} | {c['failed']} | "
                       f"{c['flaky']} | {c['xfailed']} | {c['skipped']} |")
    if missing:
        out += ["", "Not run: " + ", ".join(
            f"`python3 build.py test --suite {s}`" for s in missing) + "."]
    return out + [""]


# where the QEMU suites' tests record trees: <results>/<suite>/tests/<module>/<test>/ (and
# <results>/tests/... for a pytest run by hand with the default --results-dir)
TREE_GLOBS = ("*/tests/*/*/tree-*.json", "tests/*/*/tree-*.json")


def recorded_trees(layout: Layout) -> list[tuple[Path, dict]]:
    """The snapshot trees tests recorded (query-vm-snapshots-shaped data), by path."""
    found = []
    for path in sorted({p for g in TREE_GLOBS for p in layout.results.glob(g)}):
        data = _load(path)
        if isinstance(data, dict) and isinstance(data.get("snapshots"), list):
            found.append((path, data))
    return found


def _section_trees(layout: Layout) -> list[str]:
    out = ["## Snapshot trees of the lineage tests", ""]
    trees = recorded_trees(layout)
    if not trees:
        return out + ["None recorded: `python3 build.py test --suite qemu` "
                      "(tests/qemu/test_vm_lineage.py records them).", ""]
    import snaptree  # the product tool at the repository root, only when there are trees
    out += ["Each tree as the text form prints it (`build.py tree`) and drawn: the "
            "current snapshot filled, each line from a parent to its child, UUIDs cut to "
            "8 digits (the whole UUID is in each box's tooltip).", ""]
    module = None
    for path, data in trees:
        rel = path.relative_to(layout.results)
        if rel.parts[-3] != module:
            module = rel.parts[-3]
            out += [f"### {module}", ""]
        label = path.stem.removeprefix("tree-")
        out += [f"**{rel.parts[-2]}**: {label}", "", "```",
                *snaptree.render(data).splitlines(), "```", "",
                f"![snapshot tree {label}]({rel.with_suffix('.svg').as_posix()})", ""]
    return out


def markdown(layout: Layout, baseline: Baseline | None = None) -> str:
    lines = ["# QEMU snapshot-identity series: review report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.", ""]
    lines += _section_builds(layout, baseline)
    lines += _section_json_table(layout, "checkpatch", "checkpatch and hygiene",
                                 _checkpatch_rows, "python3 build.py checkpatch")
    lines += _section_json_table(layout, "bisect", "Every patch builds (-Werror)",
                                 _bisect_rows, "python3 build.py bisect")
    lines += _section_ports(layout)
    lines += _section_tests(layout)
    lines += _section_trees(layout)
    lines += _section_json_table(layout, "peers", "Peer matrix: older QEMU on the series' images",
                                 _peers_rows, "python3 build.py test --suite peers")
    lines += _section_json_table(layout, "libvirt",
                                 "libvirt drives the patched QEMU: the image's tree is libvirt's",
                                 _libvirt_rows, "python3 build.py test --suite libvirt")
    lines += _section_json_table(layout, "reliability",
                                 "Reliability: crash states, faults, kill -9, fuzzer",
                                 _reliability_rows, "python3 build.py test --suite reliability")
    lines += _section_json_table(layout, "bench", "Benchmarks (patched beside stock)",
                                 _bench_rows, ".venv/bin/nox -s bench")
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body{margin:0;background:#fff;color:#1f2937;
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 32px 48px}
h1{font-size:1.7em;margin:.2em 0 .4em;padding-bottom:.3em;border-bottom:2px solid #e5e7eb}
h2{font-size:1.3em;margin:1.8em 0 .6em;padding-bottom:.2em;border-bottom:1px solid #e5e7eb}
h3{font-size:1.08em;margin:1.4em 0 .5em}
p{margin:.45em 0}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.86em}
code{background:#f3f4f6;border-radius:3px;padding:0 .25em}
pre{background:#f9fafb;border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;margin:0;
  overflow-x:auto}
ul{margin:.3em 0;padding-left:1.4em}
li{margin:.12em 0}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.92em}
th,td{border:1px solid #d1d5db;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
tbody tr:nth-child(even) td{background:#f9fafb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr td.ok{background:#dcfce7;color:#14532d}
tbody tr td.bad{background:#fee2e2;color:#991b1b;font-weight:600}
tbody tr td.warn{background:#fef9c3;color:#713f12}
.tree{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:.4em 0 1.2em}
.tree figure{margin:0;padding:4px;border:1px solid #e5e7eb;border-radius:6px}
"""

# a cell that says something failed, in any table of the report
_BAD = re.compile(r"\b(FAILED|ERROR|MISMATCH|LOST|CHECK|CURRENT|NO)\b")
_GOOD = re.compile(r"^(ok|match|yes|passed)\b")
# count columns: a non-zero count is bad / worth a look / good
_BAD_COUNTS = ("failed", "errors", "failed states", "failed runs")
_WARN_COUNTS = ("flaky", "warnings")


def _cell_class(header: str, text: str, numeric: bool) -> str:
    """"ok", "bad", "warn" or "" for a table cell (its column's header and its text)."""
    head = header.lower()
    if numeric and text.isdigit():
        n = int(text)
        if head in _BAD_COUNTS:
            return "bad" if n else "ok"
        if head in _WARN_COUNTS and n:
            return "warn"
        if head == "passed" and n:
            return "ok"
        return ""
    if _BAD.search(text):
        return "warn" if "known bug" in text else "bad"  # a strict xfail: it is tracked
    return "ok" if _GOOD.match(text) else ""


def _inline(text: str) -> str:
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", text)


def _table(rows: list[str]) -> str:
    def cells(row: str) -> list[str]:
        return [c.strip() for c in row.strip().strip("|").split("|")]

    def is_rule(row: str) -> bool:
        return re.fullmatch(r"\|[-:| ]+\|", row.strip()) is not None

    align = next((cells(r) for r in rows if is_rule(r)), [])
    head, *body = [cells(r) for r in rows if not is_rule(r)]
    width = max([len(head)] + [len(r) for r in body])
    numeric = [a.endswith(":") for a in align] + [False] * width
    head = head + [""] * (width - len(head))

    def cell(tag: str, i: int, text: str, cls: str = "") -> str:
        names = " ".join(c for c in ("num" if numeric[i] else "", cls) if c)
        attrs = f' class="{names}"' if names else ""
        return f"<{tag}{attrs}>{_inline(text)}</{tag}>"

    out = ["<table><thead><tr>" + "".join(cell("th", i, c) for i, c in enumerate(head))
           + "</tr></thead><tbody>"]
    for row in body:
        out.append("<tr>" + "".join(cell("td", i, c, _cell_class(head[i], c, numeric[i]))
                                    for i, c in enumerate(row)) + "</tr>")
    return "".join(out) + "</tbody></table>"


def to_html(md: str, images: dict[str, str] | None = None) -> str:
    """Just enough Markdown for this report: headings, tables (numbers right-aligned, pass
    and fail cells coloured), nested lists, code, fenced blocks, and images; an image whose
    source is in ``images`` (an SVG's text) is inlined, beside the fenced block before it."""
    images = images or {}
    body: list[str] = []
    table: list[str] = []
    fence: list[str] | None = None
    depth = 0  # open <ul> levels

    def close_lists(to: int = 0) -> None:
        nonlocal depth
        while depth > to:
            body.append("</li></ul>")
            depth -= 1

    for line in md.splitlines():
        if fence is not None:
            if line.strip() == "```":
                body.append("<pre>" + html.escape("\n".join(fence)) + "</pre>")
                fence = None
            else:
                fence.append(line)
            continue
        if line.startswith("|"):
            close_lists()
            table.append(line)
            continue
        if table:
            body.append(_table(table))
            table.clear()
        if line.strip() == "```":
            close_lists()
            fence = []
            continue
        if m := re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip()):
            close_lists()
            alt, src = m.groups()
            if src in images:
                figure = f"<figure>{images[src]}</figure>"
                if body and body[-1].startswith("<pre>"):
                    body[-1] = f'<div class="tree">{body[-1]}{figure}</div>'
                else:
                    body.append(f'<div class="tree">{figure}</div>')
            else:
                body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(alt)}"></p>')
            continue
        if m := re.match(r"^( *)- (.*)", line):
            level = len(m.group(1)) // 2 + 1
            if level > depth:
                while depth < level:
                    body.append("<ul><li>")
                    depth += 1
            else:
                close_lists(level)
                body.append("</li><li>")
            body.append(_inline(m.group(2)))
            continue
        close_lists()
        if m := re.match(r"^(#+) (.*)", line):
            n = len(m.group(1))
            body.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if fence is not None:
        body.append("<pre>" + html.escape("\n".join(fence)) + "</pre>")
    if table:
        body.append(_table(table))
    close_lists()
    title = next((ln[2:] for ln in md.splitlines() if ln.startswith("# ")), "report")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def write(layout: Layout, baseline: Baseline | None = None) -> Path:
    layout.results.mkdir(parents=True, exist_ok=True)
    md = markdown(layout, baseline)
    path = layout.results / "report.md"
    path.write_text(md)
    images = {}
    for tree, data in recorded_trees(layout):
        from snaptree import render_svg  # as in _section_trees
        svg = render_svg(data)
        tree.with_suffix(".svg").write_text(svg)
        images[tree.with_suffix(".svg").relative_to(layout.results).as_posix()] = svg
    (layout.results / "report.html").write_text(to_html(md, images))
    return path


SCREENSHOT = "report.png"


def screenshot(layout: Layout, log: StageLog, width: int = 1280) -> Path:
    """report.html as Chromium draws it, the whole page: out/results/report.png."""
    png = layout.results / SCREENSHOT
    browser.full_page(layout.results / "report.html", png, log, width)
    return png


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome[Path]:
    path = write(ctx.layout, ctx.baseline)
    if browser.find() is None:  # the report is made all the same; only its picture is not
        log.note(f"no {SCREENSHOT}: {browser.CHROMIUM} is not installed")
        return Outcome(f"wrote {path} and {path.with_suffix('.html').name} (no screenshot: "
                       f"apt-get install {browser.PACKAGE}, or `python3 build.py setup`)", path)
    png = screenshot(ctx.layout, log)
    return Outcome(f"wrote {path}, {path.with_suffix('.html').name} and {png.name}", path)


STAGE = Stage("report", stage, "write out/results/report.md and .html, and a screenshot of "
                               "the HTML in headless Chromium (report.png)")

"""One report for reviewers and nightly CI: out/results/report.{md,html}.

It only gathers what the other commands left in out/results and the build
metadata; a section whose input is missing says which command makes it.
"""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

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
            log = c.get("log", {})
            out.append(f"| {c.get('build')} | {c.get('cluster_size', 0) // 1024}k | "
                       f"{c.get('path')} | {log.get('writes', '-')} / {log.get('flushes', '-')}"
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
    faults = data.get("faults") or {}
    if faults:
        out += ["**Fault injection** (blkdebug: every write and flush, errnos "
                f"{', '.join(str(e) for e in mode.get('fault_errnos', []))}"
                + (", qcow2 events" if mode.get("fault_events") else "") + ")", "",
                "| build | path | writes / flushes | fault runs | op failed | "
                "failed runs | known bugs |", "|---|---|---:|---:|---:|---:|---|"]
        for f in faults.values():
            out.append(f"| {f.get('build')} | {f.get('path')} | {f.get('writes')} / "
                       f"{f.get('flushes')} | {f.get('runs')} | {f.get('op_failed')} | "
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
    bugs = data.get("bugs") or []
    if bugs:
        out += ["Bugs found (tests/reliability/bugs/BUGS.md has the reproducers):"]
        out += [f"- **{b['id']}** ({b['origin']}): {b['title']}" for b in bugs]
    return out


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


def to_html(md: str) -> str:
    """Just enough Markdown (headings, tables, lists, code) for this report."""
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[-:| ]+\|", r)]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                                  for r in cells[1:]) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(line))
        text = re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", text)
        if m := re.match(r"^(#+) (.*)", text):
            body.append(f"<h{len(m.group(1))}>{m.group(2)}</h{len(m.group(1))}>")
        elif text.lstrip().startswith("- "):
            body.append(f"<li>{text.lstrip()[2:]}</li>")
        elif text:
            body.append(f"<p>{text}</p>")
    flush()
    return ("<!doctype html><meta charset=utf-8><title>review report</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #999;"
            "padding:2px 6px}</style>\n" + "\n".join(body) + "\n")


def write(layout: Layout, baseline: Baseline | None = None) -> Path:
    layout.results.mkdir(parents=True, exist_ok=True)
    md = markdown(layout, baseline)
    path = layout.results / "report.md"
    path.write_text(md)
    (layout.results / "report.html").write_text(to_html(md))
    return path


# -- the stage ---------------------------------------------------------------------------


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome[Path]:
    path = write(ctx.layout, ctx.baseline)
    return Outcome(f"wrote {path} and {path.with_suffix('.html').name}", path)


STAGE = Stage("report", stage, "write out/results/report.md and .html")

"""The step tables: one JSON per test (so pytest-xdist workers never share a file), merged
into libvirt.json for the report; and the table as text for people (steps.txt, failures).

A row: {"n", "step", "why", "status": match|mismatch|error, "problems": [...],
"commands": [what libvirt made QEMU do], "image", "libvirt" (the trees), "seconds"}.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_steps(directory: Path, name: str, facts: dict, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"name": name, "facts": facts, "rows": rows}, indent=2) + "\n")
    return path


def merge(directory: Path) -> dict | None:
    """{"libvirts": {name: facts}, "results": {name: rows}}; None when no test wrote one."""
    data: dict = {"libvirts": {}, "results": {}}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        one = json.loads(path.read_text())
        data["libvirts"][one["name"]] = one["facts"]
        data["results"][one["name"]] = one["rows"]
    return data if data["results"] else None


def table(rows: list[dict]) -> str:
    """One line per step (number, step, outcome, what QEMU was made to do), each problem
    indented below its step."""
    width = max((len(r["step"]) for r in rows), default=0)
    out = []
    for r in rows:
        cmds = ", ".join(r["commands"]) or "-"
        out.append(f"{r['n']:>2}  {r['step']:<{width}}  {r['status']:<8}  {cmds}")
        out += [f"      {p}" for p in r["problems"]]
    return "\n".join(out)

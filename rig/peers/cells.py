"""The matrix summary: each test leaves one JSON cell (xdist workers too); the controller
merges them into out/results/peers.json, which harness/stages/report.py renders."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from harness.stages import peers as hpeers
from rig.peers import matrix as mx

CELLS = "cells"


def clear(results: Path) -> None:
    shutil.rmtree(results / CELLS, ignore_errors=True)


def record(results: Path, cell: dict) -> None:
    directory = results / CELLS
    directory.mkdir(parents=True, exist_ok=True)
    key = f"{cell['kind']}-{cell['writer']}-{cell['peer']}-{cell['op']}"
    (directory / (re.sub(r"[^A-Za-z0-9_.+-]+", "_", key) + ".json")).write_text(
        json.dumps(cell, indent=1) + "\n"
    )


def merge(results: Path, path: Path) -> dict | None:
    found = []
    for f in sorted((results / CELLS).glob("*.json")):
        try:
            found.append(json.loads(f.read_text()))
        except ValueError:
            continue
    if not found:
        return None
    peers: dict[str, dict] = {}
    for c in found:
        peers.setdefault(c["peer"], {"qemu": c["peer_version"]})
    for name, info in peers.items():
        root = hpeers.locate(hpeers.PEERS[name]) if name in hpeers.PEERS else None
        if root is not None:
            info["package"] = root.manifest.get("packages", {}).get("qemu-utils")
    summary = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "peers": {n: peers[n] for n in hpeers.PEERS if n in peers},
        "ops": [{"name": op.name, "doc": op.doc} for op in mx.OPS],
        "upstream_fix": mx.UPSTREAM_FIX,
        "cells": found,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary

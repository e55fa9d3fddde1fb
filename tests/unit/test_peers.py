"""harness/stages/peers.py without chroots: the command lines it would run, the cache, the errors
(a fake runner stands in for mmdebstrap and chroot; outputs are recorded from real peers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import aptsrc
from harness.core.config import Layout
from harness.core.errors import CommandFailed, EnvironmentProblem, PeerError
from harness.core.pipeline import Context
from harness.stages import peers, testrun

ROOT = Path(__file__).resolve().parents[2]
MAIN = aptsrc.Source("http://mirror.invalid/debian", False)
SECURITY = aptsrc.Source("http://mirror.invalid/debian-security", True)
SOURCES = [MAIN, SECURITY]

# `qemu-img --version` and dpkg-query as the four peers printed them
RECORDED = {
    "bullseye": (
        "qemu-img version 5.2.0 (Debian 1:5.2+dfsg-11+deb11u5)\n"
        "Copyright (c) 2003-2020 Fabrice Bellard and the QEMU Project developers\n",
        "5.2.0",
        "1:5.2+dfsg-11+deb11u5",
    ),
    "bookworm": (
        "qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n",
        "7.2.22",
        "1:7.2+dfsg-7+deb12u18+b3",
    ),
    "trixie": (
        "qemu-img version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)\n",
        "10.0.13",
        "1:10.0.13+ds-0+deb13u1",
    ),
    "sid": ("qemu-img version 11.1.3 (Debian 1:11.1.3+ds-1)\n", "11.1.3", "1:11.1.3+ds-1"),
}


class FakeRunner:
    """Records argv; 'runs' mmdebstrap by making the target directory."""

    def __init__(self, peer: str = "bullseye", fail: str | None = None):
        self.calls: list[list[str]] = []
        self.envs: list[dict | None] = []
        self.peer = peer
        self.fail = fail

    def __call__(self, argv, log, cwd=None, env=None, check=True, input=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        self.envs.append(env)
        if self.fail and self.fail in argv[0:3]:
            raise CommandFailed(argv, 1, "E: boom", log=str(log.path))
        out = ""
        if argv[0] == "mmdebstrap":
            target = Path(argv[-1 - sum(1 for a in argv if a.startswith("deb "))])
            (target / "usr/bin").mkdir(parents=True)
            (target / "usr/bin/qemu-img").write_text("")
        elif argv[2:3] == ["dpkg-query"]:
            ver = RECORDED[self.peer][2]
            out = f"qemu-utils {ver}\nqemu-system-x86 {ver}\n"
        elif argv[2:] == ["qemu-img", "--version"]:
            out = RECORDED[self.peer][0]
        return subprocess.CompletedProcess(argv, 0, out, "")


@pytest.fixture
def layout(tmp_path):
    return Layout(root=tmp_path / "proj", cache=tmp_path / "cache")


# -- inputs --------------------------------------------------------------------------------------


def test_peers_are_the_four_deployed_releases():
    assert list(peers.PEERS) == ["bullseye", "bookworm", "trixie", "sid"]
    assert [p.qemu for p in peers.PEERS.values()] == ["5.2", "7.2", "10.0.13", "11.1.3"]
    assert all(p.packages == ("qemu-utils", "qemu-system-x86") for p in peers.PEERS.values())


def test_apt_lines_from_the_machines_mirrors():
    assert peers.apt_lines(peers.PEERS["bullseye"], SOURCES) == [
        "deb http://mirror.invalid/debian bullseye main",
        "deb http://mirror.invalid/debian bullseye-updates main",
        "deb http://mirror.invalid/debian-security bullseye-security main",
    ]
    # unstable: no -updates, no -security
    assert peers.apt_lines(peers.PEERS["sid"], SOURCES) == [
        "deb http://mirror.invalid/debian sid main"
    ]


def test_apt_lines_need_a_main_mirror():
    with pytest.raises(PeerError) as err:
        peers.apt_lines(peers.PEERS["trixie"], [SECURITY])
    assert "no main Debian mirror" in err.value.message and "sources.list.d" in err.value.hint


def test_no_mirror_at_all_says_how_to_configure_one(monkeypatch):
    def none():
        raise EnvironmentProblem("no Debian archive found", hint="pass --tarball")

    monkeypatch.setattr(aptsrc, "system_sources", none)
    with pytest.raises(PeerError) as err:
        peers.mirror_sources()
    assert err.value.exit_code == 3
    assert "no Debian mirror to install the peers from" in err.value.message
    assert "build.py peers" in err.value.hint and "tarball" not in err.value.hint


def test_mmdebstrap_command_lines():
    lines = peers.apt_lines(peers.PEERS["sid"], SOURCES)
    assert peers.mmdebstrap_argv(peers.PEERS["sid"], Path("/c/x"), lines) == [
        "mmdebstrap",
        "--variant=apt",
        "--include=qemu-utils,qemu-system-x86",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        "sid",
        "/c/x",
        "deb http://mirror.invalid/debian sid main",
    ]
    argv = peers.mmdebstrap_argv(peers.PEERS["bookworm"], Path("/c/y"), ["deb A bookworm main"])
    assert argv == [
        "mmdebstrap",
        "--variant=apt",
        "--include=qemu-utils,qemu-system-x86",
        "bookworm",
        "/c/y",
        "deb A bookworm main",
    ]


def test_the_cache_key_follows_every_input(layout):
    bullseye = peers.PEERS["bullseye"]
    one = peers.cached_dir(layout, bullseye, SOURCES)
    assert one.parent == layout.cache / "peers"
    assert one.name.startswith("bullseye-") and len(one.name) == len("bullseye-") + 12
    assert peers.cached_dir(layout, bullseye, SOURCES) == one  # stable
    from dataclasses import replace

    variants = [
        replace(bullseye, packages=("qemu-utils",)),
        replace(bullseye, aptopts=("X",)),
        replace(bullseye, suite="bookworm", name="bullseye"),
        replace(bullseye, security=False),
    ]
    for v in variants:
        assert peers.cached_dir(layout, v, SOURCES) != one, v
    assert peers.cached_dir(layout, bullseye, [MAIN]) != one  # the mirror set
    assert "mirror.invalid" not in one.name


def test_version_parsers_on_recorded_output():
    for text, version, _pkg in RECORDED.values():
        assert peers.parse_qemu_version(text) == version
    assert peers.version_tuple("10.0.13") == (10, 0, 13)
    assert peers.parse_dpkg_versions("qemu-utils 1:5.2\nqemu-system-x86 1:5.2\n") == {
        "qemu-utils": "1:5.2", "qemu-system-x86": "1:5.2"}  # fmt: skip
    with pytest.raises(PeerError):
        peers.parse_qemu_version("chroot: failed to run command 'qemu-img'")


# -- building and the cache ------------------------------------------------------------------


def test_build_runs_mmdebstrap_then_probes_and_renames_into_place(layout, log):
    run = FakeRunner("bullseye")
    res = peers.ensure(
        peers.PEERS["bullseye"], layout, log, sources=SOURCES, runner=run, is_root=True
    )
    final = peers.cached_dir(layout, peers.PEERS["bullseye"], SOURCES)
    tmp = run.calls[0][-4]
    assert run.calls[0][:5] == [
        "mmdebstrap",
        "--variant=apt",
        "--include=qemu-utils,qemu-system-x86",
        "bullseye",
        tmp,
    ]
    assert Path(tmp).name == f".tmp-{final.name}-{os.getpid()}"
    assert run.calls[1] == [
        "chroot",
        tmp,
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${Version}\n",
        "qemu-utils",
        "qemu-system-x86",
    ]
    assert run.calls[2] == ["chroot", tmp, "qemu-img", "--version"]
    assert run.envs[2] == peers.ENV  # nothing of the host's environment inside
    assert res.built and res.root.root == final and not Path(tmp).exists()
    manifest = json.loads((final / "peer.json").read_text())
    assert manifest["qemu_version"] == "5.2.0"
    assert manifest["packages"]["qemu-utils"] == "1:5.2+dfsg-11+deb11u5"
    assert manifest["inputs"]["apt"][2].endswith("bullseye-security main")
    assert (final / "work").is_dir()
    assert res.root.label == "bullseye (QEMU 5.2.0)"


def test_cached_peer_runs_nothing(layout, log):
    peers.ensure(
        peers.PEERS["sid"], layout, log, sources=SOURCES, runner=FakeRunner("sid"), is_root=True
    )
    again = FakeRunner("sid")
    res = peers.ensure(
        peers.PEERS["sid"], layout, log, sources=SOURCES, runner=again, is_root=False
    )
    assert not res.built and again.calls == []
    assert res.root.qemu_version == "11.1.3"
    assert peers.locate(peers.PEERS["sid"], layout, SOURCES) == res.root


def test_rebuild_and_new_inputs_replace_older_chroots(layout, log):
    sid = peers.PEERS["sid"]
    first = peers.ensure(
        sid, layout, log, sources=SOURCES, runner=FakeRunner("sid"), is_root=True
    ).root.root
    dead_tmp = layout.cache / "peers" / ".tmp-sid-0123456789ab-999999999"
    dead_tmp.mkdir()
    other = layout.cache / "peers" / "trixie-0123456789ab"
    other.mkdir()
    again = FakeRunner("sid")
    res = peers.ensure(sid, layout, log, sources=SOURCES, runner=again, rebuild=True, is_root=True)
    assert res.built and res.root.root == first and again.calls[0][0] == "mmdebstrap"
    assert not dead_tmp.exists(), "a dead build's temporary dir stays"
    mirror = aptsrc.Source("http://other.invalid/debian", False)
    newer = peers.ensure(
        sid, layout, log, sources=[mirror], runner=FakeRunner("sid"), is_root=True
    ).root.root
    assert newer != first and not first.exists(), "the chroot of the old inputs stays"
    assert other.exists(), "another peer's chroot was removed"


def test_mmdebstrap_failure_leaves_nothing_and_says_what_next(layout, log):
    with pytest.raises(PeerError) as err:
        peers.ensure(
            peers.PEERS["trixie"],
            layout,
            log,
            sources=SOURCES,
            runner=FakeRunner("trixie", fail="mmdebstrap"),
            is_root=True,
        )
    assert "mmdebstrap could not install trixie" in err.value.message
    assert "dists/trixie/Release" in err.value.hint and "--only trixie" in err.value.hint
    assert err.value.log and err.value.exit_code == 3
    assert list((layout.cache / "peers").iterdir()) == []


def test_a_chroot_without_qemu_img_is_not_cached(layout, log):
    with pytest.raises(PeerError) as err:
        peers.ensure(
            peers.PEERS["trixie"],
            layout,
            log,
            sources=SOURCES,
            runner=FakeRunner("trixie", fail="qemu-img"),
            is_root=True,
        )
    assert "does not run qemu-img" in err.value.message
    assert peers.locate(peers.PEERS["trixie"], layout, SOURCES) is None
    assert list((layout.cache / "peers").iterdir()) == []


def test_building_needs_root_and_mmdebstrap(layout, log, monkeypatch):
    with pytest.raises(PeerError) as err:
        peers.ensure(
            peers.PEERS["sid"], layout, log, sources=SOURCES, runner=FakeRunner(), is_root=False
        )
    assert "need root" in err.value.message
    monkeypatch.setattr(peers.shutil, "which", lambda tool: None)
    with pytest.raises(PeerError) as err:
        peers.ensure(
            peers.PEERS["sid"], layout, log, sources=SOURCES, runner=FakeRunner(), is_root=True
        )
    assert err.value.hint == "apt-get install mmdebstrap, or `python3 build.py setup`"


def test_unknown_peer_names(layout):
    with pytest.raises(PeerError) as err:
        peers.select(["buster"])
    assert "bullseye, bookworm, trixie, sid" in err.value.hint
    assert [p.name for p in peers.select(["sid", "bullseye"])] == ["bullseye", "sid"]


# -- running in a peer -------------------------------------------------------------------------


def test_commands_and_workspaces(tmp_path):
    (tmp_path / "chroot").mkdir()
    root = peers.PeerRoot(peers.PEERS["bookworm"], tmp_path / "chroot", {"qemu_version": "7.2.22"})
    assert root.command("qemu-img", "check", Path("/work/x/a.qcow2")) == [
        "chroot",
        str(tmp_path / "chroot"),
        "qemu-img",
        "check",
        "/work/x/a.qcow2",
    ]
    assert root.version_tuple == (7, 2, 22)
    with root.workspace("writer/op a") as ws:
        assert ws.host.parent == tmp_path / "chroot" / "work"
        assert ws.host.name.startswith("writer_op_a-")
        assert ws.inside(ws.host / "img.qcow2") == f"/work/{ws.host.name}/img.qcow2"
        kept = ws.host
    assert not kept.exists()
    with root.workspace("keep", keep=lambda: True) as ws:
        pass
    assert ws.host.exists()


# -- the stage, the CLI and the suite --------------------------------------------------------------


def test_stage_prints_the_table(layout, monkeypatch, capsys):
    root = peers.PeerRoot(
        peers.PEERS["sid"],
        Path("/c/sid-x"),
        {"qemu_version": "11.1.3", "packages": {"qemu-utils": "1:11.1.3"}},
    )
    seen = {}

    def fake(names, lay, log, **kw):
        seen.update(names=names, **kw)
        return [peers.Prepared(root, False, 0.01)]

    monkeypatch.setattr(peers, "ensure_all", fake)
    outcome = peers.stage(Context(layout=layout),
                          peers.PeersRequest(only_peer=["sid"], rebuild=True), None)
    assert seen == {"names": ["sid"], "rebuild": True}
    assert outcome.summary == "1 peer(s): sid 11.1.3 (cached 0.0s)"
    assert "sid   11.1.3  1:11.1.3  cached" in outcome.text and "/c/sid-x" in outcome.text


def test_cli_peers_options():
    sys.path.insert(0, str(ROOT))
    import build

    args = build.parser().parse_args(["peers", "--only", "sid", "--only", "bullseye", "--rebuild"])
    assert args.only_peer == ["sid", "bullseye"] and args.rebuild
    with pytest.raises(SystemExit):
        build.parser().parse_args(["peers", "--only", "buster"])


def test_peers_suite_runs_in_parallel_and_writes_peers_json(layout):
    layout.venv_bin("python3").parent.mkdir(parents=True)
    layout.venv_bin("python3").touch()
    argv = testrun.pytest_argv(layout, testrun.SUITES["peers"])
    assert "tests/peers" in argv
    assert argv[argv.index("-n") + 1] == "auto"
    assert f"--results-dir={layout.results / 'peers'}" in argv
    assert f"--matrix-json={layout.results / 'peers.json'}" in argv


def test_config_installs_what_the_peers_need():
    from harness.core.config import APT_PACKAGES, PIP_PACKAGES

    assert "mmdebstrap" in APT_PACKAGES and "pytest-xdist" in PIP_PACKAGES


# -- the report ---------------------------------------------------------------------------------


def test_report_renders_the_matrix_per_writer():
    from harness.stages import report

    cell = {"kind": "matrix", "writer": "patched", "writer_version": "10.0.13",
            "identity": "record32 (written by the build)", "peer_version": "5.2.0"}  # fmt: skip
    data = {
        "peers": {"bullseye": {"qemu": "5.2.0"}, "sid": {"qemu": "11.1.3"}},
        "ops": [{"name": "check-leaks"}, {"name": "snapshot-apply"}, {"name": "resize"}],
        "cells": [
            {**cell, "peer": "bullseye", "op": "check-leaks", "status": "lost",
             "problems": ["4 of 4 snapshots gone: s1, s2, s3, s4", "current snapshot: stale"],
             "known_loss": "known upstream bug (every QEMU up to 5.2.0): check mode ..."},
            {**cell, "peer": "sid", "op": "check-leaks", "status": "ok", "current": "right"},
            {**cell, "peer": "sid", "op": "snapshot-apply", "status": "ok", "current": "wrong"},
            {**cell, "peer": "bullseye", "op": "snapshot-apply", "status": "error",
             "problems": ["bullseye (QEMU 5.2.0): exit 1"]},
            {**cell, "peer": "sid", "op": "new-reads", "kind": "old-image", "status": "ok"},
        ],
    }  # fmt: skip
    rows = report._peers_rows(data)
    assert rows[0] == "**writer patched** (QEMU 10.0.13, identity record32 (written by the build))"
    assert "| op | bullseye (5.2.0) | sid (11.1.3) |" in rows
    assert "| check-leaks | **LOST** 4 of 4 snapshots gone +1 (known bug) | ok |" in rows
    assert (
        "| snapshot-apply | ERROR bullseye (QEMU 5.2.0): exit 1 | ok, current wrong "
        "(undetectable) |"
    ) in rows
    assert "| new-reads | - | ok |" in rows
    assert not any(r.startswith("| resize") for r in rows), "an op nobody ran"
    assert rows[-1] == "- known upstream bug (every peer): check mode ..."

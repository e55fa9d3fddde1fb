"""The reliability suite's library on synthetic data (no QEMU): the dm-log-writes parser,
the crash-state generator and its bound, the replay of a state, the invariants, check's
classification, blkdebug rule files, the known-bug matching and the report's table."""

from __future__ import annotations

import json
import struct
import uuid as uuidlib

import pytest

from harness.stages import report
from rig.reliability import blkdebug, dmlog, known
from rig.reliability import crashstates as cs
from rig.reliability.invariants import (
    Change,
    CheckOutcome,
    ImageView,
    Observed,
    OpKind,
    Snap,
    committed,
    verify,
)
from rig.reliability.observe import Result, classify_check

S = 512


def sec(byte: int, n: int = 1) -> bytes:
    return bytes([byte]) * (S * n)


# -- dmlog ---------------------------------------------------------------------------------


def test_parse_roundtrip_of_every_kind():
    raw = dmlog.build([
        dmlog.Op("write", 0, sec(1)),
        dmlog.Op("write", 4 * S, sec(2, 3), fua=True),
        dmlog.Op("flush"),
        dmlog.Op("discard", 8 * S, length=2 * S),
        dmlog.Op("mark", data=b"mkfs"),
        dmlog.Op("write", S, sec(3), preflush=True),
    ])
    log = dmlog.parse(raw)
    assert log.sectorsize == S
    kinds = [e.kind for e in log.entries]
    assert kinds == ["write", "write+fua", "flush", "discard", "mark", "write+flush"]
    assert log.entries[1].offset == 4 * S and log.entries[1].data == sec(2, 3)
    assert log.entries[3].length == 2 * S and log.entries[3].data == b""
    assert log.entries[4].data == b"mkfs"
    assert log.counts() == {"writes": 3, "flushes": 2, "fua": 1, "discards": 1, "marks": 1}


def test_parse_layout_is_blklogwrites():
    """Super block, then per entry one sector {sector, nr_sectors, flags, data_len} and
    the data (block/blklogwrites.c): check the bytes, not only the round trip."""
    raw = dmlog.build([dmlog.Op("write", 2 * S, sec(7)), dmlog.Op("flush")])
    assert struct.unpack_from("<QQQI", raw, 0) == (dmlog.MAGIC, 1, 2, S)
    assert struct.unpack_from("<QQQQ", raw, S) == (2, 1, 0, 0)
    assert raw[2 * S : 3 * S] == sec(7)
    assert struct.unpack_from("<QQQQ", raw, 3 * S) == (0, 0, dmlog.FLUSH, 0)
    assert len(raw) == 4 * S


@pytest.mark.parametrize("mutate,message", [
    (lambda r: b"\0" * 8 + r[8:], "bad magic"),
    (lambda r: r[:8] + struct.pack("<Q", 2) + r[16:], "version"),
    (lambda r: r[: S + 2 * S - 10], "announced"),
    (lambda r: r[:S] + struct.pack("<QQQQ", 0, 1, 64, 0) + r[S + 32 :], "unknown flags"),
    (lambda r: r[:10], "super block"),
])
def test_parse_refuses_what_is_not_a_log(mutate, message):
    raw = dmlog.build([dmlog.Op("write", 0, sec(1)), dmlog.Op("flush")])
    with pytest.raises(dmlog.LogError, match=message):
        dmlog.parse(mutate(raw))


# -- crash states ----------------------------------------------------------------------------


def _log(*ops):
    return dmlog.parse(dmlog.build(ops))


def test_epochs_split_at_flushes_and_fua_is_durable():
    log = _log(dmlog.Op("write", 0, sec(1)), dmlog.Op("write", S, sec(2), fua=True),
               dmlog.Op("flush"), dmlog.Op("discard", 0, length=S),
               dmlog.Op("write", S, sec(3), preflush=True))
    eps = cs.epochs(log)
    assert [e.volatile for e in eps] == [(0,), (3,), (4,)]
    assert [(e.start, e.end) for e in eps] == [(0, 2), (2, 4), (4, 5)]


def test_small_epochs_are_explored_exhaustively():
    log = _log(*[dmlog.Op("write", i * S, sec(i + 1)) for i in range(3)], dmlog.Op("flush"),
               dmlog.Op("write", 0, sec(9)))
    states = list(cs.states(log, cs.Bound(torn=False)))
    reorders = {st.omitted for st in states if st.kind == "reorder" and st.boundary == 3}
    assert reorders == {frozenset(s) for s in
                        ({0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2})}
    prefixes = [st.boundary for st in states if st.kind == "prefix"]
    assert prefixes == [0, 1, 2, 3, 5]
    keys = [(st.boundary, st.omitted, st.torn) for st in states]
    assert len(keys) == len(set(keys))


def test_large_epochs_are_bounded():
    n = 12
    log = _log(*[dmlog.Op("write", i * S, sec(i + 1)) for i in range(n)], dmlog.Op("flush"))
    bound = cs.Bound(exhaustive_upto=8, max_omitted_end=2, max_omitted_inside=1, torn=False)
    states = list(cs.states(log, bound))
    end = [st for st in states if st.kind == "reorder" and st.boundary == n]
    assert max(len(st.omitted) for st in end) == 2
    assert len(end) == n + n * (n - 1) // 2
    inside = [st for st in states if st.kind == "reorder" and st.boundary < n]
    assert inside and all(len(st.omitted) == 1 and max(st.omitted) < st.boundary - 1
                          for st in inside)
    assert len(states) < 2 ** n / 10  # O(n^2), not 2^n


def test_torn_writes_keep_whole_sectors():
    log = _log(dmlog.Op("write", 0, sec(1, 4)))
    torn = [st.torn for st in cs.states(log) if st.kind == "torn"]
    assert torn == [(0, S), (0, 3 * S)]


def test_image_bytes_applies_in_order_omits_and_tears():
    base = sec(0xAA, 2)
    log = _log(dmlog.Op("write", 0, sec(1, 2)), dmlog.Op("write", S, sec(2)),
               dmlog.Op("discard", 0, length=S), dmlog.Op("write", 3 * S, sec(4)))
    full = cs.image_bytes(base, log, cs.CrashState(4))
    assert full == bytes(S) + sec(2) + bytes(S) + sec(4)  # grown, discard reads zeroes
    assert cs.image_bytes(base, log, cs.CrashState(2, frozenset({1}))) == sec(1, 2)
    assert cs.image_bytes(base, log, cs.CrashState(1, torn=(0, S))) == sec(1) + sec(0xAA)
    assert cs.image_bytes(base, log, cs.CrashState(0)) == base


# -- invariants ---------------------------------------------------------------------------------


U = [uuidlib.UUID(int=i + 1, version=4) for i in range(6)]


def _before() -> ImageView:
    return ImageView((Snap("1", "s1", U[0], None, "d1"), Snap("2", "s2", U[1], U[0], "d2"),
                      Snap("3", "s3", U[2], U[1], "d3")), "active", "valid", U[2])


def _obs(snaps, active="active", record="valid", current=U[2], **kw) -> Observed:
    ok = CheckOutcome(0)
    return Observed(ImageView(tuple(snaps), active, record, current),
                    opens={"patched": None, "qemu-img 7.2": None},
                    checks={"patched": ok, "qemu-img 7.2": ok},
                    listed={"patched": [s.name for s in snaps]}, **kw)


def test_untouched_image_passes_every_change():
    b = _before()
    for change in (Change(OpKind.CREATE, "new"), Change(OpKind.APPLY, "s1"),
                   Change(OpKind.DELETE, "s2"), Change(OpKind.CHECK)):
        assert verify(b, change, _obs(b.snapshots)) == []


def test_create_committed_and_complete():
    b = _before()
    new = Snap("4", "new", U[3], U[2], "active")
    assert verify(b, Change(OpKind.CREATE, "new"),
                  _obs(b.snapshots + (new,), current=U[3]), final=True, reported=0) == []
    bad = Snap("4", "new", U[0], U[0], "other")
    problems = verify(b, Change(OpKind.CREATE, "new"), _obs(b.snapshots + (bad,),
                                                             current=U[2]))
    text = "\n".join(problems)
    assert "reuses UUID" in text and "parent" in text and "active data" in text
    assert "duplicate UUIDs" in text


def test_record_rules():
    b = _before()
    new = Snap("4", "new", U[3], U[2], "active")
    # committed create, record rewritten for the new table but naming the old current
    assert any("current snapshot" in p for p in verify(
        b, Change(OpKind.CREATE, "new"), _obs(b.snapshots + (new,), current=U[2])))
    # stale / absent / malformed: detected invalid, fine before the end
    for rec in ("stale", "absent", "malformed", "none"):
        assert verify(b, Change(OpKind.CREATE, "new"),
                      _obs(b.snapshots + (new,), record=rec, current=None)) == []
    # ... but not once the operation completed
    assert any("after the complete operation" in p for p in verify(
        b, Change(OpKind.CREATE, "new"), _obs(b.snapshots + (new,), record="stale",
                                               current=None), final=True))
    # a matching pointer with an unknown UUID never
    assert any("not in the table" in p for p in verify(
        b, Change(OpKind.CHECK), _obs(b.snapshots, record="unknown", current=None)))
    # apply: the old record may survive the L1 switch (documented window), not precede it
    applied = _obs(b.snapshots, active="d1", current=U[2])
    assert verify(b, Change(OpKind.APPLY, "s1"), applied) == []
    early = _obs(b.snapshots, active="active", current=U[0])
    assert any("current snapshot" in p for p in verify(b, Change(OpKind.APPLY, "s1"), early))


def test_delete_reparents_and_moves_current():
    b = _before()
    after = (b.snapshots[0], Snap("3", "s3", U[2], U[0], "d3"))
    assert verify(b, Change(OpKind.DELETE, "s2"), _obs(after), final=True, reported=0) == []
    dangling = (b.snapshots[0], b.snapshots[2])
    assert any("parent" in p for p in verify(b, Change(OpKind.DELETE, "s2"), _obs(dangling)))
    # without the series the parent may stay dangling (identity=False: safety rules only)
    assert verify(b, Change(OpKind.DELETE, "s2"), _obs(dangling), identity=False) == []
    # deleting the current one: its parent becomes current
    gone = b.snapshots[:2]
    assert verify(b, Change(OpKind.DELETE, "s3"), _obs(gone, current=U[1]), final=True) == []
    assert any("current" in p for p in verify(b, Change(OpKind.DELETE, "s3"),
                                              _obs(gone, current=U[0])))


def test_lost_or_changed_snapshots_and_active_data():
    b = _before()
    problems = verify(b, Change(OpKind.CREATE, "new"),
                      _obs((b.snapshots[0], Snap("2", "s2", U[4], U[0], "x")), active="y"))
    text = "\n".join(problems)
    assert "s3" in text and "is gone" in text and "UUID" in text and "data changed" in text
    assert "active layer" in text


def test_reported_exit_code_against_commit():
    b = _before()
    new = Snap("4", "new", U[3], U[2], "active")
    done = _obs(b.snapshots + (new,), current=U[3])
    assert committed(b, Change(OpKind.CREATE, "new"), done.view)
    assert any("reported failure" in p for p in verify(b, Change(OpKind.CREATE, "new"), done,
                                                       reported=1))
    assert any("reported success" in p for p in verify(b, Change(OpKind.CREATE, "new"),
                                                       _obs(b.snapshots), reported=0))


def test_checks_opens_hangs_and_probe():
    b = _before()
    obs = _obs(b.snapshots)
    obs.opens["qemu-img 7.2"] = "Could not open"
    obs.checks["patched"] = CheckOutcome(2, "x", ["ERROR cluster 5 refcount=1 reference=2"])
    obs.checks["qemu-img 7.2"] = CheckOutcome(2, "x", [], harmless=3)  # flag mismatches only
    obs.hangs.append("timed out after 30s: qemu-img check")
    obs.probe_errors.append("snapshot s1 changed when the guest wrote to the disk")
    text = "\n".join(verify(b, Change(OpKind.CHECK), obs))
    assert "7.2 cannot open" in text and "patched check: exit 2" in text
    assert "qemu-img 7.2 check" not in text
    assert "hang or crash" in text and "data at risk" in text
    obs2 = _obs(b.snapshots)
    obs2.listed["patched"] = ["s1"]
    assert any("lists" in p for p in verify(b, Change(OpKind.CHECK), obs2))


def test_classify_check_tells_shared_from_leaked():
    out = "\n".join([
        "Leaked cluster 60 refcount=2 reference=1",
        "ERROR OFLAG_COPIED data cluster: l2_entry=80000000003c0000 refcount=2",  # leaked
        "ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000000040000 refcount=2",
        "ERROR OFLAG_COPIED data cluster: l2_entry=2a0000 refcount=1",  # flag clear
        "ERROR cluster 7 refcount=1 reference=2",
    ])
    danger, harmless = classify_check(out, 65536)
    assert harmless == 2
    assert danger == ["ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000000040000 "
                      "refcount=2", "ERROR cluster 7 refcount=1 reference=2"]


# Bugs of the shape known.py holds, for the classification tests (the real list changes as
# bugs get fixed)
FAKE_KNOWN = (
    known.KnownBug("REL-A", "stale COPIED flags", "upstream",
                   ("crash:snapshot-a", "faults:snapshot-a"),
                   r"changed when the guest wrote", "rel-a.sh"),
    known.KnownBug("REL-B", "check -r leaks the table", "upstream", ("fuzz",),
                   r"LeakSanitizer.* in qcow2_check_read_snapshot_table", "rel-b.sh"),
)


def test_result_crash_detection(monkeypatch):
    monkeypatch.setattr(known, "KNOWN", FAKE_KNOWN)
    assert Result(["qemu-img"], 1).crash is None
    assert "signal 6" in Result(["qemu-img"], -6).crash
    assert "timed out" in Result(["qemu-img"], None, seconds=20).crash
    r = Result(["qemu-img"], 1, stderr="x.c:3:5: runtime error: shift exponent 64\n")
    assert "sanitizer" in r.crash and "runtime error" in r.crash_text("info")
    leak = Result(["qemu-img", "check"], 1, stderr="""\
==1==ERROR: LeakSanitizer: detected memory leaks
Direct leak of 120 byte(s) in 1 object(s) allocated from:
    #0 0x7f29 in __interceptor_calloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:77
    #1 0x7f29 in g_malloc0 (/lib/x86_64-linux-gnu/libglib-2.0.so.0+0x5a6b0)
    #2 0x55d2 in qcow2_check_read_snapshot_table ../qemu/block/qcow2-snapshot.c:704
SUMMARY: AddressSanitizer: 122 byte(s) leaked in 3 allocation(s).
""")
    text = leak.crash_text("check -r all")
    assert " in qcow2_check_read_snapshot_table " in text
    assert known.classify("fuzz", [text]) == {"REL-B"}


# -- blkdebug, known bugs, report -----------------------------------------------------------------


def test_blkdebug_rules_count_then_fail_once():
    text = blkdebug.rules(blkdebug.Fault("write", 3, 28))
    assert text.count("[set-state]") == 4 and text.count("[inject-error]") == 2
    assert 'event = "pwritev_zero"' in text and 'iotype = "write-zeroes"' in text
    assert 'state = "3"\nerrno = "28"\nonce = "on"\nimmediately = "on"' in text
    ev = blkdebug.rules(blkdebug.Fault("event", 1, 5, "l1_update"))
    assert "[set-state]" not in ev and "iotype" not in ev and 'event = "l1_update"' in ev
    assert blkdebug.Fault("flush", 2, 5).label() == "EIO at flush #2"


def test_known_bugs_classify_only_when_every_problem_is_known(monkeypatch):
    assert len({b.id for b in known.KNOWN}) == len(known.KNOWN)
    monkeypatch.setattr(known, "KNOWN", FAKE_KNOWN)
    p = "crash before #5: data at risk: snapshot s1 changed when the guest wrote to the disk"
    assert known.classify("crash:snapshot-a", [p]) == {"REL-A"}
    assert known.classify("crash:snapshot-c", [p]) is None
    assert known.classify("crash:snapshot-a", [p, "snapshot s2 is gone"]) is None
    assert [b.id for b in known.expected("faults:snapshot-a")] == ["REL-A"]


def test_every_known_bug_has_a_reproducer_and_a_write_up():
    from pathlib import Path
    suite = Path(__file__).resolve().parents[1] / "reliability"
    bugs = suite / "bugs"
    text = (bugs / "BUGS.md").read_text()
    for b in known.KNOWN:
        assert (bugs / b.reproducer).is_file(), b.reproducer
        assert f"## {b.id}:" in text, b.id
    for f in known.FIXED:
        assert (bugs / f.reproducer).is_file(), f.reproducer
        assert f"## {f.id}:" in text, f.id
    listed = {b.reproducer for b in known.KNOWN} | set(known.reproducers())
    assert {p.name for p in bugs.glob("rel-*.sh")} == listed  # every reproducer is run
    scripts = " ".join(p.read_text() for p in bugs.glob("rel-*.sh"))
    for helper in bugs.glob("*.sh"):  # and every helper is used by one
        assert helper.name.startswith("rel-") or helper.name in scripts, helper.name
    assert not {b.id for b in known.KNOWN} & {f.id for f in known.FIXED}
    regressions = suite / "regressions"
    for meta in regressions.glob("*.json"):
        data = json.loads(meta.read_text())
        assert (regressions / data["image"]).is_file()
        assert data["bug"] is None or data["bug"] in {b.id for b in known.KNOWN}
        assert data.get("fixed") in {None} | {b.id for b in (*known.KNOWN, *known.FIXED)}


def test_stock_failures_that_are_fixed_upstream_bugs_are_named():
    """The full run's stock failures, as the suite words them, classify as the fixed bugs;
    one problem that is not a fixed bug keeps the whole test a failure."""
    crash = ("EIO at write #19 (exit -6): the operation crashed: QEMU killed by signal 6: "
             "qemu-system-x86_64: ../block.c:5238: bdrv_close_all: Assertion "
             "`QTAILQ_EMPTY(&all_bdrv_states)' failed.")
    silent = "EIO at write #19 (exit -6): reported success but did not take effect"
    assert known.classify_fixed("faults:hmp-savevm", [crash, silent]) == {"REL-7", "REL-8"}
    late = "EIO at write #13 (exit 1): reported failure (exit 1) after it took effect"
    assert known.classify_fixed("faults:qmp-snapshot-delete", [late]) == {"REL-3"}
    copied = ("EIO at write #4 (exit 1): data at risk: snapshot vm0 changed when the guest "
              "wrote to the disk (a cluster shared with it was written in place)")
    assert known.classify_fixed("faults:hmp-loadvm", [copied]) == {"REL-1"}
    assert known.classify_fixed("faults:hmp-loadvm", [copied, "snapshot s2 is gone"]) is None
    assert known.classify_fixed("faults:snapshot-c", [late]) is None  # not where it shows


def test_report_renders_each_part(tmp_path):
    data = {"mode": {"name": "smoke", "seed": 13, "fault_errnos": [5]},
            "crash": {"patched/64k/snapshot-c": {
                "build": "patched", "cluster_size": 65536, "path": "snapshot-c",
                "log": {"writes": 12, "flushes": 8}, "states": 48, "distinct_images": 16,
                "harmless_inconsistent": 13, "check_exit2_harmless": 3, "failed_states": 0,
                "known_bugs": [],
                "bound": "b"},
                "patched/64k/qmp-snapshot-save": {
                "build": "patched", "cluster_size": 65536, "path": "qmp-snapshot-save",
                "log": {"writes": 38, "flushes": 14}, "states": 484, "distinct_images": 30,
                "failed_states": 0, "known_bugs": [], "bound": "b",
                "loadvm": {"states": 30, "loaded": 12, "new_snapshot": 2, "previous": 10,
                           "failed_runs": 0}},
                "patched/64k/hmp-delvm-2disks": {
                "build": "patched", "cluster_size": 65536, "path": "hmp-delvm-2disks",
                "log": {"disk0": {"writes": 7, "flushes": 7}, "disk1": {"writes": 7,
                                                                        "flushes": 7}},
                "states": 60, "distinct_images": 26, "failed_states": 0, "known_bugs": [],
                "bound": "b",
                "pairs": {"distinct_per_disk": [13, 13], "pairs": 9, "failed_pairs": 0,
                          "by_class": {"listed+listed": 2, "absent+absent": 3}}}},
            "faults": {"patched/snapshot-a": {"build": "patched", "path": "snapshot-a",
                                              "writes": 6, "flushes": 7, "runs": 15,
                                              "op_failed": 5, "failed_runs": 2,
                                              "known_bugs": ["REL-1"]},
                       "patched/hmp-savevm-2disks": {"build": "patched", "fault_on": "disk1",
                                                     "path": "hmp-savevm-2disks", "writes": 13,
                                                     "flushes": 8, "runs": 23, "op_failed": 11,
                                                     "failed_runs": 0, "known_bugs": []}},
            "kill": {"k": {"runs": 4, "snapshot_complete": 2, "snapshot_absent": 2,
                           "failed_runs": 0}},
            "fuzz": {"f": {"build": "patched", "examples": 40, "executions": 280,
                           "seconds": 30, "exec_per_second": 9.3,
                           "known_bug_hits": {"REL-4": 1}, "failure": None}},
            "bugs": [{"id": "REL-1", "origin": "upstream", "title": "t"}],
            "fixed_bugs": [{"id": "REL-6", "fixed_by": "qcow2: Free the state"}]}
    text = "\n".join(report._reliability_rows(json.loads(json.dumps(data))))
    assert "| patched | 64k | snapshot-c | 12 / 8 | 48 | 16 | 13 (3) | 0 | - |" in text
    assert "| qmp-snapshot-save | 30 | 12 | 2 | 10 | 0 |" in text
    assert "| patched | snapshot-a | 6 / 7 | 15 | 5 | 2 | REL-1 |" in text
    assert "| 4 | 2 | 2 | 0 | - |" in text and "REL-4 x1" in text
    assert "**REL-1** (upstream, open): t" in text
    assert "| patched | 64k | hmp-delvm-2disks | disk0 7 / 7, disk1 7 / 7 | 60 | 26 |" in text
    assert "| hmp-delvm-2disks | 13, 13 | 9 | listed+listed 2, absent+absent 3 | 0 |" in text
    assert "| patched | hmp-savevm-2disks | 13 / 8 (on disk1) | 23 | 11 | 0 | - |" in text
    assert "**REL-6**: fixed by `qcow2: Free the state`" in text


# -- the VM paths (lib/vmops.py, invariants.runstate) -------------------------------------


def test_runstate_after_a_vm_operation():
    from rig.reliability.invariants import runstate
    save, load = Change(OpKind.CREATE, "vm1"), Change(OpKind.APPLY, "vm0")
    assert runstate(save, 0, "running") == []
    assert runstate(save, 1, "running") == []
    assert "restore-vm" in runstate(save, 1, "restore-vm")[0]  # a failed save resumes
    assert runstate(load, 1, "restore-vm", resumed="running") == []  # 10.2.2: stopped
    assert "cont did not resume it (paused)" in runstate(load, 1, "restore-vm",
                                                         resumed="paused")[0]
    assert runstate(load, 0, "restore-vm")  # a load that succeeded must resume
    assert runstate(save, 0, None) == ["QEMU did not answer query-status after the operation"]
    assert runstate(load, 0, "running", "prep", "prep") == []
    assert "guest RAM holds load" in runstate(load, 0, "running", "load", "prep")[0]
    assert runstate(load, 1, "running", None, "prep") == []  # failed: RAM is undefined


def test_hmp_failure_is_an_error_line_not_a_warning():
    from rig.reliability.vmops import hmp_failed
    assert hmp_failed("Error: Could not create snapshot 'vm1' on 'disk0'")
    assert hmp_failed("failed to save SaveStateEntry with id(name): 1(ram): -5\r\n"
                      "Error: Error while writing VM state: Input/output error")
    assert not hmp_failed("warning: Failed to record the current snapshot of 'x': "
                          "Input/output error")
    assert not hmp_failed("")


def test_vm_paths_are_the_six_operations():
    from rig.reliability.scenario import VM_PATHS
    kinds = {p.name: (p.change.kind, p.prep) for p in VM_PATHS}
    assert kinds == {
        "hmp-savevm": (OpKind.CREATE, "vm-snapshot"),
        "hmp-loadvm": (OpKind.APPLY, "vm-snapshot"),
        "hmp-delvm": (OpKind.DELETE, None),
        "qmp-snapshot-save": (OpKind.CREATE, "vm-snapshot"),
        "qmp-snapshot-load": (OpKind.APPLY, "vm-snapshot"),
        "qmp-snapshot-delete": (OpKind.DELETE, None)}
    for p in VM_PATHS:  # every job names the disk, and every step is HMP or a job
        for step in p.vm:
            assert step[0] in ("hmp", "job")
            if step[0] == "job":
                assert step[2]["devices"] == ["disk0"]


def test_stub_bios_halts_at_the_reset_vector(tmp_path):
    from rig.reliability import vmops
    rom = vmops.stub_bios(tmp_path).read_bytes()
    assert len(rom) == 65536
    assert rom[0xFFF0:0xFFF3] == b"\xf4\xeb\xfd"  # hlt; jmp back to the hlt
    vm = vmops.vm_for("qemu-system-x86_64", "driver=qcow2,node-name=disk0", tmp_path, "op")
    argv = vm.argv(tmp_path / "q.sock")
    assert "-S" not in argv and argv[argv.index("-bios") + 1] == str(tmp_path / "hlt-bios.bin")
    assert argv[argv.index("-m") + 1] == "16"
    assert argv[argv.index("-blockdev") + 1] == "driver=qcow2,node-name=disk0"


def test_ram_fills_differ_per_role_and_are_recognised(tmp_path):
    from rig.reliability import vmops
    fills = {r: vmops.fill(tmp_path, r).read_bytes() for r in vmops.SEEDS}
    assert len(set(fills.values())) == 3 and all(len(f) == 256 << 10 for f in fills.values())
    for role, data in fills.items():
        assert vmops.ram_owner(data, tmp_path) == role
    assert vmops.ram_owner(bytes(256 << 10), tmp_path) is None


def test_pick_states_balances_listed_and_absent():
    from rig.reliability.vmops import pick_states
    st = cs.CrashState(0)
    distinct = [(st, ["s1", "vm0"], False)] * 10 + [(st, ["s1", "vm0", "vm1"], False)] * 3 \
        + [(st, None, True)]
    assert pick_states(distinct, None, 1, "vm1") == list(range(14))
    picked = pick_states(distinct, 6, 1, "vm1")
    assert len(picked) == 6 and picked == sorted(picked)
    assert sum(10 <= i <= 12 for i in picked) == 3  # the new snapshot's half
    again = pick_states(distinct, 8, 1, "vm1")  # only 3 list vm1: the rest from the others
    assert len(again) == 8 and sum(10 <= i <= 12 for i in again) == 3
    assert pick_states(distinct, 6, 1, "vm1") == picked  # seeded


def test_sample_keys_is_seeded_and_bounded():
    from rig.reliability.explore import sample_keys
    keys = ["a", "b", "a", "c", "d", "e"]
    assert sample_keys(keys, 10, 3) == {"a", "b", "c", "d", "e"}
    picked = sample_keys(keys, 2, 3)
    assert len(picked) == 2 and picked <= set(keys) and picked == sample_keys(keys, 2, 3)


def test_fault_control_is_past_the_last_request():
    from rig.reliability.faults import is_control, plan
    faults = plan(3, 2, (5,), False)
    assert [f.label() for f in faults if is_control(f, 3, 2)] == ["EIO at write #4",
                                                                  "EIO at flush #3"]
    assert len(faults) == 3 + 1 + 2 + 1


def test_vm_state_size_of_an_old_snapshot_must_not_change():
    b = _before()
    vm0 = Snap("4", "vm0", U[3], U[2], "d4", 1000)
    before = ImageView(b.snapshots + (vm0,), "active", "valid", U[3])
    same = verify(before, Change(OpKind.CREATE, "x"), _obs(before.snapshots, current=U[3]))
    assert same == []
    lost = Snap("4", "vm0", U[3], U[2], "d4", 0)
    problems = verify(before, Change(OpKind.CREATE, "x"),
                      _obs(b.snapshots + (lost,), current=U[3]))
    assert problems == ["snapshot vm0: VM state size 0, was 1000"]


def test_pick_pairs_covers_the_L_and_every_class():
    """Two disks: the pairs a sequential operation can leave (every state of disk0 with
    disk1 untouched, disk0's final state with every state of disk1), then per class pair
    (the target listed or not on each disk) per_class more, drawn reproducibly; states
    that are unreadable or broke an invariant are left out."""
    from rig.reliability.explore import Replay
    from rig.reliability.vmops import pick_pairs

    def replay(listed_flags, final):
        rep = Replay(b"", dmlog.Log(512, ()))
        rep.distinct = [(cs.CrashState(i), ["s1", "vm1"] if f else ["s1"], False)
                        for i, f in enumerate(listed_flags)]
        rep.distinct.append((cs.CrashState(99), None, False))  # unreadable: left out
        rep.distinct.append((cs.CrashState(98), ["s1"], True))  # failed: left out
        rep.final = cs.CrashState(final)
        return rep

    st = cs.CrashState
    reps = [replay([False, False, True, True, True], 4), replay([False, True, True], 2)]
    pairs = pick_pairs(reps, "vm1", 1, seed=5)
    assert pairs == pick_pairs(reps, "vm1", 1, seed=5)
    ell = [(st(i), st(0)) for i in range(5)] + [(st(4), st(1)), (st(4), st(2))]
    assert pairs[:len(ell)] == ell
    rest = pairs[len(ell):]
    # off the L: one more of each class that still has pairs left
    classes = {(a.boundary >= 2, b.boundary >= 1) for a, b in rest}
    assert classes == {(True, True), (False, True)} and len(rest) == 2
    assert not any(p.boundary in (98, 99) for pair in pairs for p in pair)
    assert len(pick_pairs(reps, "vm1", None, seed=5)) == 5 * 3

"""The libvirt suite without libvirt: trees and their differences, the readers of virsh's
output and of libvirtd's logs (recorded from libvirt 9.0 and 11.3 driving the patched build),
the domain XML, the daemon's namespace plan, and the harness side (chroot, stage, suite)."""

from __future__ import annotations

import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import stages
from harness.core.config import APT_PACKAGES, Layout
from harness.core.errors import EnvironmentProblem
from harness.core.pipeline import Context
from harness.stages import libvirt as hlibvirt
from harness.stages import peers, report, testrun
from rig import qcow2
from rig.libvirt import daemon, lineage, nsinit, scenario, summary, virsh
from rig.libvirt.domain import DomainSpec, domain_xml
from rig.libvirt.lineage import Model, Tree

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name("data") / "libvirt"

# -- trees ----------------------------------------------------------------------------------


def test_model_follows_libvirt_and_the_spec():
    m = Model()
    for name in ("s1", "s2"):
        m.create(name)
    m.revert("s1")
    m.create("s3")
    m.create("s4")
    assert m.tree() == Tree({"s1": None, "s2": "s1", "s3": "s1", "s4": "s3"}, "s4")
    m.delete("s3")  # inner, not current: its child moves up
    assert m.parents == {"s1": None, "s2": "s1", "s4": "s1"} and m.current == "s4"
    m.delete("s4")  # current leaf: its parent becomes current
    assert m.current == "s1"
    m.delete("s1")  # current root with a child: the child is a root, no current
    assert m.tree() == Tree({"s2": None}, None)
    with pytest.raises(ValueError):
        m.revert("s1")
    with pytest.raises(ValueError):
        m.create("s2")


def test_the_scenario_covers_every_kind_of_delete():
    trees = scenario.expected()
    assert len(trees) == len(scenario.STEPS)
    by_label = {s.label: (s, t) for s, t in zip(scenario.STEPS, trees, strict=True)}
    before = dict(zip([s.label for s in scenario.STEPS], [Tree({}, None), *trees[:-1]],
                      strict=True))
    kinds = set()
    for label in by_label:
        step, _ = by_label[label]
        if step.op != "delete":
            continue
        prior = before[label]
        children = prior.children(step.name)
        kinds.add(("current" if prior.current == step.name else "other",
                   "root" if prior.parents[step.name] is None else "nonroot",
                   "inner" if children else "leaf"))
    assert ("other", "nonroot", "inner") in kinds  # s3
    assert ("current", "nonroot", "leaf") in kinds  # s6
    assert ("current", "nonroot", "inner") in kinds  # s5
    assert ("other", "root", "inner") in kinds  # s1
    assert ("other", "nonroot", "leaf") in kinds  # s4
    assert len([s for s in scenario.STEPS if s.op == "create"]) >= 6
    assert trees[-1] == Tree({"s2": None, "s7": "s2", "s8": None, "s9": "s8"}, "s9")
    assert [s.op for s in scenario.STEPS].count("restart") == 1


def test_bad_steps_are_refused():
    with pytest.raises(ValueError):
        scenario.expected((scenario.Step("restart", "s1", "x"),))
    with pytest.raises(ValueError):
        scenario.expected((scenario.Step("rename", "s1", "x"),))


def test_compare_names_each_difference_and_who_is_wrong():
    want = Tree({"s1": None, "s4": "s1"}, "s4")
    assert lineage.compare(want, want, want) == []
    image = Tree({"s1": None, "s4": "s3"}, "s4")  # did not reparent
    libvirt = Tree({"s1": None, "s4": "s1", "s9": "s1"}, "s1")
    assert lineage.compare(image, libvirt, want) == [
        "s4: parent in the image s3, in libvirt s1; the scenario expects parent s1",
        "s9: in libvirt (parent s1) but not in the image; the scenario deleted it",
        "current: the image's is s4, libvirt's s1; the scenario expects s4",
    ]
    both = Tree({"s1": None, "s4": None}, None)
    assert lineage.compare(both, both, want) == [
        "s4: parent none (a root) in both the image and libvirt; the scenario expects "
        "parent s1",
        "current: none in both the image and libvirt; the scenario expects s4",
    ]
    assert lineage.compare(Tree({}, None), Tree({}, None), want)[0] == (
        "s1: in neither the image nor libvirt, but the scenario expects it (parent none "
        "(a root))")
    noted = Tree({"s1": None}, None, ("libvirt: snapshot-parent says ...",))
    assert lineage.compare(Tree({"s1": None}, None), noted) == [
        "libvirt: snapshot-parent says ..."]


def test_render_marks_the_current_and_survives_a_cycle():
    tree = Tree({"s1": None, "s2": "s1", "s3": "s1", "s4": "s3"}, "s4")
    assert tree.render() == "s1\n  s2\n  s3\n    s4 *"
    assert Tree({}, None).render() == "(no snapshots)\ncurrent: none"
    loop = Tree({"a": "b", "b": "a"}, None)
    assert "(cycle)" in loop.render()


def _snap(name: str, u: uuid.UUID | None, parent: uuid.UUID | None, idx: int) -> qcow2.Snapshot:
    extra = bytes(24)
    if u is not None:
        extra += u.bytes + (parent or qcow2.NIL).bytes
    return qcow2.Snapshot(idx * 128, str(idx), name, 0, len(extra), extra)


def _image(snaps, record=None, offset=0x10000) -> qcow2.Image:
    img = qcow2.Image(Path("x.qcow2"), 3, 16, 1 << 26, len(snaps), offset)
    img.snapshots = snaps
    if record is not None:
        img.extensions.append(qcow2.Extension(qcow2.EXT_CURRENT_SNAPSHOT, 0x68, record.pack()))
    return img


def test_from_image_maps_uuids_to_tags_and_reads_the_record():
    u1, u2, u3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    snaps = [_snap("s1", u1, None, 1), _snap("s2", u2, u1, 2), _snap("s3", u3, u1, 3)]
    rec = qcow2.CurrentRecord(u2, 0x10000, 3)
    tree = lineage.from_image(_image(snaps, rec))
    assert tree == Tree({"s1": None, "s2": "s1", "s3": "s1"}, "s2", ())
    stale = lineage.from_image(_image(snaps, qcow2.CurrentRecord(u2, 0x20000, 3)))
    assert stale.current is None
    assert stale.notes == ("image: current-snapshot record stale: written for table "
                           "0x20000/3, header has 0x10000/3",)
    assert lineage.from_image(_image([])).notes == ()  # a new image has no record: fine
    absent = lineage.from_image(_image(snaps))
    assert absent.current is None and absent.notes == (
        "image: current-snapshot record absent",)


def test_from_image_says_what_it_cannot_map():
    u1, lost = uuid.uuid4(), uuid.uuid4()
    snaps = [_snap("old", None, None, 1), _snap("s1", u1, lost, 2), _snap("s2", u1, None, 3)]
    tree = lineage.from_image(_image(snaps, qcow2.CurrentRecord(qcow2.NIL, 0x10000, 3)))
    assert tree.parents["s1"] == f"?{lost}" and tree.current is None
    assert tree.notes == (
        "image: no UUID on old",
        f"image: s2 and s1 share UUID {u1}",
        f"image: the parent of s1, {lost}, is in no snapshot",
    )


# -- virsh and the logs -------------------------------------------------------------------------

LIST_PARENT = """\
 Name   Creation Time               State     Parent
------------------------------------------------------
 s1     2026-12-03 08:04:58 +0000   running   
 s2     2026-12-03 08:04:58 +0000   running   s1
 s3     2026-12-03 08:05:01 +0000   running   s1
 s4     2026-12-03 08:05:02 +0000   running   s3
 s5     2026-12-03 08:05:06 +0000   running   s2
 s6     2026-12-03 08:05:08 +0000   running   s5

"""  # noqa: W291  (virsh 9.0 pads the empty Parent column)
TREE = """\
s1
  |
  +- s2
  |   |
  |   +- s5
  |       |
  |       +- s6
  |         
  +- s3
      |
      +- s4
        

"""  # noqa: W291, W293
WANT = {"s1": None, "s2": "s1", "s3": "s1", "s4": "s3", "s5": "s2", "s6": "s5"}


def test_snapshot_list_parent_and_tree_as_libvirt_9_and_11_print_them():
    assert virsh.parse_list_parent(LIST_PARENT) == WANT
    assert virsh.parse_tree(TREE) == WANT
    empty = " Name   Creation Time   State   Parent\n----------------------------------------\n\n"
    assert virsh.parse_list_parent(empty) == {}
    assert virsh.parse_tree("s2\n\ns4\n\n") == {"s2": None, "s4": None}
    quiet = " s1     2026-12-03 08:04:58 +0000   running   \n s2   2026-12-03 08:04:58 +0000" \
            "   running   s1\n"  # noqa: W291
    assert virsh.parse_list_parent(quiet) == {"s1": None, "s2": "s1"}


@pytest.mark.parametrize("bad", ["s1\n      +- s2\n", "s1\n   +- s2\n", "  s1\n"])
def test_a_tree_that_is_not_virsh_s_is_refused(bad):
    with pytest.raises(ValueError):
        virsh.parse_tree(bad)


def test_snapshot_parent_and_current():
    assert virsh.parse_parent(0, "s1\n", "", "s2") == "s1"
    assert virsh.parse_parent(1, "\n", "error: snapshot 's1' has no parent\n", "s1") is None
    with pytest.raises(ValueError):
        virsh.parse_parent(1, "", "error: failed to connect to the hypervisor", "s1")
    res = virsh.Result([], 0, "s6\n", "", 0.0)
    assert virsh.parse_current(res) == "s6"
    none = virsh.Result([], 1, "\n", "error: domain 'snaptree' has no current snapshot\n", 0)
    assert virsh.parse_current(none) is None
    with pytest.raises(virsh.VirshError):
        virsh.parse_current(virsh.Result([], 1, "", "error: no domain 'x'", 0))


def test_monitor_commands_from_the_daemon_log():
    old = virsh.monitor_commands((DATA / "libvirtd-9.0.log").read_text())
    assert [t for _, t in old] == ["hmp savevm", "hmp savevm", "hmp delvm"]
    assert old[0][0] == "2026-12-03 08:04:58.444+0000"
    new = virsh.monitor_commands((DATA / "libvirtd-11.3.log").read_text())
    assert [t for _, t in new] == ["snapshot-save", "snapshot-save", "snapshot-load",
                                   "snapshot-save", "snapshot-delete"]


def test_qemu_starts_from_the_domain_log():
    starts = virsh.qemu_starts((DATA / "qemu-9.0.log").read_text())
    assert starts == [("2026-12-03 08:04:50.702+0000", "qemu start"),
                      ("2026-12-03 08:05:00.675+0000", "qemu start -loadvm s1"),
                      ("2026-12-03 08:05:05.641+0000", "qemu start -loadvm s2")]
    assert virsh.qemu_starts("") == []


def test_read_tree_notes_libvirt_disagreeing_with_itself(tmp_path):
    outputs = {
        ("snapshot-list", "--parent"): (0, LIST_PARENT, ""),
        ("snapshot-list", "--tree"): (0, TREE.replace("+- s4", "+- s9"), ""),
        ("snapshot-current", "--name"): (0, "s6\n", ""),
    }

    class Fake(virsh.Virsh):
        def __call__(self, *args, check=True, timeout=300):
            if args[0] == "snapshot-parent":
                name = args[-1]
                rc, out, err = (1, "", f"error: snapshot '{name}' has no parent") \
                    if WANT[name] is None else (0, WANT[name] + "\n", "")
            else:
                rc, out, err = outputs[(args[0], args[2])]
            return virsh.Result(self.argv(*args), rc, out, err, 0.0)

    tree = Fake("qemu:///system", virsh.CommandLog(tmp_path / "log")).read_tree("dom")
    assert tree.parents == WANT and tree.current == "s6"
    assert len(tree.notes) == 1 and tree.notes[0].startswith(
        "libvirt: snapshot-list --tree shows [('s1', None), ('s2', 's1'), ('s3', 's1'), "
        "('s5', 's2'), ('s6', 's5'), ('s9', 's3')]")


def test_virsh_argv_and_the_command_log(tmp_path):
    log = virsh.CommandLog(tmp_path / "commands.log")
    v = virsh.Virsh("qemu:///system?socket=/work/lv-x/run/libvirt-sock", log,
                    prefix=["chroot", "/c"])
    assert v.argv("snapshot-list", "d") == [
        "chroot", "/c", "virsh", "-c", "qemu:///system?socket=/work/lv-x/run/libvirt-sock",
        "snapshot-list", "d"]
    res = log.run([sys.executable, "-c", "print('hi')"])
    assert res.stdout == "hi\n" and res.returncode == 0
    assert log.run([sys.executable, "-c", "import sys; sys.exit(3)"]).returncode == 3

    class Exits3(virsh.Virsh):  # what a failing virsh command looks like to its caller
        def argv(self, *args):
            return [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(virsh.VirshError, match="exit 3"):
        Exits3("qemu:///system", log)("list")
    assert Exits3("qemu:///system", log)("list", check=False).returncode == 3
    text = (tmp_path / "commands.log").read_text()
    assert "$ " in text and "# exit 0 after" in text and "# exit 3 after" in text


def test_step_tables_merge_and_print(tmp_path):
    row = {"n": 3, "step": "revert s1", "status": "mismatch", "commands": ["snapshot-load"],
           "problems": ["current: the image's is s2, libvirt's s1"]}
    summary.write_steps(tmp_path / "steps", "trixie", {"version": "11.3.0"}, [row])
    summary.write_steps(tmp_path / "steps", "host", {"version": "9.0.0"}, [])
    data = summary.merge(tmp_path / "steps")
    assert data == {"libvirts": {"host": {"version": "9.0.0"}, "trixie": {"version": "11.3.0"}},
                    "results": {"host": [], "trixie": [row]}}
    assert summary.merge(tmp_path / "none") is None
    assert summary.table([row]) == (" 3  revert s1  mismatch  snapshot-load\n"
                                    "      current: the image's is s2, libvirt's s1")


# -- the domain ---------------------------------------------------------------------------------


def test_domain_xml():
    spec = DomainSpec(name="snaptree", emulator="/q/build/qemu-system-x86_64",
                      kernel="/g/vmlinuz", initrd="/g/initrd.cpio", cmdline="console=ttyS0",
                      disk="/work/lv-x/disk.qcow2", console="/work/lv-x/console.log")
    dom = ET.fromstring(domain_xml(spec))
    assert dom.get("type") == "qemu"  # TCG
    assert dom.findtext("name") == "snaptree"
    assert dom.findtext("devices/emulator") == "/q/build/qemu-system-x86_64"
    assert dom.findtext("os/kernel") == "/g/vmlinuz"
    assert dom.findtext("os/initrd") == "/g/initrd.cpio"
    assert dom.findtext("os/cmdline") == "console=ttyS0"
    assert dom.find("features/acpi") is not None  # else libvirt 9.0 passes -no-acpi
    disk = dom.find("devices/disk")
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == "/work/lv-x/disk.qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    serial = dom.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/work/lv-x/console.log"
    assert dom.find("devices/interface") is None  # no network
    assert dom.find("devices/memballoon").get("model") == "none"
    assert dom.findtext("memory") == "256" and dom.find("memory").get("unit") == "MiB"


# -- the daemon's private namespace --------------------------------------------------------------


def test_host_daemon_binds_only_libvirt_s_directories(tmp_path):
    ws = tmp_path / "lv-x"
    plan = daemon.mounts(daemon.Place("host"), ws, [Path("/q/build"), Path("/q")])
    assert [(m.kind, m.target, m.source, m.readonly) for m in plan] == [
        ("bind", "/etc/libvirt", str(ws / "etc"), False),
        ("bind", "/run/libvirt", str(ws / "run"), False),
        ("bind", "/var/lib/libvirt", str(ws / "lib"), False),
        ("bind", "/var/cache/libvirt", str(ws / "cache"), False),
        ("bind", "/var/log/libvirt", str(ws / "log"), False),
        ("bind", "/etc/passwd", str(ws / "passwd"), True),
        ("bind", "/etc/group", str(ws / "group"), True),
    ]


def test_chroot_daemon_gets_proc_sys_dev_run_and_the_shared_paths(tmp_path):
    root = tmp_path / "chroot"
    ws = root / "work" / "lv-x"
    place = daemon.Place("trixie", root)
    plan = daemon.mounts(place, ws, [tmp_path / "src" / "build", tmp_path / "src",
                                     tmp_path / "guest", tmp_path / "src"])
    kinds = [(m.kind, m.target) for m in plan]
    assert kinds[:4] == [("proc", "/proc"), ("rbind", "/sys"), ("rbind", "/dev"),
                         ("tmpfs", "/run")]
    shared = [m for m in plan if m.readonly and m.target == m.source]
    assert [m.target for m in shared] == [str(tmp_path / "guest"), str(tmp_path / "src")]
    assert kinds.index(("tmpfs", "/run")) < kinds.index(("bind", "/run/libvirt"))
    assert place.inside(ws / "run" / "libvirt-sock") == "/work/lv-x/run/libvirt-sock"
    assert place.prefix() == ["chroot", str(root)]
    assert daemon.Place("host").inside(ws) == str(ws) and daemon.Place("host").prefix() == []


def test_covering_keeps_the_outermost_paths():
    got = daemon.covering([Path("/a/b/c"), Path("/a/b"), Path("/a/bc"), Path("/d")])
    assert got == [Path("/d"), Path("/a/b"), Path("/a/bc")]


def test_accounts_add_libvirt_s_default_user_once():
    passwd, group = daemon.accounts("root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\n")
    assert passwd.splitlines()[1].startswith("libvirt-qemu:x:64055:64055:")
    assert group.splitlines()[1] == "libvirt-qemu:x:64055:"
    assert daemon.accounts(passwd, group) == (passwd, group)


def test_launcher_argv_and_nsinit_mount_commands(tmp_path):
    argv = daemon.launcher_argv(tmp_path / "spec.json", python="/py")
    assert argv == ["unshare", "--mount", "--propagation", "private", "--", "/py",
                    str(daemon.NSINIT), str(tmp_path / "spec.json")]
    assert nsinit.mount_argv({"kind": "bind", "source": "/a", "readonly": True}, "/r/a") == [
        "mount", "-o", "bind,ro", "/a", "/r/a"]
    assert nsinit.mount_argv({"kind": "rbind", "source": "/dev"}, "/r/dev") == [
        "mount", "-o", "rbind", "/dev", "/r/dev"]
    assert nsinit.mount_argv({"kind": "proc"}, "/r/proc") == [
        "mount", "-t", "proc", "proc", "/r/proc"]
    assert nsinit.mount_argv({"kind": "tmpfs"}, "/r/run")[:3] == ["mount", "-t", "tmpfs"]
    with pytest.raises(ValueError):
        nsinit.mount_argv({"kind": "overlay"}, "/x")
    assert nsinit.target_path("/r", "/etc/libvirt") == "/r/etc/libvirt"
    assert nsinit.target_path("/", "/etc/libvirt") == "/etc/libvirt"


def test_nsinit_execs_the_daemon_after_its_mounts(tmp_path):
    """Without mounts or a chroot, nsinit.py is an exec with a clean environment."""
    spec = tmp_path / "spec.json"
    spec.write_text('{"root": "/", "mounts": [], "argv": ["/usr/bin/env"], '
                    '"env": {"ONLY": "this"}}')
    out = subprocess.run([sys.executable, str(daemon.NSINIT), str(spec)], capture_output=True,
                         text=True, check=True)
    assert out.stdout == "ONLY=this\n"


# -- the harness: chroot, stage, suite, report --------------------------------------------------


def test_trixie_libvirt_is_a_chroot_made_like_the_peers(tmp_path):
    lv = hlibvirt.LIBVIRTS["trixie"]
    assert hlibvirt.LIBVIRTS["host"].chroot is None
    assert hlibvirt.LIBVIRTS["host"].packages == hlibvirt.HOST_PACKAGES
    assert set(hlibvirt.HOST_PACKAGES) <= set(APT_PACKAGES)
    peer = lv.chroot
    assert peer.suite == "trixie" and "libvirt-daemon-driver-qemu" in peer.packages
    layout = Layout(root=tmp_path / "p", cache=tmp_path / "c")
    src = [peers.aptsrc.Source("http://mirror.invalid/debian", False)]
    assert peers.cached_dir(layout, peer, src).parent == tmp_path / "c" / "libvirt"
    assert peer.again() == "python3 build.py libvirt"
    assert peers.PEERS["sid"].again(rebuild=True) == "python3 build.py peers --only sid --rebuild"
    # the new fields are not inputs: the peers' cached chroots keep their names
    assert set(peers.inputs(peers.PEERS["sid"], src)) == {
        "suite", "variant", "apt", "packages", "aptopts", "recipe"}
    assert peers.parse_version("libvirtd (libvirt) 11.3.0\n", "libvirtd") == "11.3.0"


def test_the_libvirt_chroot_is_built_probed_with_libvirtd_and_cached(tmp_path):
    calls = []

    def runner(argv, log, cwd=None, env=None, check=True, input=None):
        argv = [str(a) for a in argv]
        calls.append(argv)
        out = ""
        if argv[0] == "mmdebstrap":
            Path(argv[4]).mkdir(parents=True)
        elif "dpkg-query" in argv:
            out = "libvirt-daemon 11.3.0-3+deb13u3\n"
        elif argv[2:] == ["libvirtd", "--version"]:
            out = "libvirtd (libvirt) 11.3.0\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    from harness.core.runner import NullLog
    layout = Layout(root=tmp_path / "p", cache=tmp_path / "c")
    src = [peers.aptsrc.Source("http://mirror.invalid/debian", False)]
    peer = hlibvirt.LIBVIRTS["trixie"].chroot
    res = peers.ensure(peer, layout, NullLog(), sources=src, runner=runner, is_root=True)
    assert calls[0][:3] == ["mmdebstrap", "--variant=apt",
                            "--include=libvirt-daemon,libvirt-daemon-driver-qemu,libvirt-clients"]
    assert calls[2][2:] == ["libvirtd", "--version"]
    assert res.root.version == "11.3.0" and res.root.manifest["libvirt_version"] == "11.3.0"
    assert res.root.root.parent == tmp_path / "c" / "libvirt"
    assert peers.locate(peer, layout, src) == res.root


def test_stage_checks_the_host_and_prepares_the_chroot(tmp_path, monkeypatch, capsys):
    layout = Layout(root=tmp_path / "p", cache=tmp_path / "c")
    monkeypatch.setattr(hlibvirt.bootstrap, "missing_debs", lambda pkgs, log=None: [])
    monkeypatch.setattr(hlibvirt, "host_version", lambda: "9.0.0")
    root = peers.PeerRoot(hlibvirt.LIBVIRTS["trixie"].chroot, Path("/c/libvirt-trixie-x"),
                          {"libvirt_version": "11.3.0"})
    seen = {}

    def ensure(peer, lay, log, **kw):
        seen.update(peer=peer.name, **kw)
        return peers.Prepared(root, True, 21.9)

    monkeypatch.setattr(hlibvirt.peers, "ensure", ensure)
    outcome = hlibvirt.stage(Context(layout=layout), hlibvirt.LibvirtRequest(rebuild=True),
                             None)
    assert seen["peer"] == "libvirt-trixie" and seen["rebuild"] is True
    assert outcome.summary == \
        "2 libvirt(s): host 9.0.0 (installed 0.0s), trixie 11.3.0 (built 21.9s)"
    assert [p.name for p in outcome.result] == ["host", "trixie"]
    assert "trixie   11.3.0   built" in outcome.text and "/c/libvirt-trixie-x" in outcome.text
    monkeypatch.setattr(hlibvirt.bootstrap, "missing_debs", lambda pkgs, log=None: ["virsh"])
    with pytest.raises(EnvironmentProblem) as err:
        hlibvirt.ensure_all(layout)
    assert "build.py setup" in err.value.hint


def test_cli_and_suite(tmp_path):
    sys.path.insert(0, str(ROOT))
    import build

    assert build.parser().parse_args(["libvirt", "--rebuild"]).rebuild
    assert "libvirt" in stages.STAGES
    layout = Layout(root=tmp_path / "p", cache=tmp_path / "c")
    layout.venv_bin("python3").parent.mkdir(parents=True)
    layout.venv_bin("python3").touch()
    argv = testrun.pytest_argv(layout, testrun.SUITES["libvirt"])
    assert "tests/libvirt" in argv
    assert f"--results-dir={layout.results / 'libvirt'}" in argv
    assert f"--matrix-json={layout.results / 'libvirt.json'}" in argv
    assert argv[argv.index("-n") + 1] == "auto"


def test_report_renders_the_step_table():
    row = {"n": 1, "step": "create s1", "status": "match", "problems": [],
           "commands": ["hmp savevm"]}
    bad = {"n": 1, "step": "create s1", "status": "mismatch", "commands": ["snapshot-save"],
           "problems": ["s1: parent in the image none (a root), in libvirt s0", "current: x"]}
    data = {"libvirts": {"host": {"version": "9.0.0", "total_seconds": 44, "boot_seconds": 7},
                         "trixie": {"version": "11.3.0"}},
            "results": {"host": [row], "trixie": [bad]}}
    rows = report._libvirt_rows(data)
    assert rows[0] == "| step | host (9.0.0) | trixie (11.3.0) |"
    assert rows[2] == ("| 1 create s1 | match (hmp savevm) | **MISMATCH** s1: parent in the "
                       "image none (a root), in libvirt s0 +1 (snapshot-save) |")
    assert rows[-1] == "Time per libvirt: host: 44 s (boot 7 s); trixie: ? s (boot ? s)."

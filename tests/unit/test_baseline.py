"""Baseline import: fake tarballs, no network, no QEMU."""

from __future__ import annotations

import json

import pytest
from conftest import git

from harness.core.errors import BaselineError
from harness.stages import baseline


def test_import_makes_baseline_and_fixup_commits(project, log):
    res = baseline.import_baseline(project.layout, project.baseline, log,
                                   tarball=project.tarball)
    tree = project.layout.qemu
    assert not res.already
    subjects = git(tree, "log", "--format=%s", "series-base").splitlines()
    assert subjects == ["test: a repack fix-up",
                        "Import QEMU 10.0.13 from Debian qemu 1:10.0.13+ds-0+deb13u1 "
                        "(qemu_10.0.13+ds.orig.tar.xz)"]
    assert git(tree, "rev-parse", "baseline").strip() == res.baseline_commit
    assert "# fixed up" in (tree / "pc-bios/meson.build").read_text()
    # files hidden by the tarball's own .gitignore are part of the baseline
    assert "subprojects/keycodemapdb/meson.build" in git(tree, "ls-files", "subprojects")
    assert (project.layout.stock / "subprojects/keycodemapdb/meson.build").exists()
    # files are ours, not the tarball's uid
    assert (tree / "VERSION").stat().st_uid == (project.tmp).stat().st_uid
    marker = json.loads((tree / ".git" / baseline.MARKER).read_text())
    assert marker["orig_sha256"] == project.baseline.orig_sha256
    # the stock tree is a worktree at series-base
    assert git(project.layout.stock, "rev-parse", "HEAD") == git(tree, "rev-parse",
                                                                  "series-base")


def test_import_is_idempotent_and_reproducible(project, log):
    first = baseline.import_baseline(project.layout, project.baseline, log,
                                     tarball=project.tarball)
    again = baseline.import_baseline(project.layout, project.baseline, log,
                                     tarball=project.tarball)
    assert again.already
    assert again.base_commit == first.base_commit
    # a second machine importing the same tarball gets the same commit ids
    other = type(project.layout)(root=project.tmp / "other", cache=project.tmp / "c2")
    (other.root / "harness").mkdir(parents=True)
    (other.root / "harness" / "fixups").symlink_to(project.layout.fixups)
    third = baseline.import_baseline(other, project.baseline, log, tarball=project.tarball)
    assert third.base_commit == first.base_commit


def test_sha256_mismatch_is_refused_and_nothing_is_created(project, log):
    project.tarball.write_bytes(project.tarball.read_bytes() + b"tampered")
    with pytest.raises(BaselineError) as err:
        baseline.import_baseline(project.layout, project.baseline, log,
                                 tarball=project.tarball)
    assert "sha256" in err.value.message and project.baseline.orig_sha256 in err.value.message
    assert err.value.exit_code == 4
    assert not project.layout.qemu.exists()


def test_corrupt_tarball_with_matching_pin(project, log):
    """A truncated download that someone pinned anyway: unpack fails cleanly."""
    from dataclasses import replace
    data = project.tarball.read_bytes()
    project.tarball.write_bytes(data[: len(data) // 2])
    pinned = replace(project.baseline, orig_sha256=baseline.sha256_file(project.tarball))
    with pytest.raises(BaselineError) as err:
        baseline.import_baseline(project.layout, pinned, log, tarball=project.tarball)
    assert "cannot unpack" in err.value.message
    assert not project.layout.qemu.exists()
    assert not list(project.root.glob(".import-*"))


def test_cached_tarball_failing_verification_is_refetched(project, log, monkeypatch):
    cache = project.layout.src_cache
    cache.mkdir(parents=True)
    (cache / project.baseline.orig_tarball).write_bytes(b"garbage")
    fetched = []

    class FakeApt:
        def __init__(self, root, log):
            pass

        def write(self, text, options=()):
            fetched.append(text)
            fetched.append(options)

        def update(self):
            pass

        def download_source(self, package, version, dest):
            (dest / project.baseline.orig_tarball).write_bytes(project.tarball.read_bytes())

    monkeypatch.setattr(baseline.aptsrc, "PrivateApt", FakeApt)
    monkeypatch.setattr(baseline.aptsrc, "system_sources",
                        lambda etc=None: [baseline.aptsrc.Source("http://mirror.invalid/debian",
                                                                 False)])
    path = baseline.fetch_debian_tarball(project.layout, project.baseline, log)
    assert baseline.sha256_file(path) == project.baseline.orig_sha256
    assert "Suites: trixie trixie-updates" in fetched[0]
    assert fetched[1] == ()  # the 10.0.13 profile needs no extra apt options
    # second call: served from the cache, apt not used again
    baseline.fetch_debian_tarball(project.layout, project.baseline, log)
    assert len(fetched) == 2


def test_wrong_version_in_tarball(project, log):
    from dataclasses import replace

    from conftest import FAKE_FILES, make_tarball
    sha = make_tarball(project.tarball, dict(FAKE_FILES, VERSION="10.0.12\n"))
    with pytest.raises(BaselineError, match="is QEMU 10.0.12"):
        baseline.import_baseline(project.layout, replace(project.baseline, orig_sha256=sha),
                                 log, tarball=project.tarball)


def test_foreign_qemu_dir_is_not_clobbered(project, log):
    project.layout.qemu.mkdir(parents=True)
    (project.layout.qemu / "precious.c").write_text("mine")
    with pytest.raises(BaselineError, match="not a harness import"):
        baseline.import_baseline(project.layout, project.baseline, log,
                                 tarball=project.tarball)
    assert (project.layout.qemu / "precious.c").read_text() == "mine"


def test_git_route_clones_the_tag(project, log, tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q")
    (upstream / "VERSION").write_text("10.0.13\n")
    git(upstream, "add", "VERSION")
    git(upstream, "commit", "-q", "-m", "release")
    git(upstream, "tag", project.baseline.upstream_tag)
    res = baseline.import_baseline(project.layout, project.baseline, log, source="git",
                                   git_url=str(upstream))
    tree = project.layout.qemu
    assert git(tree, "rev-parse", "series-base") == git(tree, "rev-parse", "baseline")
    assert res.source == "git"
    with pytest.raises(BaselineError, match="holds baseline"):
        baseline.import_baseline(project.layout, project.baseline, log, source="debian",
                                 tarball=project.tarball)


def test_sid_profile_fetches_from_sid_only_with_its_apt_options(project, log, monkeypatch):
    from dataclasses import replace

    from harness.core.config import select_baseline
    written = []

    class FakeApt:
        def __init__(self, root, log):
            pass

        def write(self, text, options=()):
            written.append((text, options))

        def update(self):
            pass

        def download_source(self, package, version, dest):
            written.append((package, version))
            (dest / sid.orig_tarball).write_bytes(project.tarball.read_bytes())

    sid = replace(select_baseline("10.2.2"), orig_sha256=project.baseline.orig_sha256)
    monkeypatch.setattr(baseline.aptsrc, "PrivateApt", FakeApt)
    monkeypatch.setattr(baseline.aptsrc, "system_sources",
                        lambda etc=None: [baseline.aptsrc.Source("http://m.invalid/debian",
                                                                 False),
                                          baseline.aptsrc.Source(
                                              "http://m.invalid/debian-security", True)])
    path = baseline.fetch_debian_tarball(project.layout, sid, log)
    assert path.name == "qemu_10.2.2+ds.orig.tar.xz"
    text, options = written[0]
    assert "Suites: sid\n" in text and "sid-" not in text
    assert options == ('Acquire::Check-Valid-Until "false"',)
    assert written[1] == ("qemu", "1:10.2.2+ds-1")


def test_the_import_records_its_profile(project, log):
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)
    marker = baseline.read_marker(project.layout.qemu)
    assert marker["profile"] == "10.0.13" and marker["upstream_version"] == "10.0.13"
    # the stock worktree's .git is a file: its record is the main repository's
    assert baseline.read_marker(project.layout.stock) == marker
    assert baseline.tree_version(project.layout.stock) == "10.0.13"
    assert baseline.require_tree(project.layout, project.baseline, "build") == marker


def test_a_tree_of_another_baseline_is_refused_with_the_ways_out(project, log):
    from harness.core.config import select_baseline
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)
    other = select_baseline("10.2.2")
    with pytest.raises(BaselineError) as err:
        baseline.require_tree(project.layout, other, "build", "selected with --baseline")
    msg, hint = err.value.message, err.value.hint
    assert "holds QEMU 10.0.13 (baseline profile 10.0.13" in msg
    assert "asked for profile 10.2.2 (QEMU 10.2.2, qemu 1:10.2.2+ds-1)" in msg
    assert "(selected with --baseline)" in msg
    assert "`python3 build.py --baseline 10.0.13 build`" in hint
    assert "`python3 build.py --baseline 10.2.2 import`" in hint
    assert "`python3 build.py --baseline 10.2.2 port`" in hint
    assert err.value.exit_code == 4
    # import says the same kind of thing
    with pytest.raises(BaselineError, match="holds baseline 10.0.13") as err:
        baseline.import_baseline(project.layout, other, log, tarball=project.tarball)
    assert "--baseline 10.2.2 port" in err.value.hint


def test_an_import_made_before_profiles_is_recognised_by_its_debian_version(project, log):
    import json as js
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)
    path = project.layout.qemu / ".git" / baseline.MARKER
    old = js.loads(path.read_text())
    del old["profile"], old["upstream_version"]
    path.write_text(js.dumps(old))
    assert baseline.marker_profile(old) == "10.0.13"
    assert baseline.require_tree(project.layout, project.baseline, "apply") == old
    from harness.core.config import select_baseline
    with pytest.raises(BaselineError, match="holds QEMU 10.0.13 .baseline profile 10.0.13"):
        baseline.require_tree(project.layout, select_baseline("10.2.2"), "apply")


def test_require_tree_without_an_import(project):
    from harness.core.errors import NotReady
    with pytest.raises(NotReady, match="not imported") as err:
        baseline.require_tree(project.layout, project.baseline, "build")
    assert "--baseline 10.0.13 import" in err.value.hint
    assert err.value.exit_code == 3  # a tree not made yet is not a usage error
    project.layout.qemu.mkdir()
    git(project.layout.qemu, "init", "-q")
    with pytest.raises(BaselineError, match="not made by `build.py import`"):
        baseline.require_tree(project.layout, project.baseline, "build")

"""Baseline profiles as data: harness/baselines.toml, checked on load."""

from __future__ import annotations

import pytest

from harness.core import config
from harness.core.config import load_baselines, select_baseline
from harness.core.errors import UsageError

GOOD = """default = "1.2.3"

[profiles."1.2.3"]
upstream_version = "1.2.3"
upstream_tag = "v1.2.3"
debian_package = "qemu"
debian_version = "1:1.2.3+ds-1"
debian_suite = "sid"
orig_tarball = "qemu_1.2.3+ds.orig.tar.xz"
orig_sha256 = "%s"
orig_topdir = "qemu-1.2.3"
apt_options = ['Acquire::Check-Valid-Until "false"']
""" % ("ab" * 32)


def _file(tmp_path, text):
    path = tmp_path / "baselines.toml"
    path.write_text(text)
    return path


def test_shipped_profiles():
    found = load_baselines()
    assert found.default == "10.2.2"
    assert list(found.profiles) == ["10.2.2", "10.0.13"]
    new = found.get()
    assert (new.name, new.upstream_version, new.upstream_tag) == ("10.2.2", "10.2.2", "v10.2.2")
    assert new.ident == "qemu 1:10.2.2+ds-1"
    assert new.debian_suite == "sid"
    assert new.orig_tarball == "qemu_10.2.2+ds.orig.tar.xz"
    assert new.orig_sha256 == "be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb"
    assert new.orig_topdir == "qemu-10.2.2"
    assert new.apt_options == ('Acquire::Check-Valid-Until "false"',)
    old = found.get("10.0.13")
    assert old.ident == "qemu 1:10.0.13+ds-0+deb13u1" and old.debian_suite == "trixie"
    assert old.orig_sha256.startswith("6a0888e8") and old.apt_options == ()
    assert old.upstream_git == config.UPSTREAM_GIT


def test_select_by_name_environment_and_default(monkeypatch):
    assert select_baseline().name == "10.2.2"
    assert select_baseline("10.0.13").name == "10.0.13"
    monkeypatch.setenv(config.BASELINE_ENV, "10.0.13")
    assert select_baseline().name == "10.0.13"
    assert select_baseline("10.2.2").name == "10.2.2"  # the command line wins


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(UsageError) as err:
        select_baseline("9.9.9")
    assert "no baseline profile '9.9.9'" in err.value.message
    assert "10.2.2, 10.0.13" in err.value.message
    assert "--baseline 10.2.2" in err.value.hint
    assert err.value.exit_code == 2


def test_a_good_file(tmp_path):
    b = select_baseline(path=_file(tmp_path, GOOD))
    assert b.name == "1.2.3" and b.apt_options == ('Acquire::Check-Valid-Until "false"',)


@pytest.mark.parametrize("change, expect", [
    (lambda t: t.replace('orig_topdir = "qemu-1.2.3"\n', ""), "lacks orig_topdir"),
    (lambda t: t.replace("ab" * 32, "ab" * 31), "orig_sha256 = 'abab"),
    (lambda t: t.replace("ab" * 32, "AB" * 32), "64 lowercase hex digits"),
    (lambda t: t.replace('debian_suite = "sid"', 'debian_suite = 7'), "debian_suite = 7"),
    (lambda t: t.replace('orig_tarball = "', 'orig_tarball = "../'), "orig_tarball"),
    (lambda t: t + 'typo_key = "x"\n', "unknown key(s) typo_key"),
    (lambda t: t.replace('default = "1.2.3"', 'default = "2.0.0"'),
     "default = '2.0.0' does not name a profile"),
    (lambda t: t.replace('"false"\']', '"false"; Dir "/etc"\']'), "apt_options"),
    (lambda t: t.replace('[profiles."1.2.3"]', '[profiles."../x"]').replace(
        'default = "1.2.3"', 'default = "../x"'), "a profile name is"),
    (lambda t: "default = \n", "not valid TOML"),
    (lambda t: 'default = "x"\n', "no [profiles"),
    (lambda t: "defualt = 1\n" + t, "unknown top-level key(s) defualt"),
])
def test_a_broken_file_says_what_and_where(tmp_path, change, expect):
    path = _file(tmp_path, change(GOOD))
    with pytest.raises(UsageError) as err:
        load_baselines(path)
    assert expect in err.value.message
    assert str(path) in err.value.message
    assert err.value.hint and str(path) in err.value.hint


def test_a_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        load_baselines(tmp_path / "absent.toml")


def test_every_profile_has_its_fixups():
    """The +ds repacks lack the edk2 firmware: each profile carries the fix-up."""
    from harness.stages.baseline import fixup_message
    for name in load_baselines().profiles:
        diffs = sorted((config.ROOT / "harness" / "fixups" / name).glob("*.diff"))
        assert [d.name for d in diffs] == [
            "0001-pc-bios-skip-firmware-blobs-missing-from-the-ds-repack.diff"], name
        text = diffs[0].read_text()
        assert f"qemu_{name}+ds.orig.tar.xz" in fixup_message(diffs[0])
        assert "if not fs.exists(f + '.bz2')" in text and "blobs = blobs_present" in text

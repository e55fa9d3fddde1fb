"""deb-src entries derived from the machine's apt sources (recorded files)."""

from __future__ import annotations

import pytest

from harness.core import aptsrc
from harness.core.errors import BaselineError, EnvironmentProblem

DEB822 = """Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://other.invalid/debian
Suites: bookworm
Components: main
Enabled: no
"""

ONE_LINE = """deb [arch=amd64] http://legacy.invalid/debian/ bookworm main
deb http://vendor.invalid/apt cloud-sdk main
# deb http://commented.invalid/debian bookworm main
"""


def _etc(tmp_path, files):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


def test_sources_from_deb822_and_one_line_files(tmp_path):
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": DEB822,
                          "sources.list": ONE_LINE,
                          "sources.list.d/vendor.list.disabled": "deb http://x/debian sid main"})
    found = aptsrc.system_sources(etc)
    assert found == [
        aptsrc.Source("http://legacy.invalid/debian", False),
        aptsrc.Source("http://mirror.invalid/debian", False),
        aptsrc.Source("http://mirror.invalid/debian-security", True),
    ]


def test_deb_src_entries_point_at_the_pinned_suite():
    text = aptsrc.deb_src_entries([aptsrc.Source("http://m.invalid/debian", False),
                                   aptsrc.Source("http://m.invalid/debian-security", True)],
                                  "trixie")
    assert "Types: deb-src\nURIs: http://m.invalid/debian\nSuites: trixie trixie-updates" in text
    assert "URIs: http://m.invalid/debian-security\nSuites: trixie-security" in text
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2


@pytest.mark.parametrize("suite", ["sid", "unstable", "experimental"])
def test_rolling_suites_have_no_updates_or_security(suite):
    """sid has no sid-updates / sid-security: naming them makes apt-get update 404."""
    text = aptsrc.deb_src_entries([aptsrc.Source("http://m.invalid/debian", False),
                                   aptsrc.Source("http://m.invalid/debian-security", True)],
                                  suite)
    assert text == ("Types: deb-src\nURIs: http://m.invalid/debian\n"
                    f"Suites: {suite}\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert "-updates" not in text and "-security" not in text


def test_no_debian_source_is_an_environment_problem(tmp_path):
    etc = _etc(tmp_path, {"sources.list": "deb http://vendor.invalid/apt stable main\n"})
    with pytest.raises(EnvironmentProblem) as err:
        aptsrc.system_sources(etc)
    assert "--tarball" in err.value.hint


def test_private_config_never_touches_system_state(tmp_path, log):
    apt = aptsrc.PrivateApt(tmp_path / "papt", log)
    apt.write("Types: deb-src\n")
    conf = apt.conf.read_text()
    for key in ("Dir::Etc::sourcelist", "Dir::Etc::sourceparts", "Dir::State::Lists",
                "Dir::Cache"):
        line = next(ln for ln in conf.splitlines() if ln.startswith(key + " "))
        assert str(tmp_path / "papt") in line


def test_private_config_carries_the_profile_apt_options(tmp_path, log):
    """sid's Release file can be past its Valid-Until: the profile says so."""
    apt = aptsrc.PrivateApt(tmp_path / "papt", log)
    apt.write("Types: deb-src\n", options=('Acquire::Check-Valid-Until "false"',))
    assert 'Acquire::Check-Valid-Until "false";\n' in apt.conf.read_text()
    apt.write("Types: deb-src\n")
    assert "Valid-Until" not in apt.conf.read_text()


def test_replaced_point_release_says_what_to_do(tmp_path, log, monkeypatch):
    apt = aptsrc.PrivateApt(tmp_path / "papt", log)
    monkeypatch.setattr(apt, "source_versions", lambda pkg: ["1:10.0.14+ds-0+deb13u1"])
    with pytest.raises(BaselineError) as err:
        apt.download_source("qemu", "1:10.0.13+ds-0+deb13u1", tmp_path / "dl")
    assert "no longer offers" in err.value.message
    assert "1:10.0.14+ds-0+deb13u1" in err.value.message
    assert "harness/baselines.toml" in err.value.hint and "--tarball" in err.value.hint

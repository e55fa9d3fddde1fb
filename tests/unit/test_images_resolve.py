"""The guest's package resolution is remembered while apt's state is unchanged
(images/guest.py resolve_packages_cached): every test session and xdist worker asks, and
three `apt-cache show` runs cost seconds on a busy machine."""

from __future__ import annotations

import os

from images import guest


def test_resolution_is_reused_until_apt_changes(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_Packages").write_text("Package: busybox-static\n")
    monkeypatch.setattr(guest, "APT_STATE", (lists,))
    asked = []

    def resolve(log):
        asked.append(1)
        return (guest.Package("busybox-static", f"1.{len(asked)}", "ab"),)

    monkeypatch.setattr(guest, "resolve_packages", resolve)
    cache = tmp_path / "cache"
    first = guest.resolve_packages_cached(cache, log=lambda m: None)
    assert guest.resolve_packages_cached(cache, log=lambda m: None) == first
    assert len(asked) == 1 and first[0].version == "1.1"
    # apt-get update rewrites a list: apt could answer otherwise now
    (lists / "deb.debian.org_Packages").write_text("Package: busybox-static\nVersion: 2\n")
    os.utime(lists / "deb.debian.org_Packages", ns=(1, 1))
    assert guest.resolve_packages_cached(cache, log=lambda m: None)[0].version == "1.2"
    assert len(asked) == 2
    (cache / guest.RESOLVED).write_text("{not json")  # a damaged memo: resolved again
    assert guest.resolve_packages_cached(cache, log=lambda m: None)[0].version == "1.3"

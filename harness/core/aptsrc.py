"""Fetch a Debian source package through a private apt configuration.

The deb-src entries are derived at run time from the machine's own Debian
sources (whatever mirror it is configured with), pointed at the suite that
carries the pinned package. Nothing here names a mirror, and the system's
apt state is never touched: lists and cache live under the harness cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import BaselineError, EnvironmentProblem
from harness.core.runner import StageLog, run

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Source:
    uri: str
    security: bool


def _deb822_stanzas(text: str):
    stanza: dict[str, str] = {}
    key = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
            continue
        if raw[0] in " \t" and key:
            stanza[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _is_debian(uri: str, suites: list[str], signed_by: str) -> bool:
    if "debian-archive" in signed_by:
        return True
    # Debian's archive layout: .../debian or .../debian-security
    return bool(re.search(r"/debian(-security)?/?$", uri)) and any(
        re.fullmatch(r"[a-z]+(-updates|-security|-backports)?", s) for s in suites)


def system_sources(etc_apt: Path = Path("/etc/apt")) -> list[Source]:
    """The Debian archive URIs this machine is configured with."""
    found: list[Source] = []
    files = []
    if (etc_apt / "sources.list").is_file():
        files.append(etc_apt / "sources.list")
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for st in _deb822_stanzas(text):
                if st.get("enabled", "yes").lower() == "no":
                    continue
                suites = st.get("suites", "").split()
                for uri in st.get("uris", "").split():
                    if _is_debian(uri, suites, st.get("signed-by", "")):
                        found.append(Source(uri.rstrip("/"),
                                            any(s.endswith("-security") for s in suites)))
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(line) >= 3 and line[0] in ("deb", "deb-src"):
                    uri, suite = line[1], line[2]
                    if _is_debian(uri, [suite], ""):
                        found.append(Source(uri.rstrip("/"), suite.endswith("-security")))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise EnvironmentProblem(
            "no Debian archive found in /etc/apt/sources.list{,.d}",
            hint="configure a Debian mirror for apt, or pass --tarball PATH "
                 "(or --source git with network access)")
    return unique


# Suites that have no -updates or -security companion (asking apt for them
# is a 404 and `apt-get update` exits 100).
ROLLING_SUITES = frozenset({"sid", "unstable", "experimental"})


def deb_src_entries(sources: list[Source], suite: str) -> str:
    """deb822 text with deb-src entries for ``suite`` on the given mirrors."""
    out = []
    rolling = suite in ROLLING_SUITES
    for src in sources:
        if rolling:
            if src.security:
                continue  # the security archive carries no sid/unstable
            suites = suite
        else:
            suites = f"{suite}-security" if src.security else f"{suite} {suite}-updates"
        out.append(f"Types: deb-src\nURIs: {src.uri}\nSuites: {suites}\n"
                   f"Components: main\nSigned-By: {DEBIAN_KEYRING}\n")
    return "\n".join(out)


class PrivateApt:
    """An apt configuration of our own under ``root`` (lists, cache, sources)."""

    def __init__(self, root: Path, log: StageLog):
        self.root = root
        self.log = log

    @property
    def conf(self) -> Path:
        return self.root / "apt.conf"

    def write(self, sources_text: str, options: tuple[str, ...] = ()) -> None:
        """The sources and apt.conf; ``options`` are extra apt.conf items
        (``Key "value"``, e.g. ``Acquire::Check-Valid-Until "false"``)."""
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d",
                    "preferences.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text("")
        (self.root / "sources.list.d" / "harness.sources").write_text(sources_text)
        r = self.root
        self.conf.write_text(
            f'Dir::Etc::sourcelist "{r}/sources.list";\n'
            f'Dir::Etc::sourceparts "{r}/sources.list.d";\n'
            f'Dir::Etc::preferencesparts "{r}/preferences.d";\n'
            f'Dir::State::Lists "{r}/lists";\n'
            f'Dir::Cache "{r}/cache";\n'
            'APT::Sandbox::User "root";\n'
            + "".join(f"{opt.rstrip(';')};\n" for opt in options)
        )

    def _apt(self, *argv: str, cwd: Path | None = None, check: bool = True):
        return run(list(argv), self.log, cwd=cwd, check=check,
                   env={"APT_CONFIG": str(self.conf), "LC_ALL": "C"})

    def update(self) -> None:
        self._apt("apt-get", "update")

    def source_versions(self, package: str) -> list[str]:
        res = self._apt("apt-cache", "showsrc", package, check=False)
        return re.findall(r"^Version: (\S+)$", res.stdout, re.M)

    def download_source(self, package: str, version: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        versions = self.source_versions(package)
        if version not in versions:
            raise BaselineError(
                f"Debian no longer offers source {package} {version} "
                f"(offered now: {', '.join(versions) or 'none'})",
                hint="Debian replaced the point release. Either pin the new one "
                     "(its profile in harness/baselines.toml: versions and orig sha256, "
                     "then check the series still applies), put the pinned orig tarball "
                     "in the cache (build.py import --tarball PATH), or use --source git")
        self._apt("apt-get", "source", "--download-only", f"{package}={version}", cwd=dest)

"""Fixtures for the harness's own tests: fake QEMU trees, no build, no network."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from harness.core.config import BASELINE_ENV, Layout, select_baseline
from harness.core.runner import NullLog, StageLog

ROOT = Path(__file__).resolve().parents[2]

MESON = """roms = []
foreach f : fds
  roms += f
endforeach
"""

FIXUP = """test: a repack fix-up

Only for the fake baseline.

diff --git a/pc-bios/meson.build b/pc-bios/meson.build
--- a/pc-bios/meson.build
+++ b/pc-bios/meson.build
@@ -1,4 +1,5 @@
 roms = []
 foreach f : fds
+  # fixed up
   roms += f
 endforeach
"""

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
}


def make_tarball(path: Path, files: dict[str, str], topdir="qemu-10.0.13") -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{topdir}/{name}")
            info.size = len(data)
            info.mode = 0o755 if name == "configure" else 0o644
            info.uid = 1234  # like the real tarball: not root's files
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


FAKE_FILES = {
    "VERSION": "10.0.13\n",
    "configure": "#!/bin/sh\necho configured \"$@\"\n",
    "pc-bios/meson.build": MESON,
    "block/qcow2-snapshot.c": "int snapshot;\n",
    "README.rst": "fake qemu\n",
    # like the real tarball: ships files its own .gitignore hides
    ".gitignore": "/subprojects/keycodemapdb\n",
    "subprojects/keycodemapdb/meson.build": "project('keycodemapdb')\n",
}


@pytest.fixture(autouse=True)
def _no_enclosing_git(tmp_path, monkeypatch):
    """Every test's git commands stay in its own toy trees: run from a git
    hook or `git rebase --exec` in a worktree, GIT_DIR would point plain
    `git -C TREE ...` at this project's repository (a `git init` there turned
    it bare); and the user's git configuration stays out."""
    from harness.core.git import REPOSITORY_VARIABLES
    for key in REPOSITORY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with fix-ups, an empty cache and a fake orig tarball."""
    root = tmp_path / "proj"
    (root / "harness" / "fixups" / "10.0.13").mkdir(parents=True)
    (root / "harness" / "fixups" / "10.0.13" / "0001-test.diff").write_text(FIXUP)
    (root / "patches").mkdir()
    layout = Layout(root=root, cache=tmp_path / "cache")
    pinned = select_baseline("10.0.13")
    tarball = tmp_path / pinned.orig_tarball
    sha = make_tarball(tarball, FAKE_FILES)
    baseline = replace(pinned, orig_sha256=sha)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return type("Project", (), {"layout": layout, "baseline": baseline, "tarball": tarball,
                                "root": root, "tmp": tmp_path})


@pytest.fixture(autouse=True)
def no_baseline_from_environment(monkeypatch):
    """`build.py --baseline X test` hands X down; unit tests choose their own."""
    monkeypatch.delenv(BASELINE_ENV, raising=False)


@pytest.fixture
def log(tmp_path):
    with StageLog(tmp_path / "stage.log") as lg:
        yield lg


def git(tree: Path, *args: str, env: dict | None = None) -> str:
    full = dict(os.environ, **IDENTITY, **(env or {}))
    return subprocess.run(["git", "-C", str(tree), *args], check=True, text=True,
                          capture_output=True, env=full).stdout


def commit_change(tree: Path, path: str, text: str, subject: str, body: str = "") -> None:
    (tree / path).parent.mkdir(parents=True, exist_ok=True)
    (tree / path).write_text(text)
    git(tree, "add", path)
    git(tree, "commit", "-q", "-s", "-m", f"{subject}\n\n{body or 'Because tests.'}")


# The series the project plans, as toy commits: (name, needs, commits), each
# commit (path, new text, subject).
TOY_STACK = [
    ("stable-fixes", (), [
        ("block/qcow2-snapshot.c", "int snapshot;\nint fixed;\n", "qcow2: fix a leak"),
    ]),
    ("snapshot-identity", ("stable-fixes",), [
        ("block/qcow2-snapshot.c", "int snapshot;\nint fixed;\nint uuid;\n",
         "qcow2: add snapshot UUIDs"),
        ("docs/uuid.txt", "uuid docs\n", "docs: describe snapshot UUIDs"),
    ]),
    ("vm-lineage", ("snapshot-identity",), [
        ("migration/savevm.c", "int lineage;\n", "migration: record VM snapshot lineage"),
    ]),
    ("query-netdevs", (), [
        ("net/net.c", "int netdevs;\n", "net: remember each backend's configuration"),
        ("qapi/net.json", "{ 'command': 'query-netdevs' }\n", "qapi/net: add query-netdevs"),
    ]),
]


def make_stack(layout, stack=TOY_STACK, branch: str = "series") -> None:
    """Commit each series on ``branch`` of the imported qemu/, give it its
    series-NAME branch, and list the series in patches/series."""
    tree = layout.qemu
    git(tree, "checkout", "-q", branch)
    lines = []
    for name, needs, commits in stack:
        for path, text, subject in commits:
            commit_change(tree, path, text, subject,
                          f"The {name} series needs this change.")
        git(tree, "branch", "-f", f"series-{name}")
        lines.append(name + (f" needs {' '.join(needs)}" if needs else ""))
    layout.patches.mkdir(exist_ok=True)
    (layout.patches / "series").write_text("# the series, in order\n" + "\n".join(lines)
                                           + "\n")


def snapshot_dir(path: Path) -> dict[str, str]:
    """Every file under ``path`` (relative name -> text), for before/after checks."""
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*"))
            if p.is_file()}


def copy_of_template(project, tmp_path_factory, name: str, make) -> object:
    """``project`` after ``make(project)``: made once per test session and
    copied for each test (a toy tree costs dozens of git commands)."""
    template = tmp_path_factory.getbasetemp() / f"template-{name}"
    if not template.exists():
        scratch = template.with_name(template.name + ".tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(project.root, scratch / "proj")
        layout = Layout(root=scratch / "proj", cache=project.layout.cache)
        make(type("Project", (), {"layout": layout, "baseline": project.baseline,
                                  "tarball": project.tarball}))
        # the stock worktree would still point at the template
        git(layout.qemu, "worktree", "remove", "--force", str(layout.stock))
        scratch.rename(template)
    shutil.copytree(template / "proj", project.root, symlinks=True, dirs_exist_ok=True)
    return project


def import_fake(project) -> None:
    from harness.stages import baseline
    baseline.import_baseline(project.layout, project.baseline, NullLog(),
                             tarball=project.tarball)


@pytest.fixture
def imported(project, tmp_path_factory):
    """The fake baseline imported into qemu/ (no qemu-stock/)."""
    return copy_of_template(project, tmp_path_factory, "imported", import_fake)


@pytest.fixture
def exported(project, tmp_path_factory):
    """The toy stack (TOY_STACK) committed in qemu/ and exported to patches/."""
    def make(proj):
        from harness.stages import export
        import_fake(proj)
        make_stack(proj.layout)
        export.export_series(proj.layout, proj.baseline, NullLog())
    return copy_of_template(project, tmp_path_factory, "exported", make)

"""configure/ninja command lines, firmware links, paths and the CLI — no QEMU build."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.core import pipeline, runner
from harness.core.config import PATHS_KEYS, PROFILES, ROOT, Layout
from harness.core.errors import BuildFailed, BuildMissing, EnvironmentProblem, HarnessError
from harness.stages import build as qbuild
from harness.stages import setup as bootstrap
from harness.stages.paths import build_paths


@pytest.fixture
def fake_tree(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    (layout.qemu).mkdir()
    configure = layout.qemu / "configure"
    configure.write_text("#!/bin/sh\necho \"$@\" > configure.args\n"
                         "echo 'build:' > build.ninja\n")
    configure.chmod(0o755)
    return layout


def test_configure_arguments(fake_tree):
    args = qbuild.configure_args(PROFILES["patched"], fake_tree, ccache=True)
    assert "--target-list=x86_64-softmmu" in args
    assert "--enable-werror" in args and "--disable-docs" in args
    assert "--cc=/usr/lib/ccache/gcc" in args
    asan = qbuild.configure_args(PROFILES["patched-asan"], fake_tree, ccache=False)
    assert "--enable-asan" in asan and not any(a.startswith("--cc=") for a in asan)
    assert "--enable-ubsan" in asan and "--enable-ubsan" not in args
    assert "--enable-werror" not in asan
    assert PROFILES["patched-asan"].build_dir(fake_tree).name == "build-asan"


def test_configure_runs_once_per_argument_set(fake_tree, log):
    prof = PROFILES["patched"]
    args = ["--target-list=x86_64-softmmu"]
    assert qbuild._configure(prof, fake_tree, log, args) is True
    bdir = prof.build_dir(fake_tree)
    assert (bdir / "configure.args").read_text().strip() == args[0]
    assert qbuild._configure(prof, fake_tree, log, args) is False
    assert qbuild._configure(prof, fake_tree, log, args + ["--enable-asan"]) is True
    logged = log.path.read_text()
    assert f"$ {fake_tree.qemu}/configure --target-list=x86_64-softmmu (in {bdir})" in logged


def test_ccache_is_keyed_relative_to_each_tree(fake_tree):
    env = qbuild.build_env(fake_tree, fake_tree.qemu)
    assert env["CCACHE_BASEDIR"] == str(fake_tree.qemu)
    assert env["CCACHE_NOHASHDIR"] == "1"
    assert env["PATH"].startswith(str(fake_tree.venv / "bin"))


def test_firmware_links_only_what_is_missing(tmp_path, log):
    src = tmp_path / "seabios"
    src.mkdir()
    (src / "bios-256k.bin").write_bytes(b"bios")
    (src / "vgabios.bin").write_bytes(b"vga")
    bdir = tmp_path / "build"
    dest = bdir / qbuild.BUNDLE_DATADIR
    dest.mkdir(parents=True)
    (dest / "vgabios.bin").write_bytes(b"built by the tree")
    linked = qbuild.link_firmware(bdir, log, (src, tmp_path / "absent"))
    assert linked == ["bios-256k.bin"]
    assert (dest / "bios-256k.bin").resolve() == src / "bios-256k.bin"
    assert (dest / "vgabios.bin").read_bytes() == b"built by the tree"
    assert qbuild.link_firmware(bdir, log, (src,)) == []


def test_paths_without_a_build(tmp_path):
    """A build never made is BuildMissing (environment, 3), not a build that failed (6);
    the hint is a command that exists."""
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(BuildMissing) as err:
        build_paths(PROFILES["stock"], layout)
    assert not isinstance(err.value, BuildFailed)
    assert "python3 build.py build --only stock" in err.value.hint
    assert err.value.exit_code == 3


def test_paths_of_a_build(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    bdir = layout.qemu / "build"
    bdir.mkdir(parents=True)
    for name in ("qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd"):
        (bdir / name).write_text("")
    (layout.qemu / "VERSION").write_text("10.2.2\n")
    paths = build_paths(PROFILES["patched"], layout)
    assert set(paths) == {"qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd",
                          "build-dir", "source-dir", "baseline"} == set(PATHS_KEYS)
    from rig.builds import KEYS  # what the rig requires of a paths file is what it gets
    assert set(KEYS) <= set(paths)
    assert paths["baseline"] == "10.2.2"
    assert paths["qemu-img"] == str(bdir / "qemu-img")
    assert paths["source-dir"] == str(layout.qemu)


def test_cli_paths_exit_code_and_message_without_build(tmp_path):
    """The real CLI, in a copy of the project without builds."""
    import shutil
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "harness", proj / "harness",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "build.py", proj / "build.py")
    res = subprocess.run([sys.executable, str(proj / "build.py"), "paths", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 3
    assert res.stdout == ""
    assert "error: the patched build is missing" in res.stderr
    assert "next: run `python3 build.py`" in res.stderr


def test_missing_tool_is_an_environment_problem(log):
    with pytest.raises(EnvironmentProblem) as err:
        runner.run(["definitely-not-a-tool-xyz", "--version"], log)
    assert err.value.exit_code == 3
    assert "build.py setup" in err.value.hint


def test_missing_debian_packages_as_non_root(log):
    with pytest.raises(EnvironmentProblem) as err:
        bootstrap.ensure_debs(log, packages=("coreutils", "no-such-package-xyz"),
                              is_root=False)
    assert "no-such-package-xyz" in err.value.message
    assert "coreutils" not in err.value.message
    assert "apt-get install -y --no-install-recommends no-such-package-xyz" in err.value.hint


def test_runner_logs_quoted_argv_and_output(log):
    res = runner.run([sys.executable, "-c", "print('hello world')"], log)
    assert res.stdout == "hello world\n"
    text = log.path.read_text()
    assert f"$ {sys.executable} -c 'print('\"'\"'hello world'\"'\"')'" in text
    assert "hello world\n# exit 0" in text


def test_runner_input_to_a_command_that_does_not_read_it(log):
    res = runner.run(["true"], log, input="patch text\n" * 100_000)
    assert res.returncode == 0


def test_pipeline_stops_at_first_failure_and_prints_timings(tmp_path, capsys):
    from harness.cli import Printer
    ran = []

    def ok(ctx, request, log):
        ran.append("ok")
        return pipeline.Outcome("fine")

    def boom(ctx, request, log):
        ran.append("boom")
        raise BuildFailed("it broke", hint="fix it")

    ctx = pipeline.Context(layout=Layout(root=tmp_path, cache=tmp_path / "c"))
    stages = [pipeline.Stage("one", ok), pipeline.Stage("two", boom),
              pipeline.Stage("three", ok)]
    with pytest.raises(HarnessError):
        pipeline.run_stages(stages, ctx, observer=Printer())
    assert ran == ["ok", "boom"]
    out = capsys.readouterr().out
    assert "one          ok" in out and "two          FAILED" in out and "three" not in out
    assert "FAILED: it broke" in (tmp_path / "out/logs/two.log").read_text()


def test_stages_print_nothing_and_return_typed_outcomes(tmp_path, capsys):
    """The core is silent (the CLI's Printer prints); a FAILED outcome's tables reach the
    observer before its error is raised; every run has a status, a time and a log."""
    seen = []

    class Collect(pipeline.Observer):
        def finished(self, run):
            seen.append(run)

    def tables(ctx, request, log):
        return pipeline.Outcome.failed(BuildFailed("2 failed"), result=[1, 2],
                                       text="| step | result |")

    ctx = pipeline.Context(layout=Layout(root=tmp_path, cache=tmp_path / "c"))
    with pytest.raises(BuildFailed):
        pipeline.run_stages([pipeline.Stage("bisect", tables)], ctx, observer=Collect())
    assert capsys.readouterr().out == ""
    (run,) = seen
    assert run.status is pipeline.Status.FAILED and not run.ok
    assert run.outcome.result == [1, 2] and run.outcome.text == "| step | result |"
    assert run.summary == "2 failed" and run.log == tmp_path / "out/logs/bisect.log"


def test_requests_are_typed_from_the_command_line():
    """Each stage gets its own frozen request built from the parsed arguments: options of
    other commands do not leak in, absent ones keep the request's defaults."""
    from harness.cli import parser
    from harness.stages import STAGES
    from harness.stages.build import BuildRequest

    args = parser().parse_args(["build", "--only", "stock", "-j", "3"])
    req = STAGES["build"].make_request(args)
    assert req == BuildRequest(only="stock", asan=False, jobs=3)
    assert req.profiles() == ["stock"]
    assert BuildRequest(asan=True).profiles() == ["patched", "stock", "patched-asan"]
    args = parser().parse_args(["all", "--asan"])
    assert STAGES["import"].make_request(args).source == "debian"
    assert STAGES["build"].make_request(args).profiles()[-1] == "patched-asan"
    with pytest.raises(TypeError):
        STAGES["apply"].request(force=True)  # not an option of apply
    for stage in STAGES.values():  # every stage's request has defaults for every field
        stage.make_request()


def test_metadata_json_shape(fake_tree, log, monkeypatch):
    import subprocess as sp

    from harness.core.config import select_baseline
    BASELINE = select_baseline()
    tree = fake_tree.qemu
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=T", "-c", "user.email=t@e.invalid", "commit", "-qm", "b"],
                ["tag", BASELINE.base_tag]):
        sp.run(["git", "-C", str(tree), *cmd], check=True)
    prof = PROFILES["stock"]
    monkeypatch.setattr(prof.__class__, "source", lambda self, lay: tree)
    (tree / "build").mkdir(exist_ok=True)
    meta = qbuild.write_metadata(prof, fake_tree, ["--target-list=x86_64-softmmu"],
                                 BASELINE, log)
    on_disk = json.loads((tree / "build" / "metadata.json").read_text())
    assert on_disk == meta
    assert meta["baseline"]["ident"] == BASELINE.ident
    assert meta["baseline"]["profile"] == "10.2.2"
    assert meta["series"] == []
    assert meta["configure"][1:] == ["--target-list=x86_64-softmmu"]
    assert meta["reproduce"].endswith("python3 build.py --baseline 10.2.2 all")
    assert "--stock" not in meta["reproduce"]  # not an option of `all`
    assert set(meta["tools"]) >= {"gcc", "meson", "ninja", "python"}


def _cli_project(project, log):
    """The real build.py and harness in the fake project, qemu/ imported as 10.0.13."""
    import shutil

    from harness.stages import baseline
    shutil.copytree(ROOT / "harness", project.root / "harness", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "fixups"))
    shutil.copy(ROOT / "build.py", project.root / "build.py")
    baseline.import_baseline(project.layout, project.baseline, log, tarball=project.tarball)

    def cli(*argv, env=None):
        import os
        full = {k: v for k, v in os.environ.items() if k != "QEMU_HARNESS_BASELINE"}
        return subprocess.run([sys.executable, str(project.root / "build.py"), *argv],
                              capture_output=True, text=True, env={**full, **(env or {})})
    return cli


def test_cli_baseline_option_is_checked_against_the_imported_tree(project, log):
    cli = _cli_project(project, log)
    # the default profile (10.2.2) is not what qemu/ holds
    res = cli("paths", "--json")
    assert res.returncode == 4 and res.stdout == ""
    assert "holds QEMU 10.0.13 (baseline profile 10.0.13" in res.stderr
    assert "the default of harness/baselines.toml" in res.stderr
    assert "next: work on that tree: `python3 build.py --baseline 10.0.13 paths`" in res.stderr
    # asking for the tree's profile gets past the check (to "no build yet")
    res = cli("--baseline", "10.0.13", "paths", "--json")
    assert res.returncode == 3 and "the patched build is missing" in res.stderr
    res = cli("paths", "--json", env={"QEMU_HARNESS_BASELINE": "10.0.13"})
    assert res.returncode == 3
    bdir = project.layout.qemu / "build"
    bdir.mkdir()
    for name in ("qemu-system-x86_64", "qemu-img", "qemu-io", "qemu-nbd"):
        (bdir / name).write_text("")
    res = cli("--baseline", "10.0.13", "paths", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["baseline"] == "10.0.13"
    res = cli("--baseline", "10.2.2", "build")
    assert res.returncode == 4 and "(selected with --baseline)" in res.stderr
    assert "qemu-stock" not in res.stderr  # refused before touching anything


def test_cli_unknown_baseline_and_status(project, log):
    cli = _cli_project(project, log)
    res = cli("--baseline", "9.9.9", "status")
    assert res.returncode == 2
    assert "no baseline profile '9.9.9'" in res.stderr and "next: " in res.stderr
    res = cli("status")
    assert res.returncode == 0, res.stderr
    assert "selected baseline: 10.2.2 (QEMU 10.2.2, qemu 1:10.2.2+ds-1)" in res.stdout
    assert "qemu/: 10.0.13 (qemu 1:10.0.13+ds-0+deb13u1, debian) -- not the selected" \
        in res.stdout
    res = cli("--baseline", "10.0.13", "status")
    assert "qemu/: 10.0.13 (qemu 1:10.0.13+ds-0+deb13u1, debian)\n" in res.stdout


def test_test_stage_hands_the_baseline_down(tmp_path, log, monkeypatch):
    from harness.stages import testrun
    seen = {}

    def fake_run(argv, log, cwd=None, env=None, check=True, input=None, pass_fds=()):
        seen.update(env or {})
        return subprocess.CompletedProcess(argv, 0, "1 passed\n", "")

    monkeypatch.setattr(testrun, "run", fake_run)
    monkeypatch.setattr(testrun, "venv_python", lambda layout: sys.executable)
    layout = Layout(root=tmp_path, cache=tmp_path / "c")
    testrun.run_suite(layout, testrun.SUITES["unit"], log,
                      env={"QEMU_HARNESS_BASELINE": "10.0.13"})
    assert seen["QEMU_HARNESS_BASELINE"] == "10.0.13"


def test_export_works_on_a_tree_of_another_baseline(project, log):
    """export is the first step of moving qemu/ to another profile: never refused."""
    cli = _cli_project(project, log)
    from conftest import commit_change, git
    commit_change(project.layout.qemu, "README.rst", "fake qemu\nmore\n", "docs: more")
    git(project.layout.qemu, "branch", "series-docs")
    (project.layout.patches / "series").write_text("docs\n")
    res = cli("export")
    assert res.returncode == 0, res.stderr
    assert (project.layout.patches / "docs" / "0001-docs-more.patch").exists()
    res = cli("clean", "--trees")
    assert res.returncode == 0, res.stderr
    assert not project.layout.qemu.exists()


def test_runner_kills_a_hung_command_and_its_children(log):
    """A command past its timeout is killed with everything it started (a grandchild
    holding the output pipe included): CommandTimeout, even with check=False."""
    import time

    from harness.core.errors import CommandTimeout
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as err:
        runner.run(["sh", "-c", "echo started; sleep 60 & sleep 60"], log, timeout=0.5,
                   check=False)
    assert time.monotonic() - start < 10
    assert "timed out after 0.5s and was killed" in err.value.message
    assert err.value.output == "started\n"
    assert err.value.exit_code == 3 and err.value.log == str(log.path)
    assert "# killed after" in log.path.read_text()


def test_runner_default_timeout_applies(log, monkeypatch):
    import inspect
    assert inspect.signature(runner.run).parameters["timeout"].default == \
        runner.DEFAULT_TIMEOUT
    res = runner.run([sys.executable, "-c", "print('quick')"], log, timeout=30)
    assert res.stdout == "quick\n"


def test_setup_installs_what_the_tests_need():
    """valgrind (the leak checks skipped without it) and pytest-timeout (hung tests) come
    with `build.py setup`; every pytest run has a per-test timeout."""
    import tomllib

    from harness.core.config import APT_PACKAGES, PIP_PACKAGES
    assert "valgrind" in APT_PACKAGES
    assert "pytest-timeout" in PIP_PACKAGES
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(ini["timeout"]) <= 3600

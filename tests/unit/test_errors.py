"""The error contract: every entry point maps the one hierarchy to the README's exit codes
and ends with a `next:` line (build.py, snaptree, images, bench) — no QEMU build."""

from __future__ import annotations

import ast
import sys

import pytest

import build as cli
from harness import stages
from harness.core import errors, runner
from harness.core.config import ROOT, Layout
from harness.core.errors import (
    BuildFailed,
    BuildMissing,
    CommandFailed,
    EnvironmentProblem,
    HarnessError,
    NotReady,
)
from harness.core.pipeline import Stage


@pytest.fixture
def layout(tmp_path):
    return Layout(root=tmp_path, cache=tmp_path / "cache")


def test_exit_codes_are_the_readme_table():
    assert {cls.__name__: cls.exit_code for cls in (
        errors.UsageError, EnvironmentProblem, NotReady, BuildMissing, CommandFailed,
        errors.BaselineError, errors.PatchConflict, BuildFailed, errors.TestsFailed)} == {
        "UsageError": 2, "EnvironmentProblem": 3, "NotReady": 3, "BuildMissing": 3,
        "CommandFailed": 3, "BaselineError": 4, "PatchConflict": 5, "BuildFailed": 6,
        "TestsFailed": 7}
    readme = (ROOT / "README.md").read_text()
    assert ("2 usage, 3 environment (a missing tool, package, tree, build or socket), "
            "4 baseline") in " ".join(readme.split())
    assert not issubclass(BuildMissing, BuildFailed)


def test_nothing_raises_the_bare_base_class():
    """A bare HarnessError exits 1 without a kind: every raise names a subclass."""
    offenders = []
    for path in sorted((ROOT / "harness").glob("*.py")) + [ROOT / "build.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                    getattr(node.exc.func, "id", None) == "HarnessError":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def _stage_running(argv):
    def func(ctx, request, log):
        runner.run(argv, log)
        return "not reached"
    return func


def test_unexpected_command_failure_exits_3_naming_its_log(layout, monkeypatch, capsys):
    """`status`, `export`, `bisect` let the runner's CommandFailed through: it used to
    leave build.py with exit 1 and no next step."""
    monkeypatch.setitem(stages.STAGES, "status",
                        Stage("status", _stage_running(["sh", "-c", "echo boom; exit 4"])))
    assert cli.main(["status"], layout=layout) == 3
    err = capsys.readouterr().err
    log = layout.logs / "status.log"
    assert "error: command failed with exit code 4: sh -c 'echo boom; exit 4'" in err
    assert f"  log: {log}" in err
    assert f"  next: read the command's output in {log}" in err
    assert "boom" in log.read_text()


def test_command_failed_without_a_log_names_the_command():
    exc = CommandFailed(["git", "status"], 128, log=None)
    assert exc.render().splitlines()[-1] == "  next: run it by hand to see why: git status"
    assert errors.exit_code(exc) == 3


def test_missing_trees_are_not_usage_errors(layout, monkeypatch, capsys):
    assert cli.main(["build"], layout=layout) == 3
    err = capsys.readouterr().err
    assert f"error: {layout.qemu} is not imported yet" in err and "import` first" in err
    monkeypatch.setattr(stages.baseline, "require_selected", lambda ctx, command: {})
    assert cli.main(["build", "--only", "stock"], layout=layout) == 3
    err = capsys.readouterr().err
    assert "error: no stock tree (qemu-stock/)" in err
    assert "next: run `python3 build.py import`" in err


def test_missing_qemu_tree_is_not_ready(layout, log):
    from harness.core.config import PROFILES, select_baseline
    from harness.stages import build as qbuild
    with pytest.raises(NotReady) as err:
        qbuild.build(PROFILES["patched"], layout, log, select_baseline())
    assert err.value.exit_code == 3 and "build.py import" in err.value.hint


def test_tree_of_an_unreadable_socket_is_not_ready(layout, tmp_path, capsys):
    assert cli.main(["tree", "--qmp", str(tmp_path / "no-vm")], layout=layout) == 3
    err = capsys.readouterr().err
    assert "cannot read the snapshots" in err and "\n  next: " in err


def test_images_cli_maps_its_errors(monkeypatch, capsys):
    import images.__main__ as images_main

    def no_guest(*a, **kw):
        raise images_main.ImageError("apt has no installable busybox-static")
    monkeypatch.setattr(images_main, "ensure_guest", no_guest)
    assert images_main.main([]) == 3
    err = capsys.readouterr().err
    assert "busybox-static" in err and "next: `python3 build.py setup`" in err


@pytest.fixture
def bench_run(monkeypatch):
    sys.path.insert(0, str(ROOT))
    from bench import run
    return run


def test_bench_exits_with_the_build_failure(bench_run, layout, monkeypatch, capsys):
    def broken(layout, log, fresh_clone):
        raise BuildFailed("the bench build failed", hint="fix it")
    monkeypatch.setattr(bench_run, "bench_build", broken)
    assert bench_run.main(["build"], layout=layout) == 6
    assert "next: fix it" in capsys.readouterr().err


def test_bench_failed_fresh_clone_is_not_exit_0(bench_run, layout, monkeypatch, capsys):
    """It used to print "(FAILED)" in the table and exit 0."""
    rows = [{"name": "fresh clone to both builds ready", "patched": "12 s (FAILED)",
             "target": "< 15 min", "failed": "`build.py` in a fresh clone exited 6: x"}]
    monkeypatch.setattr(bench_run, "bench_build", lambda layout, log, fresh: rows)
    assert bench_run.main(["build", "--fresh-clone"], layout=layout) == 6
    out = capsys.readouterr()
    assert "12 s (FAILED)" in out.out  # the table is still printed and saved
    assert "fresh clone exited 6" in out.err
    assert (layout.results / "bench.json").exists()


def test_bench_missing_build_is_exit_3(bench_run, layout, capsys):
    assert bench_run.main(["qemu-img", "-n", "1"], layout=layout) == 3
    assert "the patched build is missing" in capsys.readouterr().err


def test_fail_prints_and_maps(capsys):
    assert errors.fail(errors.PatchConflict("x", hint="y")) == 5
    assert capsys.readouterr().err == "error: x\n  next: y\n"
    assert errors.exit_code(KeyboardInterrupt()) == 130
    assert errors.exit_code(ValueError()) == 1
    assert HarnessError("x").exit_code == 1


@pytest.mark.parametrize("command", ["apply", "export", "bisect", "build"])
def test_commands_on_a_tree_never_imported_are_not_ready(layout, command, capsys):
    """They said UsageError (exit 2): nothing was wrong with the command line."""
    assert cli.main([command], layout=layout) == 3
    err = capsys.readouterr().err
    assert "not imported" in err and "next: " in err and "import" in err


def test_bisect_tree_needs_an_import(layout, log):
    from harness.core.config import select_baseline
    from harness.stages import bisect
    with pytest.raises(NotReady, match="qemu/ is not imported"):
        bisect._prepare_tree(layout, select_baseline(), log)

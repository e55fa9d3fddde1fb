"""Progress lines: ninja's [n/N] (harness/stages/build.py) through a stage's log to the
CLI's line (harness/progress.py), a dozen lines in CI and one updating line on a terminal —
on recorded ninja output, no build."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from harness import cli, progress
from harness.core.config import Layout
from harness.core.pipeline import Context, NoRequest, Outcome, Stage, run_stages
from harness.core.runner import StageLog, run
from harness.progress import ProgressLine
from harness.stages import build, testrun
from harness.stages.build import NinjaProgress, ninja_status

NINJA_LOG = Path(__file__).resolve().parent / "data" / "ninja" / "build-asan-regenerate.log"


def test_ninja_status_lines_and_nothing_else():
    assert ninja_status("[57/243] Compiling C object libblock.a.p/block_qcow2.c.o\n") == \
        (57, 243)
    assert ninja_status("[0/1] Regenerating build files\n") == (0, 1)
    for other in ("ninja: Entering directory `/x'", "ninja: no work to do.",
                  "FAILED: libblock.a.p/block_qcow2.c.o", "../block/qcow2.c:12: error: [1/2]",
                  "[57/243]no space", "The Meson build system", ""):
        assert ninja_status(other) is None, other


def test_interactive_only_on_a_tty_outside_ci():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress.interactive(Tty(), {})
    assert not progress.interactive(Tty(), {"CI": "true"})
    assert progress.interactive(Tty(), {"CI": "false"})
    assert not progress.interactive(io.StringIO(), {})


def _feed_recorded(tmp_path, out: io.StringIO, tty: bool) -> None:
    with StageLog(tmp_path / "build.log", progress=ProgressLine(out, tty=tty, width=60)) as log:
        watch = NinjaProgress(log, "build patched")
        for line in NINJA_LOG.read_text().splitlines(keepends=True):
            watch(line)
        watch.finished()


def test_ci_prints_a_line_every_ten_percent_of_a_recorded_build(tmp_path):
    """243 status lines (and a regeneration, and totals that drop as ninja restats) give one
    line per new total and per 10 %, then the end: not one per edge."""
    status_lines = [ln for ln in NINJA_LOG.read_text().splitlines() if ninja_status(ln)]
    assert len(status_lines) == 243
    out = io.StringIO()
    _feed_recorded(tmp_path, out, tty=False)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[:4] == ["    build patched: [0/1] 0%", "    build patched: [1/1407] 0%",
                         "    build patched: [5/1406] 0%", "    build patched: [6/243] 2%"]
    run_pct = [int(ln.split("] ")[1].rstrip("%")) for ln in lines[3:]]
    # one line per 10 % step of the 243-edge run, the last one the finished build
    assert [p // 10 for p in run_pct] == list(range(11)), lines
    assert lines[-1] == "    build patched: [243/243] 100%"
    assert len(lines) == 3 + 11


def test_ci_shows_where_a_failed_build_stopped(tmp_path):
    out = io.StringIO()
    with StageLog(tmp_path / "build.log", progress=ProgressLine(out, tty=False)) as log:
        watch = NinjaProgress(log, "build stock")
        for n in range(1, 58):
            watch(f"[{n}/1000] Compiling C object x{n}.o\n")
        log.progress_done()  # ninja failed: no finished()
    assert out.getvalue().splitlines() == [
        "    build stock: [1/1000] 0%", "    build stock: [57/1000] 5%"]


def test_a_thousand_edges_are_eleven_lines_and_the_next_build_starts_again():
    out = io.StringIO()
    line = ProgressLine(out, tty=False)
    for _ in range(2):  # patched, then stock with the same total
        for n in range(1, 2501):
            line.update(n, 2500, f"{n}")
        line.close()
    assert out.getvalue().split() == ["1", "250", "500", "750", "1000", "1250", "1500",
                                      "1750", "2000", "2250", "2500"] * 2


def test_tty_rewrites_one_line_in_place(tmp_path):
    out = io.StringIO()
    _feed_recorded(tmp_path, out, tty=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), "one line, ended once"
    updates = text.rstrip("\n").split("\r")[1:]
    assert len(updates) == 243 + 1  # each status line, then the finished build
    assert all(u.endswith("\x1b[K") for u in updates)  # what a longer text left is erased
    assert updates[-1] == "    build patched: [243/243] 100%\x1b[K"
    assert all(len(u) - len("\x1b[K") <= 59 for u in updates), "cut to the width: no wrap"


def test_tty_skips_unchanged_text_and_cuts_long_lines():
    out = io.StringIO()
    line = ProgressLine(out, tty=True, width=20, indent="")
    line.update(1, 10, "same")
    line.update(2, 10, "same")
    line.update(3, 10, "x" * 50)
    line.close()
    assert out.getvalue() == "\rsame\x1b[K\r" + "x" * 19 + "\x1b[K\n"


def test_nothing_printed_without_a_total():
    out = io.StringIO()
    line = ProgressLine(out, tty=False)
    line.update(0, 0, "no total yet")
    line.close()
    assert out.getvalue() == ""


FAKE_NINJA = '''import os, sys
fmt = os.environ.get("NINJA_STATUS", "[%f/%t] ")
total = int(sys.argv[1])
for n in range(1, total + 1):
    print(fmt.replace("%f", str(n)).replace("%t", str(total)) + f"Compiling C object o{n}.o")
'''


def test_a_stage_reports_through_its_log_to_the_printer(tmp_path, monkeypatch):
    """End to end without a build: a stage runs a fake ninja with the build's environment
    (a user's NINJA_STATUS without [n/N] cannot hide the progress), the CLI's printer shows
    a line per 10 % under the stage's name, and the stage log still has every line."""
    monkeypatch.setenv("NINJA_STATUS", "%p ")
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    fake = tmp_path / "ninja.py"
    fake.write_text(FAKE_NINJA)

    def stage(ctx, request, log):
        watch = NinjaProgress(log, "build patched")
        run([sys.executable, fake, "1500"], log, on_line=watch,
            env=build.build_env(ctx.layout, ctx.layout.qemu))
        watch.finished()
        return Outcome("built")

    out = io.StringIO()
    run_stages([Stage("build", stage)], Context(layout=layout), {"build": NoRequest()},
               cli.Printer(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "==> build"
    assert lines[1:12] == [f"    build patched: [{n}/1500] {n * 100 // 1500}%" for n in
                           (1, 150, 300, 450, 600, 750, 900, 1050, 1200, 1350, 1500)]
    assert lines[12].startswith("    built (")
    logged = (layout.logs / "build.log").read_text()
    assert logged.count("Compiling C object") == 1500


def test_verbose_shows_the_output_and_no_progress_line(tmp_path, capsys):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")

    def stage(ctx, request, log):
        log.progress(1, 2, "half way")
        return Outcome("done")

    out = io.StringIO()
    run_stages([Stage("s", stage)], Context(layout=layout, verbose=True), {"s": NoRequest()},
               cli.Printer(out))
    assert "half way" not in out.getvalue()


SUITE = '''import os
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_pass():
    assert "{env}" not in os.environ, "a test's own children must not get the pipe"

def test_fail():
    assert False

def test_skip():
    pytest.skip("no such tool")

@pytest.mark.xfail(strict=True)
def test_xfail():
    assert False

def test_error(broken):
    pass

@pytest.mark.parametrize("n", range(15))
def test_many(n):
    pass
'''


def _run_toy_suite(tmp_path, *pytest_args, tty=False):
    """A real pytest over a toy suite, loaded with the plugin, read through SuiteWatch into
    a stage log's progress line."""
    from harness.core.config import ROOT
    (tmp_path / "test_toy.py").write_text(SUITE.replace("{env}", testrun.PROGRESS_FD_ENV))
    out = io.StringIO()
    with StageLog(tmp_path / "suite.log", progress=ProgressLine(out, tty=tty)) as log:
        with testrun.SuiteWatch("toy", log) as watch:
            res = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "-p", "harness.pytest_progress", str(tmp_path), *pytest_args],
                      log, cwd=tmp_path, check=False, pass_fds=watch.fds,
                      env={**watch.env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert res.returncode == 1, res.stdout  # the failure and the error
    assert '"done"' not in res.stdout, "the plugin's lines are not in pytest's output"
    return out.getvalue()


def test_a_real_pytest_run_reports_how_far_the_suite_is(tmp_path):
    """20 tests: a line at the start and per 10 %, counting failures (an error in setup is
    one) and skips apart."""
    lines = _run_toy_suite(tmp_path).splitlines()
    assert lines[0] == "    toy: 0/20 tests, 0 failed"
    assert lines[-1] == "    toy: 20/20 tests, 2 failed, 1 skipped"
    assert [int(ln.split()[1].split("/")[0]) for ln in lines] == [0, 2, 4, 6, 8, 10, 12, 14,
                                                                  16, 18, 20]


def test_under_xdist_the_controller_reports_every_worker(tmp_path):
    lines = _run_toy_suite(tmp_path, "-n", "2").splitlines()
    assert lines[0] == "    toy: 0/20 tests, 0 failed"
    assert lines[-1] == "    toy: 20/20 tests, 2 failed, 1 skipped"
    assert len(lines) == 11


def test_on_a_terminal_the_suite_is_one_updating_line(tmp_path):
    text = _run_toy_suite(tmp_path, tty=True)
    assert text.count("\n") == 1
    assert text.split("\r")[-1] == "    toy: 20/20 tests, 2 failed, 1 skipped\x1b[K\n"


def test_without_the_harness_the_plugin_does_nothing(tmp_path):
    from harness.core.config import ROOT
    from harness.core.runner import NullLog
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    res = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "harness.pytest_progress", str(tmp_path)],
              NullLog(), cwd=tmp_path, check=False, timeout=300,
              env={testrun.PROGRESS_FD_ENV: None, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout


def test_every_suite_loads_the_plugin(tmp_path):
    layout = Layout(root=tmp_path, cache=tmp_path / "cache")
    layout.venv_bin("python3").parent.mkdir(parents=True)
    layout.venv_bin("python3").write_text("")
    for suite in testrun.SUITES.values():
        argv = testrun.pytest_argv(layout, suite)
        assert argv[argv.index("-p") + 1] == "harness.pytest_progress"

"""The layers the folders show (README "Layout") hold: checked on the imports of every file.

- the pipeline's core imports no stage, the stages no CLI; stages and core print nothing;
- the QEMU driver (rig/), snaptree/ and bench/ import nothing from tests/;
- a test module imports no other test module or conftest (shared code lives in rig/);
- tests/ holds tests, conftests, and data only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _py(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts and "data" not in p.relative_to(ROOT).parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _prints(path: Path) -> list[int]:
    """Lines that call print(), but in errors.fail: what every entry point (build.py,
    snaptree, images, bench) calls to show an error, so one mapping holds for all."""
    tree = ast.parse(path.read_text(), str(path))
    allowed = {n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
               and path.name == "errors.py" and f.name == "fail" for n in ast.walk(f)}
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and n not in allowed
            and isinstance(n.func, ast.Name) and n.func.id == "print"]


@pytest.mark.parametrize("path", _py("harness/core"), ids=lambda p: p.name)
def test_the_core_imports_no_stage_and_no_cli(path):
    bad = {m for m in _imports(path) if m.startswith(("harness.stages", "harness.cli"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _py("harness/core", "harness/stages"), ids=lambda p: p.name)
def test_stages_and_core_print_nothing(path):
    """Stages return outcomes; only harness/cli.py prints."""
    assert not _prints(path), f"{path.relative_to(ROOT)} prints at lines {_prints(path)}"
    assert "harness.cli" not in _imports(path)


@pytest.mark.parametrize("path", _py("rig", "snaptree", "bench", "harness", "images"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_outside_tests_imports_tests(path):
    bad = {m for m in _imports(path) if m == "tests" or m.startswith("tests.")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _py("tests"), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_hold_only_tests(path):
    """A test module or conftest imports no test module or conftest: what two tests share is
    library code, and it lives in rig/ (or harness/)."""
    rel = path.relative_to(ROOT)
    assert path.name.startswith("test_") or path.name in ("conftest.py", "__init__.py"), \
        f"{rel} is not a test: library code belongs in rig/"
    bad = {m for m in _imports(path)
           if m.startswith("tests.") or m.split(".")[0].startswith(("test_", "conftest"))}
    if path.parent.name == "unit":  # the fake trees' builders, beside their fixtures
        bad = {m for m in bad if m.split(".")[0] != "conftest"}
    assert not bad, f"{rel} imports {sorted(bad)}"


def test_every_stage_module_registers_a_typed_stage():
    from harness.stages import STAGES
    modules = {p.stem for p in (ROOT / "harness/stages").glob("*.py")} - {"__init__", "paths"}
    registered = {s.func.__module__.rsplit(".", 1)[1] for s in STAGES.values()}
    assert modules - {"testrun"} == registered
    for stage in STAGES.values():
        assert stage.func.__annotations__.get("return", "").startswith("Outcome"), stage.name


def test_all_suites_collect_together():
    """`pytest tests` collects every suite at once: no two test files share a basename and
    no suite's collection hook judges another suite's items."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "pytest", "tests", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = [p.name for p in _py("tests") if p.name.startswith("test_")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)

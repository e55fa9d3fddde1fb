"""Assertions in the QEMU tests that cannot fail, or fail for the wrong reason, found by
reading the sources (the tests themselves need a QEMU build)."""

from __future__ import annotations

import ast
import re

from harness.core.config import ROOT

QEMU_TESTS = sorted((ROOT / "tests" / "qemu").glob("test_*.py"))


def _asserts(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assert):
            yield node.lineno, ast.unparse(node.test)


def test_no_timing_asserts_in_tests():
    """How long something took is data for bench/ (and timings.json), never pass/fail:
    a slow CI machine is not a bug in the series."""
    found = [f"{p.name}:{n}: {t}" for p in QEMU_TESTS for n, t in _asserts(p)
             if re.search(r"timings\[|_seconds\b|\belapsed\b|\+ ?[1-9]\d\b", t)]
    assert found == []


def test_no_assert_on_what_cmd_error_already_checked():
    """cmd_error() raises when the command succeeds; asserting its (non-empty) text only
    repeats that. Check which error it was."""
    found = [f"{p.name}:{n}: {t}" for p in QEMU_TESTS for n, t in _asserts(p)
             if re.fullmatch(r"[\w.]+\.cmd_error\(.*\)", t)]
    assert found == []


def test_no_counter_asserts_that_hold_for_any_guest():
    """A console counter is always positive: `> 0` proves nothing about what a command did."""
    found = [f"{p.name}:{n}: {t}" for p in QEMU_TESTS for n, t in _asserts(p)
             if re.fullmatch(r"\w+ > 0", t)]
    assert found == []

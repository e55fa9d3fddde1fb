"""Headless Chromium (Debian's ``chromium``, which `build.py setup` installs): a page's DOM
after it loaded, and a screenshot of it — how the report is checked in a browser
(tests/unit/test_report_browser.py) and the picture `build.py report` keeps beside it.

Every run gets a throw-away profile (``--user-data-dir``), so nothing of the user's browser is
read or written; as root Chromium refuses to start inside its sandbox, so the sandbox is
turned off there (the pages are the harness's own files). ``--dump-dom`` prints the DOM on
stdout, which runner.run merges with stderr: the DOM is cut out of the output
(``--log-level=3`` keeps Chromium's own log quiet).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from harness.core.errors import CommandFailed, EnvironmentProblem
from harness.core.runner import StageLog, run

CHROMIUM = "chromium"
PACKAGE = "chromium"
TIMEOUT = 120.0  # seconds; a page of the harness renders in about two
MAX_HEIGHT = 16000  # pixels: longer pages are cut (Chromium's surfaces stop near 16384)
_DOM = re.compile(r"(?is)(<!doctype html>\s*)?<html\b.*</html>")
_HEIGHT = re.compile(r'data-page-height="(\d+)"')
# appended to a copy of a page to learn its height (--dump-dom runs the page's scripts)
_MEASURE = ("<script>document.documentElement.setAttribute('data-page-height', "
            "Math.ceil(document.documentElement.scrollHeight))</script>")


def find() -> str | None:
    return shutil.which(CHROMIUM)


def require() -> str:
    path = find()
    if path is None:
        raise EnvironmentProblem(f"{CHROMIUM} is not installed",
                                 hint=f"apt-get install {PACKAGE} (`python3 build.py setup` "
                                      "installs it)")
    return path


def argv(chromium: str, profile: Path, width: int, height: int, *flags: str) -> list[str]:
    args = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--log-level=3", f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args + list(flags)


def _run(page: Path, log: StageLog, width: int, height: int, *flags: str) -> str:
    chromium = require()
    with tempfile.TemporaryDirectory(prefix="qh-chromium-") as profile:
        try:
            res = run(argv(chromium, Path(profile), width, height, *flags,
                           Path(page).resolve().as_uri()),
                      log, timeout=TIMEOUT)
        except CommandFailed as exc:
            raise EnvironmentProblem(f"{CHROMIUM} could not render {page} (exit "
                                     f"{exc.returncode})", log=exc.log,
                                     hint="read the log; run the logged command by hand") \
                from exc
    return res.stdout


def dump_dom(page: Path, log: StageLog, width: int = 1280, height: int = 900) -> str:
    """The page's DOM after load (scripts run), as HTML."""
    out = _run(page, log, width, height, "--dump-dom")
    m = _DOM.search(out)
    if m is None:
        raise EnvironmentProblem(f"{CHROMIUM} --dump-dom printed no document for {page}",
                                 log=str(log.path), hint="read the log")
    return m.group(0)


def screenshot(page: Path, png: Path, log: StageLog, width: int, height: int) -> Path:
    """A PNG of the page's first ``width`` x ``height`` pixels."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(page, log, width, height, f"--screenshot={Path(png).resolve()}")
    if not png.exists():
        raise EnvironmentProblem(f"{CHROMIUM} wrote no screenshot {png}", log=str(log.path),
                                 hint="read the log")
    return png


def page_height(page: Path, log: StageLog, width: int) -> int:
    """How tall the page is laid out at ``width`` (a copy with a measuring script)."""
    with tempfile.TemporaryDirectory(prefix="qh-measure-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(Path(page).read_text() + _MEASURE)
        m = _HEIGHT.search(dump_dom(copy, log, width, 600))
    if m is None:
        raise EnvironmentProblem(f"could not measure {page} in {CHROMIUM}", log=str(log.path),
                                 hint="read the log")
    return int(m.group(1))


def full_page(page: Path, png: Path, log: StageLog, width: int = 1280) -> tuple[int, int]:
    """A screenshot of the whole page (up to MAX_HEIGHT); its (width, height)."""
    height = min(max(page_height(page, log, width), 200), MAX_HEIGHT)
    screenshot(page, png, log, width, height)
    return width, height

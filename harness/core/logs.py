"""Logs are stdlib logging: a file per stage (harness) and per test (rig), one style.

Everything logs through a named logger ("harness.stage", "rig.commands", ...) with the
file it belongs in attached to the record (``LogFile``, a LoggerAdapter); one handler,
``FileRouter``, appends each record to its file. Records also propagate as usual, so
pytest's log capture shows a failed test's commands, and ``--log-cli-level=INFO`` streams
them.
"""

from __future__ import annotations

import logging
from pathlib import Path

_KEY = "log_file"


class FileRouter(logging.Handler):
    """Appends each record that names a file to that file (opened per record: tests and
    stages come and go, and no descriptor outlives its test)."""

    def emit(self, record: logging.LogRecord) -> None:
        path = getattr(record, _KEY, None)
        if path is None:
            return
        try:
            with open(path, "a", encoding="utf-8", errors="replace") as fh:
                fh.write(self.format(record))
        except OSError:
            self.handleError(record)


class _Raw(logging.Formatter):
    """The message as it is: command output keeps its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if text.endswith("\n") or not text else text + "\n"


_ROUTER = FileRouter()
_ROUTER.setFormatter(_Raw())


def _install(logger: logging.Logger) -> None:
    if _ROUTER not in logger.handlers:
        logger.addHandler(_ROUTER)
        logger.setLevel(logging.DEBUG)


class LogFile(logging.LoggerAdapter):
    """``logger`` writing into ``path``: ``write`` raw text, ``note`` a "# ..." line."""

    def __init__(self, name: str, path: Path | str):
        logger = logging.getLogger(name)
        top = logging.getLogger(name.split(".")[0])
        _install(top)
        super().__init__(logger, {_KEY: str(path)})
        self.path = Path(path)

    def process(self, msg, kwargs):
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return msg, kwargs

    def write(self, text: str) -> None:
        if text:
            self.info("%s", text)

    def note(self, text: str) -> None:
        self.info("# %s", text)

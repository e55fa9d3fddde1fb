"""QMP client on qemu.qmp's synchronous shim, logging every message to the test directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from .errors import JobError, QMPCommandError, VMTimeout


class QMP:
    """QMP over a unix socket that QEMU serves (`-chardev socket,server=on,wait=off`)."""

    def __init__(self, path: str, log_path: Path, timeout: float = 60.0):
        self.path = path
        self._log = open(log_path, "a", buffering=1)
        self._conn = QEMUMonitorProtocol(path, nickname="rig")
        self._conn.settimeout(timeout)
        self.greeting = None
        self.seen_events: list[dict] = []

    def _write(self, direction: str, msg: Any) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} {direction} {json.dumps(msg)}\n")

    def connect(self) -> None:
        self.greeting = self._conn.connect(negotiate=True)
        self._write("<<<", self.greeting)

    def cmd_raw(self, name: str, **args: Any) -> dict:
        """Send a command, return the whole response (``return`` or ``error``)."""
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self._write(">>>", msg)
        resp = self._conn.cmd_obj(msg)
        self._write("<<<", resp)
        self.events()  # log events that arrived meanwhile (kept for tests in self.seen_events)
        return resp

    def cmd(self, name: str, **args: Any) -> Any:
        """Send a command, return its ``return`` value or raise QMPCommandError."""
        resp = self.cmd_raw(name, **args)
        if "error" in resp:
            raise QMPCommandError(name, args, resp["error"])
        return resp.get("return")

    def hmp(self, command_line: str) -> str:
        """human-monitor-command (used for measurements, e.g. qemu-io reads)."""
        return self.cmd("human-monitor-command", **{"command-line": command_line})

    def events(self) -> list[dict]:
        """Events received since the last call (each is logged and kept in seen_events)."""
        # get_events() already empties the queue; when the queue was empty it
        # pulls one event and leaves later ones queued for the next call (so
        # no clear_events() here: it would drop them)
        evs = self._conn.get_events(wait=False)
        for ev in evs:
            self._write("<<< event", ev)
        self.seen_events.extend(evs)
        return evs

    def run_job(self, command: str, job_id: str, timeout: float = 120.0, **args: Any) -> dict:
        """Start a job command, wait until it concludes, dismiss it; raise JobError on error."""
        self.cmd(command, **{"job-id": job_id}, **args)
        deadline = time.monotonic() + timeout
        while True:
            jobs = {j["id"]: j for j in self.cmd("query-jobs")}
            job = jobs.get(job_id)
            if job is None:
                raise JobError(job_id, "disappeared from query-jobs")
            if job["status"] == "concluded":
                self.cmd("job-dismiss", id=job_id)
                if "error" in job:
                    raise JobError(job_id, job["error"])
                return job
            if time.monotonic() > deadline:
                raise VMTimeout(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass
        self._log.close()

"""QMP client on qemu.qmp's synchronous shim, logging every message to the test directory.

Waits are on events (``wait_event``): jobs on JOB_STATUS_CHANGE, migration on MIGRATION
(the rig enables the ``events`` migration capability), unplug on DEVICE_DELETED.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from .errors import JobError, QMPCommandError, VMTimeout


class QMP:
    """QMP over a unix socket: a path QEMU serves, or a socket already connected to QEMU
    (the rig's way: QEMU connects to a socket the rig listens on)."""

    def __init__(self, path: str | socket.socket, log_path: Path, timeout: float = 60.0):
        self.path = path
        self._log = open(log_path, "a", buffering=1)
        self._conn = QEMUMonitorProtocol(path, nickname="rig")
        self._conn.settimeout(timeout)
        self.greeting = None
        self.seen_events: list[dict] = []  # every event, in order (tests look at these)
        self._unclaimed: list[dict] = []  # events no wait_event() has taken yet

    def _write(self, direction: str, msg: Any) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} {direction} {json.dumps(msg)}\n")

    def connect(self) -> None:
        self.greeting = self._conn.connect(negotiate=True)
        self._write("<<<", self.greeting)

    def cmd_raw(self, name: str, /, **args: Any) -> dict:
        """Send a command, return the whole response (``return`` or ``error``)."""
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self._write(">>>", msg)
        resp = self._conn.cmd_obj(msg)
        self._write("<<<", resp)
        self.events()  # log events that arrived meanwhile (kept for tests in self.seen_events)
        return resp

    def cmd(self, name: str, /, **args: Any) -> Any:
        """Send a command, return its ``return`` value or raise QMPCommandError. (``name`` is
        positional-only: commands such as block-dirty-bitmap-add have a "name" argument.)"""
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
        self._keep(evs)
        return evs

    def _keep(self, evs: list[dict]) -> None:
        for ev in evs:
            self._write("<<< event", ev)
        self.seen_events.extend(evs)
        self._unclaimed.extend(evs)

    def wait_event(self, match: Callable[[dict], bool], timeout: float, what: str = "") -> dict:
        """The first event not taken by an earlier wait that ``match`` accepts, blocking on
        the QMP socket until one arrives (VMTimeout after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self._unclaimed):
                if match(ev):
                    del self._unclaimed[i]
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VMTimeout(f"no {what or 'matching'} event after {timeout}s")
            try:
                ev = self._conn.pull_event(wait=remaining)
            except TimeoutError:  # (asyncio's, on Python >= 3.11 the builtin)
                ev = None
            if ev is not None:
                self._keep([ev])

    def discard_events(self, match: Callable[[dict], bool]) -> None:
        """Forget unclaimed events ``match`` accepts (before starting what will send new
        ones, so that a wait cannot take a stale one)."""
        self.events()
        self._unclaimed = [ev for ev in self._unclaimed if not match(ev)]

    @staticmethod
    def event(name: str, **data: Any) -> Callable[[dict], bool]:
        """A matcher: event ``name`` whose data has these values."""
        return lambda ev: ev.get("event") == name and all(
            ev.get("data", {}).get(k) == v for k, v in data.items())

    def run_job(self, command: str, job_id: str, timeout: float = 120.0, **args: Any) -> dict:
        """Start a job command, wait for its JOB_STATUS_CHANGE to "concluded", dismiss it;
        raise JobError on error."""
        self.discard_events(self.event("JOB_STATUS_CHANGE", id=job_id))
        self.cmd(command, **{"job-id": job_id}, **args)
        self.wait_event(self.event("JOB_STATUS_CHANGE", id=job_id, status="concluded"),
                        timeout, f"JOB_STATUS_CHANGE concluded of job {job_id}")
        jobs = {j["id"]: j for j in self.cmd("query-jobs")}
        job = jobs.get(job_id)
        if job is None:
            raise JobError(job_id, "disappeared from query-jobs")
        self.cmd("job-dismiss", id=job_id)
        if "error" in job:
            raise JobError(job_id, job["error"])
        return job

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass
        self._log.close()

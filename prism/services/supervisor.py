"""A small process supervisor: the docker-compose topology as local processes.

``prism up`` writes a plan (service name, argv, metrics port) and starts
``prism supervise PLAN`` detached. The supervisor starts every service as a
child, restarts one that *crashes* (non-zero exit, with backoff; an exit 0 --
an edge agent at the end of its log -- is done, not restarted; an exit 70 -- a
service that stopped itself after a run of internal errors -- is ``halted``,
not restarted, because a restart would replay the same bug), appends each
service's output to ``logs/NAME.log`` and keeps ``services.json`` current
(pid, state, restarts, metrics port) for ``prism ps``. On SIGTERM it stops the
children (SIGTERM, then SIGKILL after a grace period) and exits; nothing is
left behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runtime.errors import BugStreakError

log = logging.getLogger(__name__)

__all__ = ["Service", "Supervisor", "load_plan", "read_status", "save_plan"]


@dataclass
class Service:
    name: str
    argv: list[str]
    metrics_port: int | None = None
    #: central | merger | edge: runs as that role's Redis user when the supervisor's
    #: environment has its URL (PRISM_REDIS_URL_<ROLE>; secrets never in the plan file)
    redis_role: str | None = None
    #: node ids (or globs) the service's own key signs for; empty: it signs nothing
    signs_for: list[str] = field(default_factory=list)
    #: settings of this service alone (its key id and key file: paths, never secrets)
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    pid: int | None = None
    state: str = "pending"  # pending | running | done | crashed | halted | backoff | stopped
    restarts: int = 0
    exit_code: int | None = None
    started_at: float = 0.0
    log: str = ""
    _proc: Any = field(default=None, repr=False)


def service_env(s: Service) -> dict[str, str]:
    """The supervisor's environment, with the service's own settings and Redis user."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **s.env}
    role_url = env.get(f"PRISM_REDIS_URL_{(s.redis_role or '').upper()}")
    if s.redis_role and role_url:
        env["PRISM_REDIS_URL"] = role_url
    for key in [k for k in env if k.startswith("PRISM_REDIS_URL_")]:
        del env[key]  # a service knows its own password only
    return env


def _row(s: Service) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in fields(s) if f.name != "_proc"}


def save_plan(path: Path, services: list[Service]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([_row(s) for s in services], indent=1))


def load_plan(path: Path) -> list[Service]:
    return [Service(**row) for row in json.loads(path.read_text())]


def read_status(home: Path) -> list[dict[str, Any]]:
    path = home / "services.json"
    return json.loads(path.read_text()) if path.exists() else []


class Supervisor:
    grace_s = 20.0
    max_backoff_s = 30.0

    def __init__(self, home: Path, services: list[Service], *, max_restarts: int = 1000) -> None:
        self.home, self.services, self.max_restarts = home, services, max_restarts
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for service in self.services:
            self._start(service)
        next_try: dict[str, float] = {}
        while not self._stopping:
            for s in self.services:
                if s.state == "running" and s._proc.poll() is not None:
                    self._exited(s, next_try)
                elif s.state == "backoff" and time.monotonic() >= next_try.get(s.name, 0):
                    s.restarts += 1
                    self._start(s)
            self._write()
            if all(s.state in ("done", "crashed", "halted") for s in self.services):
                break
            time.sleep(0.5)
        self._shutdown()
        return 0

    def _exited(self, s: Service, next_try: dict[str, float]) -> None:
        s.exit_code = s._proc.returncode
        if s.exit_code == BugStreakError.exit_code:
            s.state = "halted"
            log.error(
                "service halted name=%s exit_code=%s: it stopped itself after internal "
                "errors in a row; not restarted (a restart replays the bug), see %s",
                s.name,
                s.exit_code,
                s.log,
            )
            return
        if s.exit_code == 0 or not s.restart or s.restarts >= self.max_restarts:
            s.state = "done" if s.exit_code == 0 else "crashed"
            log.info(
                "service finished name=%s exit_code=%s restarts=%s", s.name, s.exit_code, s.restarts
            )
            return
        delay = min(self.max_backoff_s, 2.0 ** min(s.restarts, 5))  # 1, 2, 4 ... s
        s.state = "backoff"
        next_try[s.name] = time.monotonic() + delay
        log.warning(
            "service crashed name=%s exit_code=%s restart_in=%.0fs", s.name, s.exit_code, delay
        )

    def _start(self, s: Service) -> None:
        s.log = str(self.logs / f"{s.name}.log")
        with open(s.log, "ab") as out:
            s._proc = subprocess.Popen(  # noqa: S603 - argv from our own plan
                [sys.executable, "-m", "prism.cli", *s.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=service_env(s),
            )
        s.pid, s.state, s.started_at, s.exit_code = s._proc.pid, "running", time.time(), None
        log.info("service started name=%s pid=%s", s.name, s.pid)

    def _stop(self, signum: int, _frame: object) -> None:
        log.info("signal %s: stopping every service", signum)
        self._stopping = True

    def _shutdown(self) -> None:
        running = [s for s in self.services if s._proc is not None and s._proc.poll() is None]
        for s in running:
            s._proc.terminate()
        deadline = time.monotonic() + self.grace_s
        for s in running:
            try:
                s._proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time name=%s: killed", s.name)
                s._proc.kill()
                s._proc.wait(5)
            s.state, s.exit_code = "stopped", s._proc.returncode
        self._write()

    def _write(self) -> None:
        rows = [_row(s) for s in self.services]
        tmp = self.home / "services.json.tmp"
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(self.home / "services.json")

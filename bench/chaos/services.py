"""The chaos run's processes: Prism services it can kill, stop, pause and start again.

A :class:`Service` is one ``prism ...`` command line that the runner keeps
alive through its faults (the runner is the supervisor here, so a fault's
end is a restart it does itself, at the scheduled moment). :class:`Broker`
and :class:`Redis` wrap the local stack's own start/stop so the same fault
kinds apply to the infrastructure. Every fault is logged with its wall time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prism.stack import kafka as local_kafka
from prism.stack import process, redis_server
from runtime.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Broker", "Redis", "Service"]


@dataclass
class Service:
    """``python -m prism.cli ARGS`` with its log appended to ``log_path`` across restarts."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    cut_file: Path | None = None  # edges: the Link's switch (``STATE/link-cut``)
    proc: subprocess.Popen | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # every exit code seen, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prism.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return code

    def begin(self, kind: str) -> bool:
        """Apply a fault; False when the service had already finished (nothing to fault)."""
        with self.lock:
            if kind == "link-cut":
                assert self.cut_file is not None, f"{self.name} has no link to cut"
                self.cut_file.touch()
                return True
            if not self.running():
                return False
            assert self.proc is not None
            sig = {"kill9": signal.SIGKILL, "sigterm": signal.SIGTERM, "pause": signal.SIGSTOP}
            self.proc.send_signal(sig[kind])
            if kind != "pause":
                code = self.wait(60.0)
                if code is None:  # a SIGTERM not honoured in 60 s is a finding, then a kill
                    log.error("service=%s did not stop on SIGTERM in 60 s", self.name)
                    self.proc.kill()
                    code = self.proc.wait(10)
                self.exits.append(code)
            return True

    def end(self, kind: str) -> None:
        with self.lock:
            if kind == "link-cut":
                assert self.cut_file is not None
                self.cut_file.unlink(missing_ok=True)
            elif kind == "pause":
                assert self.proc is not None
                self.proc.send_signal(signal.SIGCONT)
            else:
                self.start()

    def stop(self) -> None:
        """Teardown: whatever still runs is killed (a paused one is continued first)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Broker:
    """The run's own Kafka broker; restarts keep its ports (clients reconnect)."""

    settings: Settings
    bootstrap: str = ""
    ports: tuple[int, int] = (0, 0)
    name: str = "broker"

    def start(self) -> str:
        self.bootstrap = local_kafka.start(self.settings)
        text = local_kafka.KafkaPaths.of(self.settings).config.read_text()
        voters = next(x for x in text.splitlines() if x.startswith("controller.quorum.voters="))
        self.ports = (int(self.bootstrap.rsplit(":", 1)[1]), int(voters.rsplit(":", 1)[1]))
        return self.bootstrap

    def begin(self, kind: str) -> bool:
        pid = local_kafka.running_pid(self.settings)
        assert pid is not None, "the broker is not running"
        if kind == "kill9":
            os.kill(pid, signal.SIGKILL)
            assert process.wait_gone(pid, local_kafka.MARKER, 20.0)
        elif kind == "sigterm":
            assert local_kafka.stop(self.settings)
        else:
            os.kill(pid, signal.SIGSTOP)
        return True

    def end(self, kind: str) -> None:
        if kind == "pause":
            pid = local_kafka.running_pid(self.settings)
            assert pid is not None
            os.kill(pid, signal.SIGCONT)
        else:
            local_kafka.start(self.settings, ports=self.ports)

    def stop(self) -> None:
        local_kafka.stop(self.settings)


@dataclass
class Redis:
    """The run's own redis-server (AOF, appendfsync always); restarts keep port and data."""

    settings: Settings
    name: str = "redis"

    def start(self) -> redis_server.RedisAddresses:
        return redis_server.start(self.settings)

    def begin(self, kind: str) -> bool:
        pid = redis_server.running_pid(self.settings)
        assert pid is not None, "redis is not running"
        if kind == "kill9":
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while redis_server.running_pid(self.settings) is not None:
                assert time.monotonic() < deadline, "redis did not die on SIGKILL"
                time.sleep(0.05)
        elif kind == "sigterm":
            assert redis_server.stop(self.settings)
        else:
            os.kill(pid, signal.SIGSTOP)
        return True

    def end(self, kind: str) -> None:
        if kind == "pause":
            pid = redis_server.running_pid(self.settings)
            assert pid is not None
            os.kill(pid, signal.SIGCONT)
        else:
            redis_server.restart(self.settings)

    def stop(self) -> None:
        redis_server.stop(self.settings)

"""`docker compose` on the test project, bounded; what a project leaves on the engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tests" / "compose" / "standins" / "build.sh"
PROJECT = "prism-compose-test"
SASL = ("-f", "docker-compose.yml", "-f", "deploy/compose.sasl.yml")
BASE = ("-f", "docker-compose.yml")
# Edges keep reading their local logs (20000 events) for the whole test: 1000 s at 20/s.
ENV = {"EDGE_EVENTS": "20000", "EDGE_RATE": "20", "REPLAY_RATE": "2000"}


@dataclass
class Compose:
    """``docker compose -p PROJECT`` with a bounded timeout on every call."""

    files: tuple[str, ...] = BASE
    env: dict[str, str] = field(default_factory=dict)
    #: anonymous volumes of containers that ``down`` (without -v) orphans
    volumes: set[str] = field(default_factory=set)

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        cmd = ["docker", "compose", "-p", PROJECT, *self.files, *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        try:
            done = subprocess.run(
                cmd,
                cwd=ROOT,
                env={**env, **ENV, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(cmd)} took over {timeout} s\n{self.logs()}") from e
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
                f"\n{self.logs()}"
            )
        return done.stdout

    def logs(self) -> str:
        cmd = ["docker", "compose", "-p", PROJECT, *self.files, "logs", "--tail", "25"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
        return out.stdout[-6000:]

    def ps(self) -> list[dict]:
        out = self("ps", "-a", "--format", "json", timeout=60)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_healthy(self, services: set[str], timeout: float = 240) -> list[dict]:
        """Poll until every named service runs healthy (or, one-shot, exited 0)."""
        deadline = time.monotonic() + timeout
        while True:
            ps = self.ps()
            if _all_healthy(ps, services):
                return ps
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy within {timeout} s: {_states(ps)}")
            time.sleep(2)

    def remember_volumes(self) -> None:
        """The anonymous volumes of the project's containers (`down -v` after a plain
        `down` + `up` no longer knows the first ones)."""
        ids = self("ps", "-a", "-q", timeout=60).split()
        if ids:
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{json .Mounts}}", *ids],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            for line in out.stdout.splitlines():
                self.volumes |= {m["Name"] for m in json.loads(line) if m["Type"] == "volume"}

    def destroy(self) -> None:
        """`down -v` for every profile, then the orphaned anonymous volumes."""
        self.remember_volumes()
        self("--profile", "*", "down", "-v", "--remove-orphans", "-t", "10", timeout=180)
        for name in sorted(self.volumes):
            subprocess.run(
                ["docker", "volume", "rm", "-f", name], capture_output=True, timeout=60, check=False
            )


ONE_SHOTS = {"topics", "keys", "kafka-format"}


def _all_healthy(ps: list[dict], services: set[str]) -> bool:
    seen = {c["Service"] for c in ps}
    if not services <= seen:
        return False
    for c in ps:
        if c["Service"] not in services:
            continue
        if c["Service"] in ONE_SHOTS:
            if c["State"] != "exited" or c["ExitCode"] != 0:
                return False
        elif c["State"] != "running" or c["Health"] not in ("healthy", ""):
            return False
    return True


def _states(ps: list[dict]) -> str:
    return ", ".join(f"{c['Name']}={c['State']}/{c['Health'] or '-'}/{c['ExitCode']}" for c in ps)


def leftovers() -> dict[str, list[str]]:
    """Containers, networks and named volumes of the test project still on the engine."""
    label = f"label=com.docker.compose.project={PROJECT}"
    out = {}
    for kind, cmd in {
        "containers": ["docker", "ps", "-a", "-q", "--filter", label],
        "networks": ["docker", "network", "ls", "-q", "--filter", label],
        "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
    }.items():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
        out[kind] = done.stdout.split()
    return out

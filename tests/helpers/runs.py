"""Whole-service runs for the reliability tests: logs, CLI processes, progress on a topic."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from helpers.services import service_env
from prism.cli import main
from runtime.settings import Settings
from schemas.eventlog import read_events


def datagen_log(tmp_path: Path, name: str, events: int, seed: int, labels: str = "late") -> Path:
    """A fraud log of ``events`` transactions (4 sites) with their labels."""
    path = tmp_path / f"{name}.avro"
    args = ["datagen", "fraud", "--events", str(events), "--sites", "4", "--regions", "1",
            "--seed", str(seed), "--fraud-rate", "0.05", "--labels", labels,
            "--out", str(path)]  # fmt: skip
    assert main(args) == 0
    return path


def event_ids(path: Path) -> list[str]:
    return [e.record["event_id"] for e in read_events(path) if e.record_type == "Transaction"]


STARTED: list[subprocess.Popen] = []  # killed after each test by :func:`kill_leftovers`


def kill_leftovers() -> None:
    """Kill what a (failed) test left running, so it cannot disturb the next tests."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start_cli(
    settings: Settings, tmp_path: Path, name: str, *args: str, **env: str
) -> subprocess.Popen:
    """``prism ARGS`` against ``settings`` plus ``env``; output goes to ``tmp_path/NAME.log``."""
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism.cli", *args],
        env=service_env(settings) | {"PRISM_REDIS_PREFIX": settings.redis_prefix} | env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log  # type: ignore[attr-defined]
    STARTED.append(proc)
    return proc


def wait_records(bootstrap: str, topic: str, at_least: int, timeout: float = 60.0) -> None:
    """Wait until ``topic`` (3 partitions) holds ``at_least`` records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), 5)
                         for p in range(3)]  # fmt: skip
            except KafkaException:  # the broker restarting, a leader not yet known: ask again
                marks = []
            if sum(hi for _lo, hi in marks) >= at_least:
                return
            time.sleep(0.2)
    finally:
        consumer.close()
    raise AssertionError(f"fewer than {at_least} records on {topic} after {timeout} s")

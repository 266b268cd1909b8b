"""Helpers for tests that run Prism services as real processes on the session stack.

Imported as ``helpers.services`` (pytest puts ``tests/`` on the path); the
``spawn`` fixture is re-exported by the integration conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from runtime.settings import Settings
from schemas import Codec


def service_env(settings: Settings) -> dict[str, str]:
    """The environment a Prism process needs to find the test's stack and topics."""
    env = dict(os.environ)
    env.update(
        PRISM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        PRISM_REDIS_URL=settings.redis_url.get_secret_value() if settings.redis_url else "",
        PRISM_TOPIC_PREFIX=settings.topic_prefix,
        PRISM_STATE_DIR=str(settings.state_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def spawn(test_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``python -m prism ARGS...`` against the test stack; killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, log_name: str | None = None) -> subprocess.Popen:
        log = tmp_path / (log_name or f"proc-{len(procs)}.log")
        proc = subprocess.Popen(
            [sys.executable, "-m", "prism", *args],
            env=service_env(test_settings),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def produce_at(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> list[int]:
    """Produce (key, value) pairs in order, idempotently; the offset each landed at."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    offsets: list[int] = [-1] * len(items)

    def done(i: int):
        return lambda err, msg: offsets.__setitem__(i, msg.offset() if err is None else -2)

    for i, (key, value) in enumerate(items):
        producer.produce(topic, value, key=key, on_delivery=done(i))
    assert producer.flush(30) == 0
    assert min(offsets) >= 0, offsets
    return offsets


def wait_exit(proc: subprocess.Popen, timeout: float = 180.0) -> int:
    """Wait for a bounded run; on timeout kill it and fail with its log tail."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        tail = Path(proc.log_path).read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
        raise AssertionError(f"process did not finish in {timeout} s; log tail:\n{tail}") from None


def read_topic(bootstrap: str, topic: str, partitions: int = 3) -> list[tuple[int, int, Any, Any]]:
    """Every message of ``topic`` up to its current end: (partition, offset, key, value)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
         "enable.auto.commit": False}
    )  # fmt: skip
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        for p in range(partitions)
    }
    consumer.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items() if hi > lo])
    out: list[tuple[int, int, Any, Any]] = []
    want = sum(hi - lo for lo, hi in ends.values())
    deadline = time.monotonic() + 60
    while len(out) < want and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                out.append((m.partition(), m.offset(), m.key(), m.value()))
    consumer.close()
    assert len(out) == want, f"read {len(out)} of {want} messages from {topic}"
    return sorted(out, key=lambda r: (r[0], r[1]))


def decoded(bootstrap: str, topic: str) -> list[tuple[int, int, dict]]:
    codec = Codec()
    return [(p, o, codec.decode(v)) for p, o, _, v in read_topic(bootstrap, topic)]


def global_versions(bootstrap: str, topic: str, partitions: int = 3) -> list[Any]:
    """Every global version on ``topic``, decoded as a node does: whole versions, and deltas
    added to the version before (one GlobalModelInfo per model and version, in order)."""
    from models.serialization import global_model_from_record

    codec = Codec()
    rows = sorted(
        ((codec.decode(v), k) for _p, _o, k, v in read_topic(bootstrap, topic, partitions)),
        key=lambda rk: (rk[0]["model_name"], rk[0]["version"], rk[0]["delta_from"]),
    )
    held: dict[str, Any] = {}
    out: dict[tuple[str, int], Any] = {}
    for record, _key in rows:
        name = record["model_name"]
        if (name, record["version"]) in out:
            continue  # the same version whole and by id
        info = global_model_from_record(record, held=held.get(name))
        held[name] = info.summary
        out[(name, info.version)] = info
    return list(out.values())


class TopicWatch:
    """Every record of a topic that is still being written, read on as it grows."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 3) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watch",
                                  "enable.auto.commit": False})  # fmt: skip
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.codec = Codec()
        self.records: list[dict] = []

    def all(self) -> list[dict]:
        """What arrived so far (one short read while producers go on writing)."""
        batch = self.consumer.consume(5000, timeout=0.5)
        while batch:
            self.records += [self.codec.decode(m.value()) for m in batch if m.error() is None]
            batch = self.consumer.consume(5000, timeout=0.1) if len(batch) == 5000 else []
        return self.records


def wait_for_log(proc: subprocess.Popen, text: str, timeout: float = 60.0) -> None:
    """Poll a process's log until ``text`` appears (the process is up to that point)."""
    deadline = time.monotonic() + timeout
    path = Path(proc.log_path)  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, f"process exited ({proc.returncode}) before logging {text!r}"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log after {timeout} s")

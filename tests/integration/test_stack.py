"""The local stack against the real broker and Redis: nothing here is a stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from prism.settings import Settings
from prism.stack import process
from prism.stack.state import read_env_file
from prism.stack.topics import TOPICS, create_topics
from schemas import Codec

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got, deadline = [], time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.append(msg)
    finally:
        consumer.close()
    return got


def test_thousands_of_messages_round_trip(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    n = 5000
    for i in range(n):
        producer.produce(topic, key=f"k{i % 17}".encode(), value=f"v{i}".encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    got = _consume_all(kafka_bootstrap, topic, n)
    assert sorted(m.value().decode() for m in got) == sorted(f"v{i}" for i in range(n))
    # Per-key order is Kafka's promise within a partition: check it survived.
    by_key: dict[bytes, list[int]] = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(seq == sorted(seq) for seq in by_key.values())


def test_encoded_events_round_trip_through_kafka(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)
    codec = Codec()
    events = [
        {"event_id": f"e{i}", "ts": 1_700_000_000_000 + i, "site_id": f"s{i % 5}",
         "region": "eu", "device_id": f"d{i % 7}", "features": {"rms": i / 7.0, "temp": 40.0},
         "label": (i % 50 == 0) or None}
        for i in range(3000)
    ]  # fmt: skip
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for event in events:
        producer.produce(
            topic, key=event["site_id"].encode(), value=codec.encode("SensorReading", event)
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    got = _consume_all(kafka_bootstrap, topic, len(events))
    decoded = [codec.decode(m.value(), expected="SensorReading") for m in got]
    assert sorted(decoded, key=lambda e: e["ts"]) == events


def test_redis_password_and_read_only_query_user(
    redis_client: redis.Redis, redis_url: str, redis_query_url: str
) -> None:
    redis_client.set("prism:test:key", b"value")
    assert redis_client.get("prism:test:key") == b"value"
    anonymous = redis.Redis.from_url("redis://" + redis_url.rsplit("@", 1)[1])
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("prism:test:key")
    reader = redis.Redis.from_url(redis_query_url)
    assert reader.get("prism:test:key") == b"value"
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("prism:test:key", b"overwritten")
    assert redis_client.get("prism:test:key") == b"value"


def test_topics_create_makes_every_topic_and_is_idempotent(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = Settings(topic_prefix="ttopics.", state_dir=tmp_path)
    first = create_topics(settings, bootstrap=kafka_bootstrap, partitions=2)
    assert set(first) == {f"ttopics.{name}" for name in TOPICS}
    assert set(first.values()) == {"created"}
    assert set(create_topics(settings, bootstrap=kafka_bootstrap).values()) == {"exists"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert all(len(metadata.topics[t].partitions) == 2 for t in first)
    resource = ConfigResource(ConfigResource.Type.TOPIC, "ttopics.global-model")
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def _prism(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_STATE_DIR"] = str(tmp_path / "state")
    up = _prism(env, "stack", "up")
    assert up.returncode == 0, up.stderr
    lines = dict(line.split("=", 1) for line in up.stdout.splitlines())
    assert set(lines) == {"PRISM_KAFKA_BOOTSTRAP", "PRISM_REDIS_URL", "PRISM_REDIS_QUERY_URL"}
    assert read_env_file(tmp_path / "state" / "stack.env") == lines
    pids = [int((tmp_path / "state" / name / "pid").read_text()) for name in ("kafka", "redis")]
    try:
        status = _prism(env, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "metadata ok" in status.stdout and "PING ok" in status.stdout
        again = _prism(env, "stack", "up")
        assert "started nothing" in again.stderr
        topics = _prism(env, "topics", "create")
        assert topics.returncode == 0 and "prism.global-model" in topics.stdout
    finally:
        down = _prism(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(process.is_alive(pid, "") for pid in pids)
    assert not (tmp_path / "state" / "stack.env").exists()
    assert _prism(env, "stack", "status").returncode != 0


def test_cli_up_starts_nothing_when_addresses_are_given(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env |= {
        "PRISM_STATE_DIR": str(tmp_path / "state"),
        "PRISM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PRISM_REDIS_URL": redis_url,
    }
    up = _prism(env, "stack", "up")
    assert up.returncode == 0, up.stderr
    assert f"PRISM_KAFKA_BOOTSTRAP={kafka_bootstrap}" in up.stdout
    assert "started nothing" in up.stderr
    assert not (tmp_path / "state" / "kafka").exists()
    assert not (tmp_path / "state" / "redis").exists()

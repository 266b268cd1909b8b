"""The local stack against the real broker and Redis: nothing here is a stand-in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from prism.stack import kafka, process, redis_server
from prism.stack.ports import free_port
from prism.stack.state import read_env_file
from prism.stack.topics import OWN_PARTITIONS, TOPICS, create_topics
from runtime.settings import Settings
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
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.keys("*")  # @dangerous: a full scan could stall the registry
    assert list(reader.scan_iter(match="prism:test:key")) == [b"prism:test:key"]
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
    # every topic gets the partitions asked for, but those with a count of their own (the
    # routed secure-round records: a partition per receiver group)
    want = {
        f"ttopics.{name}": getattr(settings, OWN_PARTITIONS[name]) if name in OWN_PARTITIONS else 2
        for name in TOPICS
    }
    assert {t: len(metadata.topics[t].partitions) for t in first} == want
    assert want["ttopics.secagg-routed"] == settings.secagg_routed_partitions != 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, "ttopics.global-model")
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def _prism(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _clean_env(state_dir: Path) -> dict[str, str]:
    """The test process's environment without any PRISM_* a developer may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_STATE_DIR"] = str(state_dir)
    return env


def test_cli_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = _clean_env(state)
    up = _prism(env, "stack", "up")
    assert up.returncode == 0, up.stderr
    lines = dict(line.split("=", 1) for line in up.stdout.splitlines())
    assert set(lines) == {"PRISM_KAFKA_BOOTSTRAP", "PRISM_REDIS_URL", "PRISM_REDIS_QUERY_URL"}
    assert read_env_file(state / "stack.env") == lines
    kafka_pid, redis_pid = (int((state / name / "pid").read_text()) for name in ("kafka", "redis"))
    try:
        status = _prism(env, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "metadata ok" in status.stdout and "PING ok" in status.stdout
        assert lines["PRISM_REDIS_URL"].rsplit("@", 1)[0] not in status.stdout  # no password
        again = _prism(env, "stack", "up")
        assert again.returncode == 0 and "started nothing" in again.stderr
        assert "already running: kafka, redis" in again.stderr
        assert dict(line.split("=", 1) for line in again.stdout.splitlines()) == lines
        topics = _prism(env, "topics", "create")
        assert topics.returncode == 0 and "prism.global-model" in topics.stdout
        listed = _prism(env, "topics", "list")
        assert listed.returncode == 0 and "prism.dead-letter" in listed.stdout

        # A dead component makes status fail, and `up` restarts only that one.
        process.kill(redis_pid, redis_server.MARKER)
        broken = _prism(env, "stack", "status")
        assert broken.returncode == 1 and "no PING answer" in broken.stdout
        healed = _prism(env, "stack", "up")
        assert healed.returncode == 0, healed.stderr
        assert "started redis" in healed.stderr and "already running: kafka" in healed.stderr
        redis_pid = int((state / "redis" / "pid").read_text())
        assert _prism(env, "stack", "status").returncode == 0
    finally:
        down = _prism(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stderr and "redis" in down.stderr
    assert not process.is_alive(kafka_pid, "") and not process.is_alive(redis_pid, "")
    assert not (state / "stack.env").exists()
    assert _prism(env, "stack", "status").returncode != 0
    again = _prism(env, "stack", "down")
    assert again.returncode == 0 and "stopped nothing" in again.stderr


def test_cli_up_starts_nothing_when_addresses_are_given(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    env = _clean_env(tmp_path / "state")
    env |= {"PRISM_KAFKA_BOOTSTRAP": kafka_bootstrap, "PRISM_REDIS_URL": redis_url}
    up = _prism(env, "stack", "up")
    assert up.returncode == 0, up.stderr
    assert f"PRISM_KAFKA_BOOTSTRAP={kafka_bootstrap}" in up.stdout
    assert f"PRISM_REDIS_URL={redis_url}" in up.stdout
    assert "started nothing" in up.stderr and "given by PRISM_* environment" in up.stderr
    assert not (tmp_path / "state" / "kafka").exists()
    assert not (tmp_path / "state" / "redis").exists()
    status = _prism(env, "stack", "status")
    assert status.returncode == 0, status.stdout


def test_json_outputs_have_their_documented_keys(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    """`stack status`, `topics list`, `ps` and `status` with --json (docs/cli.md)."""
    prefix = f"tjson{uuid.uuid4().hex[:6]}."
    env = _clean_env(tmp_path / "state")
    env |= {"PRISM_KAFKA_BOOTSTRAP": kafka_bootstrap, "PRISM_REDIS_URL": redis_url}
    env |= {"PRISM_TOPIC_PREFIX": prefix, "PRISM_PARTITIONS": "2"}
    component_keys = {"name", "healthy", "pid", "alive", "reachable", "address", "detail"}

    status = _prism(env, "stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {r["name"] for r in rows} == {"kafka", "redis"}
    assert all(set(r) == component_keys and r["healthy"] and r["alive"] is None for r in rows)
    assert next(r for r in rows if r["name"] == "kafka")["address"] == kafka_bootstrap

    assert _prism(env, "topics", "create").returncode == 0
    listed = _prism(env, "topics", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    ours = [t for t in json.loads(listed.stdout) if t["name"].startswith(prefix)]
    assert ours == sorted(
        (
            {
                "name": f"{prefix}{name}",
                "partitions": Settings.model_fields[OWN_PARTITIONS[name]].default
                if name in OWN_PARTITIONS
                else 2,
            }
            for name in TOPICS
        ),
        key=lambda t: t["name"],
    )

    ps = _prism(env, "ps", "--json")
    assert ps.returncode == 1 and json.loads(ps.stdout) == [] and "not up" in ps.stderr

    screen = _prism(env, "status", "--json")
    assert screen.returncode == 0, screen.stderr
    whole = json.loads(screen.stdout)
    assert set(whole) == {"stack", "services", "models", "shadow"} and whole["services"] is None
    assert [set(r) for r in whole["stack"]] == [component_keys] * 2
    assert isinstance(whole["models"], list) and isinstance(whole["shadow"], dict)

    env["PRISM_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens: down, and said so
    unreachable = _prism(env, "status", "--json")
    assert unreachable.returncode == 1
    down = json.loads(unreachable.stdout)
    assert down["models"] is None and down["shadow"] is None
    assert not next(r for r in down["stack"] if r["name"] == "redis")["healthy"]


def _unreachable_maven(home: Path) -> str:
    """MAVEN_OPTS for a Maven whose only repository is a closed port on this machine."""
    closed = free_port()
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text(
        "<settings><mirrors><mirror><id>nowhere</id><mirrorOf>*</mirrorOf>"
        f"<url>http://127.0.0.1:{closed}/maven2</url></mirror></mirrors></settings>"
    )
    return f"-Duser.home={home}"


def test_unreachable_maven_central_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "state")
    env["PRISM_CACHE_DIR"] = str(tmp_path / "cache")  # empty jar cache: must download
    env["MAVEN_OPTS"] = _unreachable_maven(tmp_path / "home")
    up = _prism(env, "stack", "up")
    assert up.returncode == 2, up.stdout + up.stderr
    assert "Maven Central" in up.stderr and "PRISM_KAFKA_BOOTSTRAP" in up.stderr
    assert "Traceback" not in up.stderr and up.stdout == ""
    assert not (tmp_path / "state" / "redis" / "pid").exists()  # nothing left running
    assert not (tmp_path / "cache" / "kafka-4.1.1" / "libs").exists()  # nothing half-done
    assert not (tmp_path / "state" / "stack.env").exists()


def test_kafka_start_retries_once_on_a_taken_port(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        try:
            bootstrap = kafka.start(settings, ports=(taken, free_port()))
            assert bootstrap != f"127.0.0.1:{taken}"
            assert kafka.metadata_ok(kafka.probe_client(bootstrap), timeout=10)
            log = (tmp_path / "state" / "kafka" / "logs" / "server.log").read_text()
            assert "Address already in use" in log and "Kafka Server started" in log
        finally:
            kafka.stop(settings)
    assert kafka.running_pid(settings) is None

"""`prism central reset` against the real broker and Redis: refused while the group
has a live member and without --yes, then it deletes exactly the group's checkpoints
(not a neighbour group's) and says what went; --delete-offsets drops the group's
committed Kafka offsets too."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

from models.specs import get_spec
from prism.cli import main
from runtime.model_registry.keys import RegistryKeys
from streams.central.checkpoint import CheckpointStore
from streams.central.partition import EventIn, PartitionLearner

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def checkpoint(client: redis.Redis, prefix: str, group: str, partitions: range) -> set[str]:
    """Real checkpoints (record, pending hash, recent list) of ``group``; their keys."""
    store = CheckpointStore(
        client, group=group, worker_id="w", event_schema="Transaction", keys=RegistryKeys(prefix)
    )
    learners = []
    for p in partitions:
        lr = PartitionLearner(get_spec("fraud-linear"), p, events_topic="tx", labels_topic="lb")
        records = [
            {"event_id": f"e{p}-{i}", "ts": T0 + i, "features": {"a": 0.5}} for i in range(5)
        ]
        lr.take_events([EventIn(i, r, b"raw") for i, r in enumerate(records)])
        learners.append(lr)
    store.save(learners)
    return {k.decode() for k in client.scan_iter(match=f"{prefix}:checkpoint:{group}:*")}


def member(bootstrap: str, group: str, topic: str) -> Consumer:
    """A live member of ``group``: subscribed and assigned (polled until it is)."""
    config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(config)
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.2)
    assert consumer.assignment(), "the consumer never joined its group"
    return consumer


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> str:
    prefix = f"reset{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("PRISM_REDIS_URL", redis_url)
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return prefix


def test_reset_refuses_a_live_group_and_no_yes_then_deletes_only_that_group(
    env: str,
    redis_client: redis.Redis,
    kafka_bootstrap: str,
    unique_topic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"prism-central-{uuid.uuid4().hex[:6]}"
    ours = checkpoint(redis_client, env, group, range(3))
    assert len(ours) == 9  # record + pending + recent for each partition
    neighbours = checkpoint(redis_client, env, f"{group}:x", range(2))
    neighbours |= checkpoint(redis_client, env, f"{group}x", range(1))
    every = ours | neighbours

    consumer = member(kafka_bootstrap, group, unique_topic(partitions=1))
    try:
        assert main(["central", "reset", "--group", group, "--yes"]) == 2
        err = capsys.readouterr().err
        assert "1 live member(s)" in err and "stop its workers first" in err
        assert "Traceback" not in err
        assert {k.decode() for k in redis_client.scan_iter(match=f"{env}:*")} == every
    finally:
        consumer.close()  # leaves the group at once

    assert main(["central", "reset", "--group", group]) == 2
    err = capsys.readouterr().err
    assert "refusing without --yes" in err and "partitions 0, 1, 2" in err
    assert {k.decode() for k in redis_client.scan_iter(match=f"{env}:*")} == every

    assert main(["central", "reset", "--group", group, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted 9 key(s): the checkpoints of partitions 0, 1, 2" in out
    assert "Kafka offsets kept" in out
    assert {k.decode() for k in redis_client.scan_iter(match=f"{env}:*")} == neighbours

    assert main(["central", "reset", "--group", group, "--yes"]) == 0
    assert "had no checkpoints" in capsys.readouterr().out


def test_reset_with_delete_offsets_drops_the_groups_committed_offsets(
    env: str,
    redis_client: redis.Redis,
    kafka_bootstrap: str,
    unique_topic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"prism-central-{uuid.uuid4().hex[:6]}"
    topic = unique_topic(partitions=1)
    checkpoint(redis_client, env, group, range(1))
    consumer = member(kafka_bootstrap, group, topic)
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()

    def committed() -> int:
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        try:
            return probe.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        finally:
            probe.close()

    assert committed() == 0
    assert main(["central", "reset", "--group", group, "--yes", "--delete-offsets"]) == 0
    out = capsys.readouterr().out
    assert "deleted 3 key(s)" in out and "committed Kafka offsets deleted" in out
    assert committed() == OFFSET_INVALID
    assert list(redis_client.scan_iter(match=f"{env}:*")) == []

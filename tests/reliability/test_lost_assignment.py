"""A central worker that *loses* its assignment (session timeout) scores nothing twice.

Found in test_broker_restart: with the broker down past the checkpoint's 30 s
flush, the worker lost its partitions holding a scored tail no checkpoint
covered; on reassignment it restored the older checkpoint and scored the tail
again (5,725 events twice in one run; docs/reliability.md, "A lost
assignment"). Here the loss is forced without a broker outage: the loop stops
polling past ``max.poll.interval.ms``, which librdkafka handles as it handles a
session timeout (the assignment is *lost*, ``on_lost``, not revoked).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer
from helpers.central import assert_checkpoint_matches, reference_models
from helpers.runs import datagen_log, event_ids
from helpers.services import decoded, read_topic

from prism.cli import main
from runtime.kafka_config import consumer_config
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import read_events
from streams.central.checkpoint import CheckpointStore
from streams.central.config import CentralConfig
from streams.central.intake import RecordIn
from streams.central.kafka_loop import KafkaLoop
from streams.central.partition import PartitionLearner
from streams.central.run import build_worker

pytestmark = pytest.mark.integration
CODEC = Codec()
POLL_LIMIT_MS = 6_000  # the broker's smallest session timeout; max.poll.interval >= it


def _config(group: str) -> CentralConfig:
    """Checkpoints only when the test asks: the tail after one is in no checkpoint."""
    return CentralConfig(
        task="fraud",
        group=group,
        worker_id="lost-1",
        checkpoint_every_events=10**9,
        checkpoint_every_s=3_600.0,
    )


def _replay(settings: Settings, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("PRISM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("PRISM_STATE_DIR", str(settings.state_dir))
    assert main(["replay", str(log), "--no-progress"]) == 0


def _step_until(loop: KafkaLoop, done: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f} s"
        loop.step()


def _caught_up(loop: KafkaLoop, ends: dict[int, int]) -> Callable[[], bool]:
    events = loop.worker.topics.events
    learners = loop.worker.learners
    return lambda: (
        set(learners) == set(ends)
        and all(learners[p].offsets.get(events, 0) >= end for p, end in ends.items())
    )


def _ends(settings: Settings) -> dict[int, int]:
    ends = {p: 0 for p in range(3)}
    for p, o, _k, _v in read_topic(settings.kafka_bootstrap or "", settings.topic("transactions")):
        ends[p] = max(ends[p], o + 1)
    return ends


def test_lost_then_reassigned_goes_on_from_memory_nothing_scored_twice(
    test_settings: Settings,
    prism_topics: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, group = test_settings, f"lost-{uuid.uuid4().hex[:8]}"
    first = datagen_log(tmp_path, "first", 300, 31, labels="inline")
    second = datagen_log(tmp_path, "second", 300, 32, labels="inline")
    worker = build_worker(settings, _config(group))
    consumer = Consumer(
        consumer_config(settings.kafka_bootstrap or "", group, "lost-1")
        | {"session.timeout.ms": POLL_LIMIT_MS, "max.poll.interval.ms": POLL_LIMIT_MS}
    )
    loop = KafkaLoop(worker, consumer)
    loop.subscribe()
    caplog.set_level(logging.INFO, logger="streams.central")
    try:
        _replay(settings, first, monkeypatch)
        _step_until(loop, _caught_up(loop, _ends(settings)), "caught up (first)", 90)
        worker.checkpoint()  # covers the first log
        _replay(settings, second, monkeypatch)
        _step_until(loop, _caught_up(loop, _ends(settings)), "caught up (second)", 90)
        assert worker.producer.flush(30) == 0  # the tail's scores are on the broker

        time.sleep(POLL_LIMIT_MS / 1000 + 2)  # no poll: librdkafka drops the assignment as lost
        lost = lambda: "partitions lost without a checkpoint" in caplog.text  # noqa: E731
        _step_until(loop, lost, "lost", 60)
        _step_until(loop, _caught_up(loop, _ends(settings)), "reassigned and caught up", 90)
        until = time.monotonic() + 2  # anything scored again would be by now
        while time.monotonic() < until:
            loop.step()
        worker.checkpoint()
    finally:
        consumer.close()

    boot = settings.kafka_bootstrap or ""
    scores = [r["event_id"] for _p, _o, r in decoded(boot, settings.topic("scores"))]
    assert Counter(scores) == Counter(event_ids(first) + event_ids(second))
    assert "from=memory" in caplog.text  # the tail came back from memory, not from Redis
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    learned = 0
    try:
        for p, ref in reference_models(settings).items():
            data = client.get(f"{settings.redis_prefix}:checkpoint:{group}:{p}")
            cp = CODEC.decode(data, expected="CentralCheckpoint")
            assert_checkpoint_matches(cp, ref)  # nothing learned twice or skipped
            learned += cp["counters"].get("learned", 0)
    finally:
        client.close()
    assert learned == 600


def _records(settings: Settings, log: Path, lo: int, hi: int) -> list[RecordIn]:
    """Events ``lo..hi`` of ``log`` as if consumed from partition 0 at those offsets."""
    txs = [e.record for e in read_events(log) if e.record_type == "Transaction"]
    topic = settings.topic("transactions")
    return [
        RecordIn(topic, 0, i, txs[i]["event_id"].encode(), CODEC.encode("Transaction", txs[i]))
        for i in range(lo, hi)
    ]


def test_a_lost_partition_checkpointed_meanwhile_is_restored_from_redis(
    test_settings: Settings, prism_topics: dict[str, str], tmp_path: Path
) -> None:
    """The learner kept after a loss goes on only while Redis holds this worker's last checkpoint;
    once another worker checkpointed the partition, that newer state is restored instead."""
    settings, group = test_settings, f"lost-{uuid.uuid4().hex[:8]}"
    log = datagen_log(tmp_path, "events", 120, 33, labels="inline")
    worker = build_worker(settings, _config(group))
    topic = worker.topics.events
    worker.assign({0})
    worker.process(_records(settings, log, 0, 50))
    worker.checkpoint()
    worker.process(_records(settings, log, 50, 100))  # a tail in no checkpoint
    held = worker.learners[0]

    worker.drop({0})
    assert 0 not in worker.learners
    worker.assign({0})  # nobody checkpointed meanwhile: the same learner, its tail kept
    assert worker.learners[0] is held and held.offsets[topic] == 100

    worker.drop({0})
    other = CheckpointStore(
        worker.store.client,
        group=group,
        worker_id="lost-2",
        event_schema=worker.config.event_schema,
        keys=worker.store.keys,
    )
    newer = PartitionLearner(worker.spec, 0, events_topic=topic, labels_topic=worker.topics.labels)
    assert other.load(newer)  # the other worker resumed from our checkpoint at 50 ...
    newer.offsets[topic] = 80  # ... and checkpointed further on
    other.save([newer])
    worker.assign({0})
    assert worker.learners[0] is not held and worker.learners[0].offsets[topic] == 80
    assert worker.producer.flush(30) == 0

"""Staged rollout (#27 item 3) on the real Kafka + Redis: a version that hurts the canaries
is rolled back before the other edges ever score with it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from helpers.runs import datagen_log
from helpers.services import TopicWatch

from models.canary import in_canary
from models.serialization import weight_summary_record
from models.specs import get_spec
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import read_events

pytestmark = pytest.mark.integration
CODEC = Codec()
NAME = "fraud-linear"
CANARIES, OTHERS = ("s3", "s4"), ("s1", "s2")


def _poison(log: Path, nodes: str) -> list[bytes]:
    """Updates learned on the log's events with every label flipped: a harmful round."""
    spec = get_spec(NAME)
    events = [e.record for e in read_events(log) if e.record_type == "Transaction"][:3000]
    out = []
    for i, node in enumerate(nodes):
        model = spec.new_model()
        for r in events[i::3] * 4:
            if r.get("label") is not None:
                spec.learn_one(model, r["features"], not r["label"])
        s = spec.summarize(model).with_provenance(node_id=node, sequence=1, base_version=0)
        record = weight_summary_record(s, tier="edge", created_at_ms=1)
        out.append(CODEC.encode("WeightSummary", record))
    return out


def _wait(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_a_version_that_hurts_the_canaries_never_reaches_the_others(
    test_settings: Settings, prism_topics, spawn, tmp_path: Path
) -> None:
    assert all(in_canary(n, 0.5) for n in CANARIES)
    assert not any(in_canary(n, 0.5) for n in OTHERS)
    s, boot = test_settings, test_settings.kafka_bootstrap or ""
    client = redis.Redis.from_url(s.redis_url.get_secret_value())  # type: ignore[union-attr]
    log = datagen_log(tmp_path, "events", 20000, seed=5, labels="inline")
    merger = spawn("merger", "run", "--round-size", "100", "--round-timeout", "3",
                   "--group", "gcanary", "--canary", "0.5", "--canary-min-events", "100",
                   log_name="merger.log")  # fmt: skip
    for node in CANARIES + OTHERS:
        spawn("edge", "run", "--node", node, "--source", str(log), "--state-dir",
              str(tmp_path / node), "--rate", "40", "--summary-every", "100,2s",
              log_name=f"{node}.log")  # fmt: skip
    scores = TopicWatch(boot, prism_topics["scores"])
    lifecycle = TopicWatch(boot, prism_topics["lifecycle"])
    _wait("a version promoted by the canaries",
          lambda: [e for e in lifecycle.all() if e["action"] == "promoted"])  # fmt: skip

    producer = Producer({"bootstrap.servers": boot, "enable.idempotence": True})
    for value in _poison(log, "abc"):
        producer.produce(prism_topics["model-updates"], value, key=b"poison")
    assert producer.flush(30) == 0

    def poisoned() -> int | None:
        history = [CODEC.decode(v) for v in client.lrange(f"prism:model:{NAME}:history", 0, -1)]
        found = [
            r["version"] for r in history if any(c["node_id"] == "a" for c in r["contributors"])
        ]
        return found[0] if found else None

    bad = _wait("the poisoned round's version", poisoned)
    rolled = _wait(
        f"version {bad} rolled back by the canaries' verdict",
        lambda: [
            e for e in lifecycle.all() if e["action"] == "rolled-back" and e["version"] == bad
        ],  # fmt: skip
    )
    assert rolled[0]["reason_code"] == "canary" and "worse by" in rolled[0]["reason"]
    (out,) = [e for e in lifecycle.all() if e["action"] == "canary" and e["version"] == bad]
    took_s = (rolled[0]["at"] - out["at"]) / 1000
    print(f"version {bad} to the canaries -> rolled back: {took_s:.1f} s")
    time.sleep(3)  # the others go on scoring meanwhile
    seen = scores.all()
    assert [r for r in seen if r["node_id"] in CANARIES and r["model_version"] == bad]
    assert not [r for r in seen if r["node_id"] in OTHERS and r["model_version"] == bad]
    assert {r["node_id"] for r in seen if r["model_version"] > bad} >= set(OTHERS)  # moved on
    assert not [e for e in lifecycle.all() if e["action"] == "promoted" and e["version"] == bad]
    merger.terminate()
    scores.consumer.close()
    lifecycle.consumer.close()

"""The holdout and the quality gate of `prism merger run`, against the real Kafka + Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import replace

import numpy as np
import pytest
import redis
from confluent_kafka import Producer
from helpers.services import decoded, read_topic, service_env, wait_exit

from models.serialization import global_model_from_record, weight_summary_record
from models.specs import get_spec
from models.summary import Summary
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
SPEC = get_spec("fraud-linear")
N = 200  # events per update


def local(node: str, seq: int, base: int, *, flipped: bool = False) -> Summary:
    rng, model = np.random.default_rng(seq * 1000 + ord(node)), SPEC.new_model()
    for _ in range(N):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=base)
    if flipped:  # poisoned: every weight's sign turned (fedavg does not screen)
        s = replace(s, tensors={**s.tensors, "weights": -s.tensor("weights")})
    return s


def transaction(i: int, rng: np.random.Generator, *, labelled: bool = True) -> dict:
    x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
    return {
        "event_id": f"h{i}",
        "ts": 1_700_000_000_000 + i,
        "site_id": "holdout",
        "region": "eu",
        "account_id": "acc",
        "merchant_id": "m",
        "amount": abs(x["amount"]),
        "features": x,
        "label": bool(x["amount"] > 3.4) if labelled else None,
    }


def send(settings: Settings, topic: str, values: list[bytes], key: bytes = b"one") -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for v in values:
        producer.produce(topic, v, key=key)
    assert producer.flush(30) == 0


def updates(*summaries: Summary) -> list[bytes]:
    return [
        CODEC.encode("WeightSummary", weight_summary_record(s, tier="edge", created_at_ms=1))
        for s in summaries
    ]


def merger(spawn, log_name: str):
    return spawn(
        "merger", "run", "--round-size", "3", "--round-timeout", "600", "--idle-exit", "4",
        "--group", "ggate", "--holdout-topic", "holdout", "--quality-gate", "0.05",
        log_name=log_name,
    )  # fmt: skip


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


def test_a_poisoned_round_is_held_back_and_the_next_good_one_published(
    isolated: Settings, prism_topics, spawn
) -> None:
    s, topic = isolated, prism_topics["model-updates"]
    rng = np.random.default_rng(7)
    holdout = [transaction(i, rng, labelled=i % 50 != 0) for i in range(400)]
    send(s, prism_topics["holdout"], [CODEC.encode("Transaction", t) for t in holdout])
    send(s, prism_topics["holdout"], [b"\x00 not avro"])  # a bad holdout record: dead letter
    send(s, topic, updates(*(local(n, 1, 0) for n in "abc")))
    send(s, topic, updates(*(local(n, 2, 1, flipped=True) for n in "abc")))
    assert wait_exit(merger(spawn, "gate1.log")) == 0

    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    history_key = f"{s.redis_prefix}:model:fraud-linear:history"
    records = [CODEC.decode(v) for v in client.lrange(history_key, 0, -1)]
    assert [(r["version"], r["held_back"] is not None) for r in records] == [(2, True), (1, False)]
    held, v1 = records
    assert held["metrics"]["holdout_roc_auc"] < 0.5 < 0.9 < v1["metrics"]["holdout_roc_auc"]
    assert held["metrics"]["holdout_n"] == v1["metrics"]["holdout_n"] == 392  # labelled ones
    assert held["metrics"]["published_roc_auc"] == pytest.approx(v1["metrics"]["holdout_roc_auc"])
    assert "roc_auc" in held["held_back"] and held["signature"] is None
    current = CODEC.decode(client.get(f"{s.redis_prefix}:model:fraud-linear:current"))
    assert current["version"] == 1
    boot = s.kafka_bootstrap or ""
    on_topic = read_topic(boot, prism_topics["global-model"])
    assert sorted(CODEC.decode(v)["version"] for *_, v in on_topic) == [1]  # never version 2
    (event,) = [r for _, _, r in decoded(boot, prism_topics["lifecycle"])]
    assert (event["model_name"], event["version"], event["published_version"]) == (
        "fraud-linear",
        2,
        1,
    )
    assert (event["action"], event["reason_code"]) == ("held-back", "quality-gate")
    assert event["reason"] == held["held_back"] and event["metrics"]["holdout_roc_auc"] < 0.5
    dead = [r for _, _, r in decoded(boot, prism_topics["dead-letter"])]
    assert [(d["topic"], d["reason_code"]) for d in dead] == [
        (prism_topics["holdout"], "bad-marker")
    ]

    # a restart: the next good round is version 3 (2 is taken), merged on the published 1
    send(s, topic, updates(*(local(n, 3, 1) for n in "abc")))
    assert wait_exit(merger(spawn, "gate2.log")) == 0
    v3 = global_model_from_record(
        CODEC.decode(client.get(f"{s.redis_prefix}:model:fraud-linear:current"))
    )
    assert (v3.version, v3.parent_version) == (3, 1)
    assert v3.summary.n_samples == 6 * N  # rounds 1 and 3; the held round's never
    assert v3.metrics["holdout_roc_auc"] > 0.9

    rows = _history(s)
    assert [(r["version"], r["status"]) for r in rows] == [
        (3, "published"),
        (2, "held-back"),
        (1, "published"),
    ]
    assert all(r["holdout_metric"] == "roc_auc" for r in rows)
    assert rows[1]["holdout"] < 0.5 < rows[0]["holdout"] and rows[1]["held_back"]
    assert rows[0]["held_back"] is None
    text = _history(s, as_json=False)
    assert "held-back" in text and "roc_auc=" in text


def _history(s: Settings, *, as_json: bool = True):
    url = s.redis_query_url
    assert url is not None
    env = service_env(s) | {
        "PRISM_REDIS_QUERY_URL": url.get_secret_value(),
        "PRISM_REDIS_PREFIX": s.redis_prefix,
    }
    out = subprocess.run(
        [sys.executable, "-m", "prism.cli", "models", "history", "fraud-linear"]
        + (["--json"] if as_json else []),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if as_json else out.stdout

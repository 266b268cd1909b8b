"""`prism merger run` against the real local Kafka + Redis."""

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
from helpers.services import decoded, global_versions, read_topic, service_env, wait_exit

from models.serialization import global_model_from_record, weight_summary_record
from models.specs import get_spec
from models.summary import Summary
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
SPEC = get_spec("fraud-linear")
KEY = b"one-partition"  # every test update on one partition: a deterministic order
N = 300  # events per update: enough that honest nodes agree on the weights' direction


def local(node: str, seq: int, base: int, *, poisoned: bool = False, draws: int = 0) -> Summary:
    # honest nodes of one round learn alike (same draws): screening judges the update's
    # direction against the round's median, and tiny independent models would disagree
    rng = np.random.default_rng(draws or seq)
    model = SPEC.new_model()
    for _ in range(N):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=base)
    if poisoned:
        s = replace(s, tensors={**s.tensors, "weights": s.tensor("weights") * 500.0})
    return s


def message(s: Summary, *, by_id: bool = False) -> bytes:
    record = weight_summary_record(
        s, tier="edge", created_at_ms=1_700_000_000_000 + s.sequence, with_layout=not by_id
    )
    return CODEC.encode("WeightSummary", record)


def send(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for v in values:
        producer.produce(topic, v, key=KEY)
    assert producer.flush(30) == 0


def globals_by_key(s: Settings, topic: str) -> dict[str, list[tuple[int, bool, int]]]:
    """Per key of the global-model topic: (version, layout sent whole, delta from)."""
    out: dict[str, list[tuple[int, bool, int]]] = {}
    for _, _, key, value in read_topic(s.kafka_bootstrap or "", topic):
        r = CODEC.decode(value)
        out.setdefault(key.decode(), []).append(
            (r["version"], r["state"]["packed"]["layout"] is not None, r["delta_from"])
        )
    return {k: sorted(v) for k, v in out.items()}


def merger(spawn, *extra: str, log_name: str):
    return spawn(
        "merger",
        "run",
        "--strategy",
        "async:max_staleness=1,screen=true",
        "--round-size",
        "6",
        "--round-timeout",
        "600",
        "--idle-exit",
        "4",
        "--group",
        "gmerge",
        *extra,
        log_name=log_name,
    )


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    """A Redis key prefix of the test's own: the global model 'fraud-linear' is shared."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


def test_rounds_dedup_staleness_screening_and_a_restart(
    isolated: Settings, prism_topics, spawn
) -> None:
    s, topic = isolated, prism_topics["model-updates"]
    topic_g = prism_topics["global-model"]
    nodes = "abcdef"
    round1 = [local(n, 1, 0) for n in nodes]
    round2 = [local(n, 2, 1) for n in "abdef"] + [local("c", 3, 1)]
    # round 3: c's skipped sequence 2 arrives late (out of order, counts once); g is too
    # stale (base 0 at version 2, bound 1); "evil" sends weights x500 (screened out)
    round3 = [
        local("c", 2, 1, draws=3),
        local("g", 1, 0, draws=3),
        local("evil", 1, 2, poisoned=True, draws=3),
    ] + [local(n, 3, 2) for n in "abd"]
    send(s, topic, [message(x) for x in round1])
    send(s, topic, [message(round1[0]), b"\x00 not avro"])  # a duplicate and garbage
    send(s, topic, [message(x) for x in round2 + round3])
    first = merger(spawn, log_name="merger1.log")
    assert wait_exit(first) == 0

    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    history = [
        global_model_from_record(CODEC.decode(v))
        for v in client.lrange(f"{s.redis_prefix}:model:fraud-linear:history", 0, -1)
    ]
    assert [h.version for h in history] == [3, 2, 1]  # one version per round
    v1, v2, v3 = reversed(history)
    assert {c.node_id for c in v1.contributors} == set(nodes)
    assert {(c.node_id, c.sequence) for c in v2.contributors} == {
        *((n, 2) for n in "abdef"),
        ("c", 3),
    }
    assert {(c.node_id, c.sequence) for c in v3.contributors} == {
        ("c", 2),
        ("a", 3),
        ("b", 3),
        ("d", 3),
    }
    assert {e.node_id for e in v3.excluded} == {"g", "evil"}
    reasons = {e.node_id: e.reason for e in v3.excluded}
    assert "stale" in reasons["g"]
    contributed = [x for x in round1 + round2 + round3 if x.node_id not in ("g", "evil")]
    # exact statistics: every contributor's counts exactly once (the duplicate never)
    assert v3.summary.n_samples == N * len(contributed) == N * 16
    expected_count = sum(
        SPEC.algebra.align(x, v3.summary.features).tensor("count") for x in contributed
    )
    np.testing.assert_array_equal(v3.summary.tensor("count"), expected_count)

    dead = [r for _, _, r in decoded(s.kafka_bootstrap or "", prism_topics["dead-letter"])]
    assert [d["reason_code"] for d in dead] == ["bad-marker"]  # duplicates are counted only
    assert globals_by_key(s, prism_topics["global-model"]) == {
        "fraud-linear": [(2, False, 1), (3, False, 2)],  # deltas, the layout by id
        "fraud-linear@whole": [(1, True, 0)],  # the first version whole, layout and all
    }
    chain = {v.version: v.summary for v in global_versions(s.kafka_bootstrap or "", topic_g)}
    for h in history:  # the deltas add up to what the registry holds (float32 of the same)
        np.testing.assert_allclose(chain[h.version].tensor("weights"), h.summary.tensor("weights"),
                                   rtol=1e-6)  # fmt: skip
        assert chain[h.version].tensor("count").tolist() == h.summary.tensor("count").tolist()

    # a restart: old updates replayed again count nothing; the next round is version 4. Its
    # updates name their layout by id (the restarted merger holds its current global's), and
    # one names a layout it never saw: refused with its own reason
    round4 = [local(n, 4, 3) for n in "abcdef"]
    stranger = replace(local("h", 1, 3), params={**local("h", 1, 3).params, "lr": "0.5"})
    send(s, topic, [message(round1[1]), message(round3[0])]
         + [message(x, by_id=True) for x in [*round4, stranger]])  # fmt: skip
    assert wait_exit(merger(spawn, log_name="merger2.log")) == 0
    dead = [r for _, _, r in decoded(s.kafka_bootstrap or "", prism_topics["dead-letter"])]
    assert [d["reason_code"] for d in dead] == ["bad-marker", "unknown-layout"]
    assert "has not seen" in dead[-1]["reason"]
    v4 = global_model_from_record(
        CODEC.decode(client.get(f"{s.redis_prefix}:model:fraud-linear:current"))
    )
    assert v4.version == 4 and v4.parent_version == 3
    assert {(c.node_id, c.sequence) for c in v4.contributors} == {(n, 4) for n in "abcdef"}
    assert v4.summary.n_samples == N * (16 + 6)
    # a restarted merger sends its next version whole (nodes may hold a rounded copy)
    assert globals_by_key(s, prism_topics["global-model"])["fraud-linear@whole"] == [
        (1, True, 0),
        (4, True, 0),
    ]

    # what users query: the read-only user, through the CLI, as JSON
    query = _query_url(s)
    shown = _models(s, query, "show", "fraud-linear", "--json")
    assert shown["version"] == 4 and shown["state"]["n_samples"] == N * 22
    assert [h["version"] for h in _models(s, query, "history", "fraud-linear", "--json")] == [
        4,
        3,
        2,
        1,
    ]
    by_node = {n["node_id"]: n for n in _models(s, query, "nodes", "--json")}
    assert by_node["evil"]["excluded"] and by_node["evil"]["reason"]
    assert by_node["g"]["excluded"] and "stale" in by_node["g"]["reason"]
    assert by_node["a"]["last_sequence"] == 4 and not by_node["a"]["excluded"]
    reader = redis.Redis.from_url(query)
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set(f"{s.redis_prefix}:model:fraud-linear:current", b"overwritten")


def test_regional_tier_merges_each_region_first(isolated: Settings, prism_topics, spawn) -> None:
    s, topic = isolated, prism_topics["model-updates"]
    updates = []
    for i, region in enumerate(["eu", "eu", "us", "us"]):
        x = local(f"r{i}", 1, 0)
        record = weight_summary_record(x, tier="edge", region=region, created_at_ms=1)
        updates.append(CODEC.encode("WeightSummary", record))
    send(s, topic, updates)
    proc = spawn(
        "merger", "run", "--round-size", "2", "--tiers", "regional,global", "--idle-exit", "4",
        "--group", "gregion", log_name="regional.log",
    )  # fmt: skip
    assert wait_exit(proc) == 0
    client = redis.Redis.from_url(s.redis_url.get_secret_value())

    def current(name: str):
        return global_model_from_record(
            CODEC.decode(client.get(f"{s.redis_prefix}:model:{name}:current"))
        )

    eu, us, top = current("fraud-linear@region:eu"), current("fraud-linear@region:us"), None
    top = current("fraud-linear")
    assert {c.node_id for c in eu.contributors} == {"r0", "r1"}
    assert {c.node_id for c in us.contributors} == {"r2", "r3"}
    assert {c.node_id for c in top.contributors} == {"region:eu", "region:us"}
    assert top.summary.n_samples == 4 * N


def test_bad_flags_are_a_message_not_a_traceback(isolated: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prism.cli", "merger", "run", "--strategy", "nonsense"],
        env=service_env(isolated),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "unknown strategy" in out.stderr
    assert "Traceback" not in out.stderr


def _query_url(s: Settings) -> str:
    url = s.redis_query_url
    assert url is not None, "the stack fixture provides the read-only query user"
    return url.get_secret_value()


def _models(s: Settings, query_url: str, *args: str):
    env = service_env(s) | {
        "PRISM_REDIS_QUERY_URL": query_url,
        "PRISM_REDIS_PREFIX": s.redis_prefix,
    }
    out = subprocess.run(
        [sys.executable, "-m", "prism.cli", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)

"""Public-key identities against the real broker and Redis (issue #25, item 1).

The merger holds a trust file of PUBLIC keys only and signs every global with
its own private key. Each kind of bad update and bad global is refused with
its reason: unsigned, forged, tampered, replayed, revoked, expired, unknown
and wrong-node; a rotated node's two keys both verify during the overlap.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Producer
from helpers.runs import start_cli
from helpers.services import decoded, produce_at, read_topic, wait_exit

from models.serialization import (
    global_model_from_record,
    global_model_record,
    weight_summary_record,
)
from models.specs import get_spec
from runtime.settings import Settings
from schemas import Codec
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    parse_trust_file,
    trust_entry,
    write_private_key,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
CODEC = Codec()
SPEC = get_spec("fraud-linear")
K = {
    name: generate_private_key()
    for name in (
        "store-1",
        "store-1b",
        "store-2",
        "store-2-old",
        "revoked",
        "merger",
        "merger-old",
        "thief",
    )
}
TRUST = {
    "k-store-1": trust_entry(K["store-1"], ["store-1"], "2999-01-01"),
    "k-store-1b": trust_entry(K["store-1b"], ["store-1"], "2999-01-01"),  # rotation overlap
    "k-store-2": trust_entry(K["store-2"], ["store-*"], "2999-01-01"),
    "k-store-2-old": trust_entry(K["store-2-old"], ["store-2"], "2020-01-01"),
    "k-revoked": dict(trust_entry(K["revoked"], ["store-3"], "2999-01-01"),
                      revoked_at="2020-01-01T00:00:00Z", reason="laptop stolen"),
    "k-merger": trust_entry(K["merger"], ["global:*"], "2999-01-01"),
    "k-merger-old": dict(trust_entry(K["merger-old"], ["global:*"], "2999-01-01"),
                         revoked_at="2020-01-01T00:00:00Z", reason="rotated out"),
}  # fmt: skip


def signed(node: str, seq: int, key: str, private: str, **kw) -> bytes:
    return CODEC.encode(
        "WeightSummary", KeySigner(key, K[private]).sign(summary_record(node, seq, **kw))
    )


def summary_record(node: str, seq: int, n: int = 120, seed: int | None = None) -> dict:
    rng = np.random.default_rng(seed if seed is not None else seq)
    model = SPEC.new_model()
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=0)
    return weight_summary_record(s, tier="edge", created_at_ms=1_700_000_000_000 + seq)


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


def trust_file(tmp_path: Path) -> Path:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(TRUST))
    return path


def test_the_merger_takes_only_authentic_updates_and_signs_its_globals(
    isolated: Settings,
    prism_topics: dict[str, str],
    tmp_path: Path,
) -> None:
    s, topic, boot = isolated, prism_topics["model-updates"], isolated.kafka_bootstrap or ""
    honest = [
        (b"store-1", signed("store-1", 1, "k-store-1", "store-1")),
        (b"store-1", signed("store-1", 2, "k-store-1b", "store-1b")),  # the rotated key
        (b"store-2", signed("store-2", 1, "k-store-2", "store-2")),
    ]
    tampered = KeySigner("k-store-2", K["store-2"]).sign(summary_record("store-2", 4))
    tampered["state"]["n_samples"] *= 100
    abuse = [
        ("unsigned", b"store-2", CODEC.encode("WeightSummary", summary_record("store-2", 3))),
        ("bad-signature", b"store-2", signed("store-2", 4, "k-store-2", "thief")),  # forged
        ("bad-signature", b"store-2", CODEC.encode("WeightSummary", tampered)),
        ("unknown-key", b"store-2", signed("store-2", 5, "k-thief", "thief")),
        ("key-not-for-node", b"store-2", signed("store-2", 6, "k-store-1", "store-1")),
        ("replayed", b"store-1", signed("store-1", 1, "k-store-1", "store-1", seed=77)),
        ("revoked-key", b"store-3", signed("store-3", 1, "k-revoked", "revoked")),
        ("expired-key", b"store-2", signed("store-2", 7, "k-store-2-old", "store-2-old")),
    ]
    control = [(b"store-2", signed("store-2", 8, "k-store-2", "store-2", n=50))]
    items = honest + [(k, v) for _c, k, v in abuse] + control
    offsets = produce_at(s.kafka_bootstrap or "", topic, items)
    key_file = tmp_path / "merger.pem"
    write_private_key(key_file, K["merger"])
    merger = start_cli(s, tmp_path, "merger", "merger", "run", "--round-size", "1",
                   "--round-timeout", "600", "--idle-exit", "4", "--group", "gkeys",
                   PRISM_TRUST_FILE=str(trust_file(tmp_path)), PRISM_SIGNING_KEY_ID="k-merger",
                   PRISM_SIGNING_KEY_FILE=str(key_file))  # fmt: skip
    assert wait_exit(merger, timeout=180) == 0, Path(merger.log_path).read_text()[-3000:]

    dead = [r for _p, _o, r in decoded(boot, prism_topics["dead-letter"])]
    got = sorted((d["key"], d["offset"], d["reason_code"]) for d in dead)
    abuse_offsets = offsets[len(honest) : len(honest) + len(abuse)]
    assert got == sorted((k, o, c) for (c, k, _v), o in zip(abuse, abuse_offsets, strict=True))
    assert any("laptop stolen" in d["reason"] for d in dead if d["reason_code"] == "revoked-key")

    # the registry and the topic hold globals signed by the merger, and only honest content
    readers = KeyVerifier(parse_trust_file(json.dumps(TRUST)), contract="GlobalModel")
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    raw = client.get(f"{s.redis_prefix}:model:fraud-linear:current")
    history = client.lrange(f"{s.redis_prefix}:model:fraud-linear:history", 0, -1)
    for value in [raw, *history]:
        record = CODEC.decode(value)
        assert record["key_id"] == "k-merger" and readers.check(record)
    merged = {(c.node_id, c.sequence) for v in history
              for c in global_model_from_record(CODEC.decode(v)).contributors}  # fmt: skip
    assert merged == {("store-1", 1), ("store-1", 2), ("store-2", 1), ("store-2", 8)}
    on_topic = [CODEC.decode(v) for _p, _o, _k, v in read_topic(boot, prism_topics["global-model"])]
    assert on_topic and all(readers.check(r) for r in on_topic)
    assert "signed WeightSummary: required=True" in Path(merger.log_path).read_text()


def test_an_edge_adopts_only_globals_its_trust_file_vouches_for(
    test_settings: Settings, prism_topics: dict[str, str]
) -> None:
    from edge_agents.globals import TopicGlobals

    topic, bad = prism_topics["global-model"], []
    verifier = KeyVerifier(parse_trust_file(json.dumps(TRUST)), contract="GlobalModel")
    feed = TopicGlobals(
        test_settings.kafka_bootstrap or "", topic, model_name="fraud-linear",
        node_id=f"n-{uuid.uuid4().hex[:6]}", codec=CODEC, verifier=verifier,
        on_bad=lambda code, reason, where, raw: bad.append(code),
    )  # fmt: skip
    rng = np.random.default_rng(3)
    model = SPEC.new_model()
    for _ in range(100):
        x = {"amount": float(rng.normal(50, 20)), "hour": float(rng.integers(0, 24))}
        SPEC.learn_one(model, x, bool(x["amount"] > 80))
    summary, now = SPEC.summarize(model), int(time.time() * 1000)

    def whole(version: int, key: str | None = "k-merger", private: str = "merger") -> dict:
        record = global_model_record(summary, version=version, strategy="fedavg",
                                     created_at_ms=now)  # fmt: skip
        return record if key is None else KeySigner(key, K[private]).sign(record, "GlobalModel")

    tampered = whole(6)
    tampered["metrics"] = {"auc": 0.99}
    first = CODEC.encode("GlobalModel", whole(1))
    sends = [
        first,
        CODEC.encode("GlobalModel", whole(2, key=None)),  # unsigned
        CODEC.encode("GlobalModel", whole(3, private="thief")),  # forged under the merger's id
        CODEC.encode("GlobalModel", whole(4, "k-store-1", "store-1")),  # an edge's key
        CODEC.encode("GlobalModel", whole(5, "k-merger-old", "merger-old")),  # revoked
        CODEC.encode("GlobalModel", tampered),
        CODEC.encode("GlobalModel", whole(7, "k-thief", "thief")),  # unknown key
        CODEC.encode("GlobalModel", whole(8)),
        first,  # an old, authentic global sent again: a rollback
    ]
    producer = Producer({"bootstrap.servers": test_settings.kafka_bootstrap})
    for value in sends:
        producer.produce(topic, value, key=b"fraud-linear@whole", partition=0)
    assert producer.flush(30) == 0
    want = ["unsigned", "bad-signature", "key-not-for-node", "revoked-key", "bad-signature",
            "unknown-key", "replayed"]  # fmt: skip
    adopted, deadline = [], time.monotonic() + 60
    try:
        while len(bad) < len(want) and time.monotonic() < deadline:
            info = feed.poll()
            if info is not None:
                adopted.append(info.version)
    finally:
        feed.close()
    assert bad == want
    assert adopted and max(adopted) == 8 and set(adopted) <= {1, 8}

"""Authenticity of model updates (issue #10, item 8): only signed summaries are merged.

Real local Kafka + Redis, real ``prism`` processes. A merger trusts two keys:
``k-store-1`` may sign for node store-1 only, ``k-store-2`` for store-2 only.

1. A signed edge agent (``prism edge run`` with PRISM_SIGNING_KEY_ID/_KEY) and
   signed store-2 summaries are all merged.
2. Unsigned, unknown-key, wrong-secret, tampered, another node's key, and
   old-sequence (replayed) summaries land on dead-letter with their reason,
   their raw bytes and offset, and change nothing in the global model; a
   byte-identical redelivery is a harmless duplicate (no dead letter, not
   counted); a following honest summary is merged (the merger was live).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from helpers.runs import start_cli
from helpers.services import decoded, produce_at, read_topic, service_env, wait_exit

from models.serialization import global_model_from_record, weight_summary_record
from models.specs import get_spec
from prism.cli import main
from runtime.settings import Settings
from schemas import Codec
from schemas.signing import Signer

pytestmark = pytest.mark.integration
CODEC = Codec()
SPEC = get_spec("fraud-linear")
SECRET_1 = "store-1-" + uuid.uuid4().hex  # per run: a leak into logs is recognisable
SECRET_2 = "store-2-" + uuid.uuid4().hex
STOLEN = "attacker-" + uuid.uuid4().hex
TRUSTED = json.dumps(
    {
        "k-store-1": {"secret": SECRET_1, "nodes": ["store-1"]},
        "k-store-2": {"secret": SECRET_2, "nodes": ["store-2"]},
    }
)


def summary_record(node: str, seq: int, n: int = 120, seed: int | None = None) -> dict:
    rng = np.random.default_rng(seed if seed is not None else seq)
    model = SPEC.new_model()
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=0)
    return weight_summary_record(
        s, tier="edge", created_at_ms=1_700_000_000_000 + seq, meta={"stats": "increment"}
    )


def signed(node: str, seq: int, key: str = "k-store-2", secret: str = SECRET_2, **kw) -> bytes:
    return CODEC.encode("WeightSummary", Signer(key, secret).sign(summary_record(node, seq, **kw)))


def run_merger(settings: Settings, tmp_path: Path, name: str) -> str:
    proc = start_cli(settings, tmp_path, name, "merger", "run", "--round-size", "1",
                     "--round-timeout", "600", "--idle-exit", "4", "--group", "gsigned",
                     PRISM_TRUSTED_KEYS=TRUSTED)  # fmt: skip
    assert wait_exit(proc, timeout=180) == 0, Path(proc.log_path).read_text()[-3000:]
    return Path(proc.log_path).read_text()


def current(settings: Settings):
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    raw = client.get(f"{settings.redis_prefix}:model:fraud-linear:current")
    history = client.lrange(f"{settings.redis_prefix}:model:fraud-linear:history", 0, -1)
    contributors = {
        (c.node_id, c.sequence)
        for v in history
        for c in global_model_from_record(CODEC.decode(v)).contributors
    }
    return global_model_from_record(CODEC.decode(raw)), contributors


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


def test_only_authentic_fresh_summaries_change_the_global_model(
    isolated: Settings, prism_topics: dict[str, str], tmp_path: Path
) -> None:
    s, topic = isolated, prism_topics["model-updates"]
    boot = s.kafka_bootstrap or ""

    # -- 1. honest, signed traffic: an edge agent through the CLI, and store-2 --------------
    data = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", "1200", "--sites", "1", "--regions", "1",
                 "--seed", "5", "--labels", "inline", "--out", str(data)]) == 0  # fmt: skip
    agent = start_cli(s, tmp_path, "store-1", "edge", "run", "--node", "store-1", "--source",
                      str(data), "--state-dir", str(tmp_path / "store-1"), "--summary-every", "300",
                      PRISM_SIGNING_KEY_ID="k-store-1", PRISM_SIGNING_KEY=SECRET_1)  # fmt: skip
    assert wait_exit(agent, timeout=180) == 0, Path(agent.log_path).read_text()[-3000:]
    edge_msgs = [(o, v) for _p, o, k, v in read_topic(boot, topic) if k == b"store-1"]
    edge_records = [CODEC.decode(v) for _o, v in edge_msgs]
    assert len(edge_records) >= 4
    assert all(r["key_id"] == "k-store-1" and len(r["signature"]) == 32 for r in edge_records)
    honest2 = {seq: signed("store-2", seq) for seq in (2, 4, 5)}
    produce_at(s.kafka_bootstrap or "", topic, [(b"store-2", v) for v in honest2.values()])
    log1 = run_merger(s, tmp_path, "merger1")

    before, merged = current(s)
    want = {("store-1", r["sequence"]) for r in edge_records} | {("store-2", q) for q in honest2}
    assert merged == want
    n_edge = sum(r["state"]["n_samples"] for r in edge_records)
    assert before.summary.n_samples == n_edge + 3 * 120
    assert decoded(boot, prism_topics["dead-letter"]) == []

    # -- 2. abuse, each keyed as the node it claims to be ------------------------------------
    tampered = Signer("k-store-2", SECRET_2).sign(summary_record("store-2", 13))
    tampered["state"]["n_samples"] *= 100  # altered after signing
    first_edge = edge_records[0]["sequence"]
    abuse = [
        ("unsigned", b"store-2", CODEC.encode("WeightSummary", summary_record("store-2", 10))),
        ("unknown-key", b"store-2", signed("store-2", 11, key="k-stolen", secret=STOLEN)),
        ("bad-signature", b"store-2", signed("store-2", 12, secret=STOLEN)),  # wrong secret
        ("bad-signature", b"store-2", CODEC.encode("WeightSummary", tampered)),
        ("key-not-for-node", b"store-1", signed("store-1", 99)),  # store-2's key, as store-1
        ("replayed", b"store-2", signed("store-2", 4, seed=444)),  # merged sequence, new content
        ("replayed", b"store-2", signed("store-2", 3)),  # never sent, older than 5
        ("replayed", b"store-1", signed("store-1", first_edge, "k-store-1", SECRET_1, seed=7)),
    ]
    redelivered = [(b"store-2", honest2[5]), (b"store-1", edge_msgs[0][1])]  # same bytes
    control = [(b"store-2", signed("store-2", 6, n=50))]
    items = [(k, v) for _c, k, v in abuse] + redelivered + control
    offsets = produce_at(s.kafka_bootstrap or "", topic, items)
    log2 = run_merger(s, tmp_path, "merger2")

    dead = [r for _p, _o, r in decoded(boot, prism_topics["dead-letter"])]
    got = sorted((d["key"], d["offset"], d["reason_code"], d["value"]) for d in dead)
    expected = sorted(
        (k, off, code, v) for (code, k, v), off in zip(abuse, offsets[: len(abuse)], strict=True)
    )
    assert got == expected  # each refusal once, with its reason, raw bytes and offset
    assert all(d["topic"] == topic and d["service"] == "merger" and d["reason"] for d in dead)

    after, merged_after = current(s)
    assert after.version == before.version + 1  # only the control summary
    assert merged_after == want | {("store-2", 6)}
    assert after.summary.n_samples == before.summary.n_samples + 50
    assert "signed summaries: required=True" in log1
    for secret in (SECRET_1, SECRET_2, STOLEN):
        assert secret not in log1 + log2 + Path(agent.log_path).read_text()
        assert not any(secret in d["reason"] for d in dead)


def test_central_shard_summaries_are_signed_and_merged(
    isolated: Settings, prism_topics: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    s, boot = isolated, isolated.kafka_bootstrap or ""
    for name, value in service_env(s).items():
        if name.startswith("PRISM_"):
            monkeypatch.setenv(name, value)
    data = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", "3000", "--sites", "6", "--seed", "3",
                 "--out", str(data)]) == 0  # fmt: skip
    assert main(["replay", str(data), "--no-progress"]) == 0
    secret = "central-" + uuid.uuid4().hex
    worker = start_cli(s, tmp_path, "central", "central", "run", "--task", "fraud",
                       "--group", "gsig", "--worker-id", "w1", "--idle-exit", "3",
                   PRISM_SIGNING_KEY_ID="central", PRISM_SIGNING_KEY=secret)  # fmt: skip
    assert wait_exit(worker, timeout=180) == 0, Path(worker.log_path).read_text()[-3000:]
    updates = [r for _p, _o, r in decoded(boot, prism_topics["model-updates"])]
    assert updates and all(u["tier"] == "central" and u["key_id"] == "central" for u in updates)

    trusted = json.dumps({"central": {"secret": secret, "nodes": ["gsig/p*"]}})
    merger = start_cli(s, tmp_path, "merger-central", "merger", "run", "--round-size", "1",
                   "--round-timeout", "600", "--idle-exit", "4", "--group", "gsig-merge",
                   PRISM_TRUSTED_KEYS=trusted)  # fmt: skip
    assert wait_exit(merger, timeout=180) == 0, Path(merger.log_path).read_text()[-3000:]
    assert decoded(boot, prism_topics["dead-letter"]) == []
    model, merged = current(s)
    assert merged == {(u["node_id"], u["sequence"]) for u in updates}
    latest = {
        u["node_id"]: u["state"]["n_samples"] for u in sorted(updates, key=lambda u: u["sequence"])
    }
    assert model.summary.n_samples == sum(latest.values())  # cumulative shards, counted once
    assert secret not in Path(worker.log_path).read_text() + Path(merger.log_path).read_text()

"""The central learner as a real Faust worker on the real local Kafka and Redis."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import fastavro
import numpy as np
import pytest
import redis
from confluent_kafka import Producer
from helpers.central import assert_checkpoint_matches, reference_models
from helpers.services import decoded, read_topic, wait_exit, wait_for_log

from prism.cli import main
from runtime.model_registry import RegistryClient
from runtime.settings import Settings
from schemas import Codec
from schemas.codec import MARKER
from schemas.registry import current, fingerprint

pytestmark = pytest.mark.integration
CODEC = Codec()


def generate_and_replay(
    settings: Settings, tmp_path: Path, monkeypatch, events: int, rate: str = "max"
) -> Path:
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("PRISM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("PRISM_STATE_DIR", str(settings.state_dir))
    log = tmp_path / "fraud.avro"
    args = [
        "datagen",
        "fraud",
        "--events",
        str(events),
        "--sites",
        "9",
        "--seed",
        "11",
        "--fraud-rate",
        "0.05",
        "--out",
        str(log),
    ]
    assert main(args) == 0
    assert main(["replay", str(log), "--no-progress", "--rate", rate]) == 0
    return log


def central(*extra: str, worker: str = "w1", group: str = "g1") -> tuple[str, ...]:
    return (
        "central",
        "run",
        "--task",
        "fraud",
        "--group",
        group,
        "--worker-id",
        worker,
        "--idle-exit",
        "2",
        *extra,
    )


def checkpoints(settings: Settings, group: str) -> dict[int, dict]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    out = {}
    for p in range(3):
        data = client.get(f"prism:checkpoint:{group}:{p}")
        if data is not None:
            out[p] = CODEC.decode(data, expected="CentralCheckpoint")
    client.close()
    return out


def merge_shards(spawn, group: str) -> None:
    """Run the merger over the shards' summaries: the registry's one writer records them."""
    merger = spawn(
        *("merger", "run", "--round-size", "1", "--round-timeout", "600", "--idle-exit", "4"),
        *("--group", f"merge-{group}"),
        log_name=f"merger-{group}.log",
    )
    assert wait_exit(merger) == 0


def shard_nodes(settings: Settings, group: str) -> dict[str, dict]:
    """The registry's node records of a central group's shards (``{group}/p{partition}``)."""
    client = RegistryClient(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    try:
        return {n["node_id"]: n for n in client.nodes() if n["node_id"].startswith(f"{group}/p")}
    finally:
        client.close()


@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_replay_gets_one_score_per_event_and_beats_a_trivial_baseline(
    engine, test_settings, prism_topics, spawn, tmp_path, monkeypatch
) -> None:
    group, name = f"g1-{engine}", f"w1-{engine}"
    worker = spawn(*central("--idle-exit", "4", "--engine", engine, group=group, worker=name))
    wait_for_log(worker, "partition assigned")
    # paced, with the worker already running: events and labels are consumed in about
    # log order, as in production (a preloaded topic may be read events-first, and then
    # everything is scored before any label is known)
    log = generate_and_replay(test_settings, tmp_path, monkeypatch, events=6000, rate="3000")
    assert wait_exit(worker) == 0
    boot = test_settings.kafka_bootstrap or ""
    scores = [r for _, _, r in decoded(boot, prism_topics["scores"])]
    sent = [r["event_id"] for _, _, r in decoded(boot, prism_topics["transactions"])]
    assert sorted(s["event_id"] for s in scores) == sorted(sent)  # one each, none missing
    assert {s["source"] for s in scores} == {"central"} and {s["node_id"] for s in scores} == {name}
    assert read_topic(boot, prism_topics["dead-letter"]) == []
    cps, refs = checkpoints(test_settings, group), reference_models(test_settings)
    for p, ref in refs.items():
        assert_checkpoint_matches(cps[p], ref)
    # the worker's shards as the merger recorded them in the registry (their summaries' data)
    merge_shards(spawn, group)
    shards = shard_nodes(test_settings, group)
    assert set(shards) == {f"{group}/p{p}" for p in range(3)}
    assert {n["tier"] for n in shards.values()} == {"central"}
    assert {n["meta"]["worker"] for n in shards.values()} == {name}
    assert sum(n["metrics"]["learned"] for n in shards.values()) == 6000
    assert all(n["metrics"]["pending"] == 0 for n in shards.values())
    # the prequential metric, recomputed from what is in Kafka: scores joined with labels
    truth = {r["event_id"]: r["label"] for _, _, r in decoded(boot, prism_topics["labels"])}
    auc = roc_auc([truth[s["event_id"]] for s in scores], [s["score"] for s in scores])
    # ... per shard: each partition's window metric against its own events' scores
    partition_of = {r["event_id"]: p for p, _, r in decoded(boot, prism_topics["transactions"])}
    for p in range(3):
        mine = [s for s in scores if partition_of[s["event_id"]] == p]
        shard_auc = roc_auc([truth[s["event_id"]] for s in mine], [s["score"] for s in mine])
        metrics = shards[f"{group}/p{p}"]["metrics"]
        assert abs(metrics["roc_auc"] - shard_auc) < 0.01, (p, metrics, shard_auc)
    # trivial baseline: a constant (or random) score ranks nothing, ROC AUC 0.5; with ~200
    # frauds the AUC's standard error is ~0.02, so 0.55 is a margin of over two of them
    assert auc > 0.55, auc
    updates = decoded(boot, prism_topics["model-updates"])
    assert {r["node_id"] for _, _, r in updates} == {f"{group}/p{p}" for p in range(3)}
    assert {r["tier"] for _, _, r in updates} == {"central"}
    assert {r["meta"]["stats"] for _, _, r in updates} == {"cumulative"}  # the merger diffs them
    assert log.exists()


def roc_auc(labels: list[bool], scores: list[float]) -> float:
    """Mann-Whitney U with average ranks for ties (exact, no binning)."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    pos, neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _avro_with_nan() -> bytes:
    """A Transaction whose bytes are valid Avro but carry a NaN feature (a foreign producer)."""
    import io

    record = {
        "event_id": "nan",
        "ts": 1,
        "site_id": "s",
        "region": "r",
        "account_id": "a",
        "merchant_id": "m",
        "amount": 1.0,
        "currency": "EUR",
        "features": {"amount": float("nan")},
        "label": None,
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, current("Transaction").parsed, record)
    return MARKER + fingerprint("Transaction") + buf.getvalue()


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(
    test_settings, prism_topics, spawn
) -> None:
    tx, lb = prism_topics["transactions"], prism_topics["labels"]
    good = [
        {
            "event_id": f"e{i}",
            "ts": 1_000 + i,
            "site_id": "s",
            "region": "r",
            "account_id": "a",
            "merchant_id": "m",
            "amount": 5.0,
            "currency": "EUR",
            "features": {"amount": float(i)},
            "label": i % 2 == 0,
        }
        for i in range(20)
    ]
    missing = b'{"schema": "prism.Transaction", "record": {"event_id": "m1"}}'
    bad = [
        (tx, b"\x00\x01garbage", "bad-marker"),
        (tx, CODEC.encode("Label", {"event_id": "x", "ts": 1, "label": True}), "wrong-schema"),
        (tx, missing, "missing-field"),
        (tx, _avro_with_nan(), "non-finite"),
        (tx, None, "empty"),
        (tx, CODEC.encode("Transaction", good[3]), "duplicate-event"),
        (
            lb,
            CODEC.encode("Label", {"event_id": "ghost", "ts": 1_005, "label": True}),
            "label-unknown-event",
        ),
        (lb, b"\xc3\x01" + b"\x00" * 8 + b"zz", "unknown-fingerprint"),
    ]
    producer = Producer(
        {"bootstrap.servers": test_settings.kafka_bootstrap, "enable.idempotence": True}
    )
    for rec in good[:10]:
        producer.produce(tx, CODEC.encode("Transaction", rec), partition=0)
    for topic, value, _ in bad:
        producer.produce(topic, value, partition=0)
    for rec in good[10:]:
        producer.produce(tx, CODEC.encode("Transaction", rec), partition=0)
    producer.flush(30)
    assert wait_exit(spawn(*central(group="gbad"))) == 0
    boot = test_settings.kafka_bootstrap or ""
    dead = [r for _, _, r in decoded(boot, prism_topics["dead-letter"])]
    assert sorted(d["reason_code"] for d in dead) == sorted(code for *_, code in bad)
    assert all(d["service"] == "central-fraud" and d["reason"] for d in dead)
    by_code = {d["reason_code"]: d for d in dead}
    assert by_code["bad-marker"]["value"] == b"\x00\x01garbage"
    assert by_code["bad-marker"]["topic"] == tx and by_code["bad-marker"]["offset"] == 10
    scores = [r["event_id"] for _, _, r in decoded(boot, prism_topics["scores"])]
    assert sorted(scores) == sorted(r["event_id"] for r in good)
    cps = checkpoints(test_settings, "gbad")
    cp = cps[0]
    assert cp["counters"]["learned"] == 20
    assert all(not c["counters"].get("learned") for p, c in cps.items() if p != 0)
    assert cp["offsets"] == {tx: 20 + 6, lb: 2}


def test_an_empty_topic_is_no_error(test_settings, prism_topics, spawn) -> None:
    proc = spawn(*central(group="gempty"))
    assert wait_exit(proc) == 0
    assert read_topic(test_settings.kafka_bootstrap or "", prism_topics["scores"]) == []
    assert "Traceback" not in Path(proc.log_path).read_text(errors="replace")


def _learned(settings: Settings, group: str) -> int:
    return sum(cp["counters"].get("learned", 0) for cp in checkpoints(settings, group).values())


@pytest.mark.reliability  # #10.2: central worker SIGKILL mid-replay, restart, identical model
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_mid_replay_then_restarted_learns_exactly_the_uninterrupted_model(
    sig, test_settings, prism_topics, spawn, tmp_path, monkeypatch
) -> None:
    """SIGKILL: resume from the last checkpoint. SIGTERM: a prompt, clean stop under load."""
    n = 30_000
    group, name = f"gkill-{sig.name}", f"k1-{sig.name}"
    generate_and_replay(test_settings, tmp_path, monkeypatch, events=n)
    victim = spawn(
        *central("--checkpoint-interval", "0.1", "--batch-size", "200", group=group, worker=name),
        log_name="victim.log",
    )
    deadline = time.monotonic() + 120
    while _learned(test_settings, group) < n // 5 and time.monotonic() < deadline:
        assert victim.poll() is None, "the worker ended before it could be stopped"
        time.sleep(0.05)
    victim.send_signal(sig)
    if sig == signal.SIGTERM:  # finishes its batch, checkpoints, leaves the group
        assert victim.wait(20) == 0
        log = Path(victim.log_path).read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
    victim.wait(10)
    at_kill = _learned(test_settings, group)
    assert n // 5 <= at_kill < n, at_kill
    labels = prism_topics["labels"]
    read_again = [
        cp["labels_consumed_until"] - cp["offsets"][labels]
        for cp in checkpoints(test_settings, group).values()
        if labels in cp["offsets"]
    ]
    assert max(read_again) > 0, read_again  # labels waited at the stop: the restart rereads them
    restarted_ms = time.time() * 1000
    assert wait_exit(spawn(*central(group=group, worker=name), log_name="restart.log")) == 0
    cps, refs = checkpoints(test_settings, group), reference_models(test_settings)
    assert sum(cp["counters"]["learned"] for cp in cps.values()) == n
    for p, ref in refs.items():
        assert_checkpoint_matches(cps[p], ref)  # no event learned twice, none skipped
    scored = {
        r["event_id"]
        for _, _, r in decoded(test_settings.kafka_bootstrap or "", prism_topics["scores"])
    }
    assert len(scored) == n  # every event scored (at least once: the replayed tail twice)
    # the restart went on numbering: each shard's summaries have increasing sequences across
    # it, so the merger (the registry's writer) refuses none, merges the restart's, records
    # the last
    boot = test_settings.kafka_bootstrap or ""
    sent: dict[str, list[int]] = {}
    for _, _, r in decoded(boot, prism_topics["model-updates"]):
        sent.setdefault(r["node_id"], []).append(r["sequence"])
    assert all(seqs == sorted(set(seqs)) for seqs in sent.values()), sent
    merge_shards(spawn, group)
    dead = [r for _, _, r in decoded(boot, prism_topics["dead-letter"])]
    assert [d for d in dead if d["service"] == "merger"] == []
    client = RegistryClient(test_settings.redis_url.get_secret_value())
    merged = {(c["node_id"], c["sequence"])
              for v in client.history("fraud-linear") for c in v["contributors"]}  # fmt: skip
    client.close()
    shards = shard_nodes(test_settings, group)
    assert set(shards) == set(sent) and len(sent) == 3, (shards, sent)
    for node, seqs in sent.items():
        assert any((node, q) in merged for q in seqs if q >= restarted_ms), (node, seqs)
        assert shards[node]["last_sequence"] == seqs[-1] and shards[node]["meta"]["worker"] == name


def test_labels_read_far_ahead_of_events_are_paused_not_dropped(
    test_settings, prism_topics, spawn, tmp_path, monkeypatch
) -> None:
    """A preloaded topic: labels (7x smaller records) are fetched far ahead of their events."""
    n = 20_000
    generate_and_replay(test_settings, tmp_path, monkeypatch, events=n)
    worker = spawn(*central("--max-waiting", "50", group="gpause", worker="p1"))
    assert wait_exit(worker) == 0
    log = Path(worker.log_path).read_text(errors="replace")
    assert "paused:" in log and "resumed:" in log, log[-2000:]
    cps, refs = checkpoints(test_settings, "gpause"), reference_models(test_settings)
    assert sum(cp["counters"]["learned"] for cp in cps.values()) == n
    for p, ref in refs.items():
        assert_checkpoint_matches(cps[p], ref)  # paused and resumed: nothing lost or doubled
        assert cps[p]["waiting_labels"] == []


def test_two_workers_split_the_partitions_and_each_publishes_its_shard(
    test_settings, prism_topics, spawn, tmp_path, monkeypatch
) -> None:
    a = spawn(*central(group="gtwo", worker="a"), "--idle-exit", "6", log_name="a.log")
    b = spawn(*central(group="gtwo", worker="b"), "--idle-exit", "6", log_name="b.log")
    _wait_for_split(a, b, time.monotonic() + 60)  # both in the group before any data exists
    generate_and_replay(test_settings, tmp_path, monkeypatch, events=6000)
    assert wait_exit(a) == 0 and wait_exit(b) == 0
    cps, refs = checkpoints(test_settings, "gtwo"), reference_models(test_settings)
    # each checkpointed its share when it let it go (whichever stops first hands its
    # partitions to the other, which checkpoints them again as its own on leaving)
    for proc, name in ((a, "a"), (b, "b")):
        log = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert re.search(rf"partitions revoked worker={name} partitions=\[\d", log), log[-2000:]
    assert len(cps) == 3
    for p, ref in refs.items():  # exact across the split and the hand-over
        assert_checkpoint_matches(cps[p], ref)
    updates = [
        r for _, _, r in decoded(test_settings.kafka_bootstrap or "", prism_topics["model-updates"])
    ]
    assert {u["meta"]["worker"] for u in updates} == {"a", "b"}
    shards = {w: {f"gtwo/p{u['meta']['partition']}" for u in updates if u["meta"]["worker"] == w}
              for w in ("a", "b")}  # fmt: skip
    assert shards["a"] | shards["b"] == {"gtwo/p0", "gtwo/p1", "gtwo/p2"}
    merge_shards(spawn, "gtwo")  # the merger, the registry's one writer, merges every shard
    client = RegistryClient(test_settings.redis_url.get_secret_value())
    merged = {(c["node_id"], c["sequence"])
              for v in client.history("fraud-linear") for c in v["contributors"]}  # fmt: skip
    client.close()
    for w in ("a", "b"):  # each worker's shards reached the registry's merged model
        published = {(u["node_id"], u["sequence"]) for u in updates if u["meta"]["worker"] == w}
        assert set() < {node for node, _ in merged & published} <= shards[w]
    nodes = shard_nodes(test_settings, "gtwo")
    assert set(nodes) == {"gtwo/p0", "gtwo/p1", "gtwo/p2"}
    assert {n["meta"]["worker"] for n in nodes.values()} <= {"a", "b"}


def _wait_for_split(a, b, deadline: float) -> None:
    """Both workers are in the group once each log says it was assigned partitions."""
    while time.monotonic() < deadline:
        logs = [Path(p.log_path).read_text(errors="replace") for p in (a, b)]
        if all("partition assigned" in text for text in logs) and _stable(logs):
            return
        time.sleep(0.2)
    raise AssertionError("the two workers never split the partitions")


def _stable(logs: list[str]) -> bool:
    """Each worker's latest assignment (after its last revocation) holds fewer than three."""
    return all(
        text.rsplit("partitions revoked", 1)[-1].count("partition assigned") < 3 for text in logs
    )

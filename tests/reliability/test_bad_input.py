"""#10.6: the bad-input corpus on every input topic, against running services.

Each test interleaves good records with every kind of tests/reliability/corpus.py
(on partition 0, so offsets are known), runs the real service on the real broker,
and checks: every bad record is a dead letter with the expected reason, its raw
bytes and its source offset; the service's per-reason counters equal the
corpus counts; every good record is processed; the service is still alive at
the end and stops cleanly on SIGTERM (exit code 0).

Kinds that are deliberately *not* dead letters say so where they are produced.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Producer
from helpers.services import decoded, read_topic, wait_exit, wait_for_log
from prometheus_client.parser import text_string_to_metric_families
from reliability import corpus
from reliability.corpus import CODEC, Bad, kinds_for

from models.serialization import (
    global_model_from_record,
    global_model_record,
    unpacked_state,
    weight_summary_record,
)
from models.specs import get_spec
from runtime.settings import Settings

pytestmark = pytest.mark.integration
MAX_BYTES = 200_000  # PRISM_MAX_MESSAGE_BYTES of the services: the oversize kind is above it
T0 = 1_700_000_000_000
FUTURE = 4_102_444_800_000  # 2100-01-01


# -- helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce(settings: Settings, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    """All on partition 0, in order: item i gets offset i (a fresh topic). Idempotence keeps
    that order through retries: without it, a request retried after a fresh topic's transient
    NOT_LEADER could land after the next one (seen in CI: the 1 MB value got offset 1)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "message.max.bytes": 2_000_000,
            "enable.idempotence": True,
        }
    )
    for key, value in items:
        producer.produce(topic, value, key=key, partition=0)
    assert producer.flush(30) == 0


def scrape(port: int, family: str) -> dict[tuple, float]:
    """``{labels: value}`` of one Prometheus counter family."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{family}_total" or (s.name == family and fam.type != "counter"):
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def wait_until(check, what: str, proc, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert proc.poll() is None, f"the service died while waiting for {what}"
        time.sleep(0.3)
    tail = Path(proc.log_path).read_text(errors="replace")[-3000:]
    raise AssertionError(f"{what}: not after {timeout} s; log tail:\n{tail}")


def count_messages(settings: Settings, topic: str) -> int:
    """Records on ``topic`` now; -1 while the broker cannot tell yet (a fresh topic's leader)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": uuid.uuid4().hex})
    try:
        return sum(
            hi - lo
            for lo, hi in (
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(3)
            )
        )
    except KafkaException:  # e.g. NOT_LEADER_FOR_PARTITION right after creation: ask again
        return -1
    finally:
        c.close()


def interleave(good: list[tuple], bad: list[Bad]) -> tuple[list[tuple], dict[int, Bad]]:
    """good, bad, good, bad...: the items and which offset holds which bad kind."""
    items, where = [], {}
    for i in range(max(len(good), len(bad))):
        if i < len(good):
            items.append(good[i])
        if i < len(bad):
            where[len(items)] = bad[i]
            items.append((bad[i].key, bad[i].value))
    return items, where


def assert_dead_letters(dead: list[dict], topic: str, where: dict[int, Bad], service: str):
    """Exactly the bad records of ``topic``: reason, raw bytes, source offset."""
    mine = {d["offset"]: d for d in dead if d["topic"] == topic}
    assert sorted(mine) == sorted(where), (
        {o: (d["reason_code"], d["reason"]) for o, d in mine.items() if o not in where},
        {o: b.kind for o, b in where.items() if o not in mine},
    )
    for offset, bad in where.items():
        d = mine[offset]
        assert (d["reason_code"], d["service"]) == (bad.reason, service), (bad.kind, d["reason"])
        assert d["reason"] and d["partition"] == 0
        assert d["key"] == bad.key, bad.kind  # the Kafka key as consumed, even for late rejects
        if bad.kind == "oversize":  # too big for a dead letter of max_bytes: its head, said so
            assert bad.value.startswith(d["value"]) and len(d["value"]) > MAX_BYTES // 2
            assert "cut to its first" in d["reason"]
        else:
            assert d["value"] == bad.value, bad.kind  # the raw bytes (None for a tombstone)


# -- central learner: transactions + labels (fraud), sensor-readings (iot) -------------------
@pytest.mark.parametrize("task", ["fraud", "iot"])
def test_central_dead_letters_every_bad_kind_and_scores_every_good_event(
    task, test_settings, prism_topics, spawn, monkeypatch
) -> None:
    monkeypatch.setenv("PRISM_MAX_MESSAGE_BYTES", str(MAX_BYTES))
    s, boot = test_settings, test_settings.kafka_bootstrap or ""
    schema, make = ("Transaction", corpus.transaction)
    events_topic = prism_topics["transactions"]
    if task == "iot":
        schema, make, events_topic = (
            "SensorReading",
            corpus.sensor_reading,
            prism_topics["sensor-readings"],
        )
    lb = prism_topics["labels"]
    n_good = 30
    # inline labels on even events; odd ones wait for a late label (the labels topic)
    good = [make(f"e{i}", T0 + i * 1000, label=(i % 3 == 0) if i % 2 == 0 else None)
            for i in range(n_good)]  # fmt: skip
    good_items = [(b"acct", CODEC.encode(schema, r)) for r in good]
    # an empty key is no error: the central learner keys nothing on it -> scored
    good_items[5] = (b"", good_items[5][1])
    # a timestamp far in the future is no error either: no wall clock on the central learner
    # (replays of history and synthetic clocks are legitimate) -> scored like any event
    good.append(make("future", FUTURE))
    good_items.append((b"acct", CODEC.encode(schema, good[-1])))
    bad = kinds_for(schema, good[0], key=b"acct", max_bytes=MAX_BYTES)
    bad.append(Bad("duplicate-event-id", b"acct", good_items[3][1], "duplicate-event"))
    if schema == "Transaction":
        negative = CODEC.encode(schema, make("neg", T0 + 500, amount=-12.5))
        bad.append(Bad("negative-amount", b"acct", negative, "out-of-range"))
    items, where = interleave(good_items, bad)
    produce(s, events_topic, items)

    label_where: dict[int, Bad] = {}
    if task == "fraud":  # the labels topic gets its own corpus
        late = [(r["event_id"].encode(), CODEC.encode("Label", corpus.label(r["event_id"],
                 r["ts"] + 10))) for r in good[1:n_good:2]]  # fmt: skip
        bad_labels = kinds_for("Label", corpus.label("e1", T0), key=b"e1", max_bytes=MAX_BYTES)
        ghost = CODEC.encode("Label", corpus.label("ghost", T0 + 1500))
        bad_labels.append(Bad("label-for-unknown-event", b"ghost", ghost, "label-unknown-event"))
        again = CODEC.encode("Label", corpus.label("e0", T0 + 2500))  # e0 was labelled inline
        bad_labels.append(Bad("label-for-labelled-event", b"e0", again, "label-not-pending"))
        label_items, label_where = interleave(late, bad_labels)
        produce(s, lb, label_items)

    port, group = free_port(), f"gbad-{task}"
    worker = spawn("central", "run", "--task", task, "--group", group, "--worker-id", "w1",
                   "--metrics-port", str(port), log_name=f"central-{task}.log")  # fmt: skip
    n_dead = len(where) + len(label_where)
    wait_until(
        lambda: (
            count_messages(s, prism_topics["dead-letter"]) >= n_dead
            and count_messages(s, prism_topics["scores"]) >= len(good)
        ),
        "every dead letter and every score",
        worker,
    )
    # the counters of the live service: one per dead letter, by reason
    service = f"central-{task}"
    by_reason = Counter(b.reason for b in [*where.values(), *label_where.values()])
    wait_for_log(worker, "metrics endpoint")
    metrics = scrape(port, "prism_dead_letters")
    assert {dict(k)["reason"]: v for k, v in metrics.items() if dict(k)["service"] == service} == (
        by_reason
    )
    assert worker.poll() is None  # alive after all of it
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker, 60) == 0
    assert "Traceback" not in Path(worker.log_path).read_text(errors="replace")

    dead = [r for _, _, r in decoded(boot, prism_topics["dead-letter"])]
    assert len(dead) == n_dead
    assert_dead_letters(dead, events_topic, where, service)
    assert_dead_letters(dead, lb, label_where, service)
    scores = Counter(r["event_id"] for _, _, r in decoded(boot, prism_topics["scores"]))
    assert scores == Counter(r["event_id"] for r in good)  # each good event once, no bad one
    # the checkpoint's counters (what `prism` reports per worker) match the corpus too
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    counters: Counter = Counter()
    for p in range(3):
        data = client.get(f"prism:checkpoint:{group}:{p}")
        if data is not None:
            counters.update(CODEC.decode(data, expected="CentralCheckpoint")["counters"])
    client.close()
    codec_reasons = Counter(
        b.reason
        for b in [*where.values(), *label_where.values()]
        if b.reason not in ("duplicate-event", "label-unknown-event", "label-not-pending")
    )
    assert {k[4:]: v for k, v in counters.items() if k.startswith("bad-")} == codec_reasons
    assert counters["duplicate-events"] == 1
    assert counters["scored"] == len(good)
    if task == "fraud":
        assert counters["label-unknown-event"] == counters["label-not-pending"] == 1
        # every odd event got its late label; every even one was labelled inline
        assert counters["labelled"] == n_good


# -- merger: model-updates -------------------------------------------------------------------
SPEC = get_spec("fraud-linear")


def _summary(node: str, seq: int = 1, base: int = 0, seed: int = 1):
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(50):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    return SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=base)


def _update(summary, **over) -> dict:
    return weight_summary_record(summary, tier="edge", created_at_ms=T0) | over


def test_merger_dead_letters_every_bad_update_and_merges_the_good_ones(
    test_settings, prism_topics, spawn, monkeypatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    monkeypatch.setenv("PRISM_MAX_MESSAGE_BYTES", str(MAX_BYTES))
    s, topic = test_settings, prism_topics["model-updates"]
    nodes = ["a", "b", "c", "d"]
    good = [_update(_summary(n, seed=i + 1)) for i, n in enumerate(nodes)]
    good_items = [
        (n.encode(), CODEC.encode("WeightSummary", r)) for n, r in zip(nodes, good, strict=True)
    ]
    good_items[3] = (b"", good_items[3][1])  # an empty key is no error: node ids are in the record
    # a redelivered (node, sequence) is no dead letter: counted as a duplicate, merged once
    # (at-least-once delivery and outbox resends are normal), checked below by n_samples
    good_items.append(good_items[0])
    bad = kinds_for("WeightSummary", good[0], key=b"a", max_bytes=MAX_BYTES)
    state = unpacked_state(_summary("b", seed=2))  # the older, spelled-out form still decodes
    tensor = state["tensors"][0]
    cut = dict(tensor, data=tensor["data"][:-8])  # its bytes disagree with its shape
    wide = dict(tensor, shape=[3], data=tensor["data"] + b"\x00" * 16)  # 3 values, 2 features
    negative = dict(tensor, shape=[-2])
    for kind, st in [
        ("tensor-bytes-disagree-with-shape", state | {"tensors": [cut, *state["tensors"][1:]]}),
        (
            "tensor-shape-disagrees-with-features",
            state | {"tensors": [wide, *state["tensors"][1:]]},
        ),
        ("negative-tensor-dimension", state | {"tensors": [negative, *state["tensors"][1:]]}),
        ("features-disagree-with-tensors", state | {"features": ["amount", "hour", "extra"]}),
        ("unknown-model-name", state | {"model_name": "no-such-model"}),
        ("params-disagree-with-spec", state | {"params": {"lr": "1e9"}}),
    ]:
        record = good[1] | {"node_id": f"x-{kind}", "state": st}
        bad.append(Bad(kind, b"x", CODEC.encode("WeightSummary", record), "invalid-summary"))
    packed = good[1]["state"]["packed"]
    for kind, change in [
        ("packed-values-short", {"values": packed["values"][:-4]}),
        ("packed-counts-too-many", {"counts": packed["counts"] + b"\x01"}),
        ("packed-varint-never-ends", {"counts": b"\xff"}),
        ("packed-layout-not-its-id", {"layout_id": packed["layout_id"] ^ 1}),
        ("packed-int8-without-scales", {"dtype": "int8"}),
    ]:
        st = good[1]["state"] | {"packed": packed | change}
        record = good[1] | {"node_id": f"x-{kind}", "state": st}
        bad.append(Bad(kind, b"x", CODEC.encode("WeightSummary", record), "invalid-summary"))
    by_id = _update(_summary("x-layout", seed=9), state=good[1]["state"] | {"packed": packed | {
        "layout": None, "layout_id": 12345}})  # fmt: skip
    bad.append(Bad("unknown-layout", b"x", CODEC.encode("WeightSummary", by_id), "unknown-layout"))
    future = _update(_summary("f", base=99))
    bad.append(
        Bad("future-base-version", b"f", CODEC.encode("WeightSummary", future), "future-base")
    )
    items, where = interleave(good_items, bad)
    produce(s, topic, items)

    port = free_port()
    proc = spawn("merger", "run", "--round-size", "4", "--round-timeout", "600", "--group",
                 "gbad-merger", "--metrics-port", str(port), log_name="merger.log")  # fmt: skip
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    current = f"{prefix}:model:fraud-linear:current"
    wait_until(
        lambda: (
            count_messages(s, prism_topics["dead-letter"]) >= len(where)
            and client.get(current) is not None
        ),
        "every dead letter and the merged round",
        proc,
    )
    wait_for_log(proc, "metrics endpoint")
    metrics = scrape(port, "prism_dead_letters")
    assert {dict(k)["reason"]: v for k, v in metrics.items() if dict(k)["service"] == "merger"} == (
        Counter(b.reason for b in where.values())
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 60) == 0
    assert "Traceback" not in Path(proc.log_path).read_text(errors="replace")

    dead = [r for _, _, r in decoded(s.kafka_bootstrap or "", prism_topics["dead-letter"])]
    assert len(dead) == len(where)
    assert_dead_letters(dead, topic, where, "merger")
    assert all(d["key"] is not None or where[d["offset"]].key is None for d in dead)
    merged = global_model_from_record(CODEC.decode(client.get(current)))
    client.close()
    assert merged.version == 1
    assert {(c.node_id, c.sequence) for c in merged.contributors} == {(n, 1) for n in nodes}
    assert merged.summary.n_samples == 4 * 50  # the duplicate of a's update counted once


# -- edge agent: its local topic source and its global-model feed ----------------------------
def test_edge_keeps_bad_local_events_and_bad_global_models_and_goes_on(
    test_settings, prism_topics, spawn, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PRISM_MAX_MESSAGE_BYTES", str(MAX_BYTES))
    s = test_settings
    local = prism_topics["transactions"]  # the node's local topic
    good = [corpus.transaction(f"e{i}", T0 + i * 1000) for i in range(30)]
    good_items = [(b"acct", CODEC.encode("Transaction", r)) for r in good]
    good_items[5] = (b"", good_items[5][1])  # an empty key is no error
    bad = kinds_for("Transaction", good[0], key=b"acct", max_bytes=MAX_BYTES)
    negative = CODEC.encode("Transaction", corpus.transaction("neg", amount=-3.0))
    bad.append(Bad("negative-amount", b"acct", negative, "out-of-range"))
    items, where = interleave(good_items, bad)
    produce(s, local, items)

    # the global feed: a good model (version 7) among bad ones, all keyed by its name
    summary = _summary("g")
    gm = global_model_record(summary, version=7, strategy="fedavg",
                             created_at_ms=int(time.time() * 1000))  # fmt: skip
    bad_globals = [b for b in kinds_for("GlobalModel", gm, key=b"fraud-linear", max_bytes=MAX_BYTES)
                   # a tombstone is how a compacted topic deletes a key: skipped, no dead letter
                   if b.kind != "tombstone"]  # fmt: skip
    state = unpacked_state(summary)  # the older form: its tensors spelled out
    wide = dict(state["tensors"][0], shape=[3], data=state["tensors"][0]["data"] + b"\x00" * 16)
    packed = gm["state"]["packed"]
    for kind, record in [
        ("model-name-disagrees", gm | {"version": 9, "model_name": "iot-hst"}),
        ("tensor-shape-disagrees", gm | {"version": 9, "state": state | {"tensors": [
            wide, *state["tensors"][1:]]}}),
        ("packed-values-short", gm | {"version": 9, "state": gm["state"] | {
            "packed": packed | {"values": packed["values"][:-8]}}}),
    ]:  # fmt: skip
        bad_globals.append(Bad(kind, b"fraud-linear", CODEC.encode("GlobalModel", record), "?"))
    gitems, gwhere = interleave([(b"fraud-linear", CODEC.encode("GlobalModel", gm))], bad_globals)
    gitems.insert(0, (b"fraud-linear", None))  # offset 0: a tombstone, ignored
    gwhere = {o + 1: b for o, b in gwhere.items()}
    produce(s, prism_topics["global-model"], gitems)

    port, home = free_port(), tmp_path / "n1"
    agent = spawn("edge", "run", "--node", "n1", "--source", f"topic:{local}", "--state-dir",
                  str(home), "--metrics-port", str(port), "--drain-timeout", "30",
                  log_name="edge.log")  # fmt: skip
    dead_path = home / "dead-letters.jsonl"

    def dead_lines() -> list[dict]:
        if not dead_path.exists():
            return []
        return [json.loads(x) for x in dead_path.read_text().splitlines() if x.endswith("}")]

    n_dead = len(where) + len(gwhere)
    wait_until(lambda: len(dead_lines()) >= n_dead and count_messages(s, prism_topics["scores"])
               >= len(good), "every local dead letter and every score", agent)  # fmt: skip
    wait_for_log(agent, "global model adopted node=n1 version=7")
    wait_for_log(agent, "metrics endpoint")
    # the topic source refuses what does not decode ("undecodable"); a record of another
    # event schema decodes, and the agent refuses it after ("wrong-record-type")
    wrong_type = {o for o, b in where.items() if b.kind == "another-topics-schema"}
    metrics = scrape(port, "prism_edge_dead_letters")
    assert {dict(k)["reason"]: v for k, v in metrics.items()} == {
        "undecodable": len(where) - len(wrong_type),
        "wrong-record-type": len(wrong_type),
        "bad-global-model": len(gwhere),
    }
    assert agent.poll() is None
    agent.send_signal(signal.SIGTERM)
    assert wait_exit(agent, 90) == 0
    log = Path(agent.log_path).read_text(errors="replace")
    assert "Traceback" not in log and "version=9" not in log
    assert f"dead_letters={n_dead}" in log

    dead = dead_lines()
    assert len(dead) == n_dead
    events = {d["where"]["offset"]: d for d in dead if d["where"]["topic"] == local}
    globals_ = {d["where"]["offset"]: d for d in dead if d["where"]["topic"] != local}
    assert sorted(events) == sorted(where) and sorted(globals_) == sorted(gwhere)
    for offset, d in events.items():  # each at its own offset with its bytes as consumed
        b = where[offset]
        code = "wrong-record-type" if offset in wrong_type else "undecodable"
        assert d["reason_code"] == code and d["reason"], b.kind
        assert d["where"]["partition"] == 0, b.kind
        assert base64.b64decode(d["raw"]) == (b.value or b""), b.kind
    for offset, b in gwhere.items():
        d = globals_[offset]
        assert d["reason_code"] == "bad-global-model" and d["reason"], b.kind
        assert base64.b64decode(d["raw"]) == b.value, b.kind
    scores = Counter(
        r["event_id"] for _, _, r in decoded(s.kafka_bootstrap or "", prism_topics["scores"])
    )
    assert scores == Counter(r["event_id"] for r in good)
    assert read_topic(s.kafka_bootstrap or "", prism_topics["dead-letter"]) == []  # kept locally


def test_a_value_too_big_for_a_dead_letter_message_is_still_one(
    test_settings, prism_topics, spawn, monkeypatch
) -> None:
    """Default max_bytes (1 MiB) is above librdkafka's default message.max.bytes (1,000,000):
    a ~1 MB value the broker took could not be dead-lettered whole, and producing it raised."""
    monkeypatch.setenv("PRISM_REDIS_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    s, topic = test_settings, prism_topics["model-updates"]
    big = b"\x00" + b"z" * 1_000_000  # under max_bytes: refused as bad-marker, not oversized
    good = CODEC.encode("WeightSummary", _update(_summary("a")))
    produce(s, topic, [(b"a", big), (b"a", good)])
    proc = spawn("merger", "run", "--round-size", "1", "--group", "gbig", "--idle-exit", "3",
                 log_name="merger-big.log")  # fmt: skip
    assert wait_exit(proc, 120) == 0
    assert "Traceback" not in Path(proc.log_path).read_text(errors="replace")
    (dead,) = [r for _, _, r in decoded(s.kafka_bootstrap or "", prism_topics["dead-letter"])]
    assert dead["reason_code"] == "bad-marker" and dead["offset"] == 0
    assert big.startswith(dead["value"]) and len(dead["value"]) > 800_000
    assert "cut to its first" in dead["reason"]
    published = read_topic(s.kafka_bootstrap or "", prism_topics["global-model"])
    versions = sorted((k, CODEC.decode(v)["version"]) for _, _, k, v in published)
    # the good update after it merged (and its layout, announced once)
    assert versions == [(b"fraud-linear@whole", 1)]  # a first version goes whole

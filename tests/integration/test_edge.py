"""`prism edge run` against the real local Kafka + Redis (and a broker of its own).

Every guarantee of the edge issue is one test here: scoring through a broker
stop/restart with every summary merged exactly once, SIGKILL + restart with
nothing resent under another payload and a model equal to an uninterrupted
run's, stale vs fresh global models, private mode leaking nothing, hybrid
mode forwarding its sample, bad local records dead-lettered with reasons.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from helpers.broker import controller_port
from helpers.services import (
    decoded,
    global_versions,
    read_topic,
    service_env,
    wait_exit,
    wait_for_log,
)

from models.serialization import (
    global_model_record,
    summary_from_weight_record,
)
from models.specs import get_spec
from prism.cli import main
from prism.stack import kafka as local_kafka
from prism.stack.topics import TOPICS, create_topics
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import read_events

pytestmark = pytest.mark.integration
CODEC = Codec()
SPEC = get_spec("fraud-linear")


def fraud_log(tmp_path: Path, events: int, *, sites: int = 1, labels: str = "inline") -> Path:
    path = tmp_path / f"fraud-{events}-{sites}.avro"
    args = [
        "datagen",
        "fraud",
        "--events",
        str(events),
        "--sites",
        str(sites),
        "--regions",
        "1",
        "--seed",
        "5",
        "--fraud-rate",
        "0.05",
        "--labels",
        labels,
        "--out",
        str(path),
    ]
    assert main(args) == 0
    return path


def event_ids(path: Path) -> list[str]:
    return [e.record["event_id"] for e in read_events(path) if e.record_type == "Transaction"]


def start(settings: Settings, tmp_path: Path, *args: str, name: str) -> subprocess.Popen:
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism.cli", *args],
        env=service_env(settings),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def edge(
    settings: Settings, tmp_path: Path, node: str, source: Path, *extra: str
) -> subprocess.Popen:
    args = ("edge", "run", "--node", node, "--source", str(source),
            "--state-dir", str(tmp_path / node), "--drain-timeout", "60", *extra)  # fmt: skip
    return start(settings, tmp_path, *args, name=node)


def offline_scores(tmp_path: Path, node: str) -> list[dict]:
    path = tmp_path / node / "scores-offline.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def outbox_rows(tmp_path: Path, node: str) -> list[tuple[int, bytes, int | None]]:
    path = tmp_path / node / "outbox.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT sequence, payload, sent_ms FROM outbox ORDER BY sequence"
        ).fetchall()
    except sqlite3.OperationalError:  # created, but its tables not yet
        return []
    finally:
        db.close()


def records(bootstrap: str, topic: str, partitions: int = 3) -> list[dict]:
    return [CODEC.decode(v) for _p, _o, _k, v in read_topic(bootstrap, topic, partitions)]


def updates_of(
    bootstrap: str, topic: str, node: str, partitions: int = 3
) -> list[tuple[int, bytes]]:
    """(sequence, payload) of every copy of ``node``'s summaries on model-updates."""
    out = []
    for _p, _o, key, value in read_topic(bootstrap, topic, partitions):
        if key == node.encode():
            out.append((int(CODEC.decode(value)["sequence"]), value))
    return out


def wait_until(check, what: str, timeout: float = 90.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if proc is not None and proc.poll() is not None:
            tail = Path(proc.log_path).read_text()[-2000:]  # type: ignore[attr-defined]
            raise AssertionError(f"process exited before {what}; log tail:\n{tail}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def high_watermark(probe: Consumer, topic: str) -> int:
    """Partition 0's end offset, or -1 while the broker answers with a retriable error: a
    topic just created is led before every broker's metadata says so (NOT_LEADER for a
    moment, seen on a clean-clone run), which is "not yet", not a failure."""
    try:
        return probe.get_watermark_offsets(TopicPartition(topic, 0), 5)[1]
    except KafkaException as e:
        err = e.args[0]
        if not (err.retriable() or err.code() in _NOT_LED_YET):
            raise
        return -1


_NOT_LED_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


# -- broker outage -------------------------------------------------------------
@pytest.fixture
def own_broker(test_settings: Settings, tmp_path: Path):
    """A broker of this test's own (the session broker must not be stopped)."""
    broker_settings = Settings(state_dir=tmp_path / "broker")
    bootstrap = local_kafka.start(broker_settings)
    try:
        yield broker_settings, test_settings.model_copy(update={"kafka_bootstrap": bootstrap})
    finally:
        local_kafka.stop(broker_settings)


# more than the test needs: the agent is stopped (SIGTERM) once it adopted a global after the
# reconnect, so how long the broker takes to come back never decides whether it gets there
OUTAGE_EVENTS = 20_000


@pytest.mark.reliability  # #10.4: an edge offline for a long stretch
def test_broker_outage_scoring_goes_on_and_every_summary_is_merged_exactly_once(
    own_broker, tmp_path: Path, monkeypatch
):
    broker_settings, settings = own_broker
    prefix = f"t{os.urandom(4).hex()}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    settings = settings.model_copy(update={"redis_prefix": prefix})
    create_topics(settings, bootstrap=settings.kafka_bootstrap or "", partitions=1)
    log = fraud_log(tmp_path, OUTAGE_EVENTS)
    merger = start(settings, tmp_path, "merger", "run", "--round-size", "1", "--round-timeout",
                   "600", "--idle-exit", "40", "--group", "edge-outage", name="merger")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=60)
    agent = edge(settings, tmp_path, "e1", log, "--rate", "250", "--summary-every", "150")
    wait_for_log(agent, "global model adopted", timeout=90)
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    controller = controller_port(broker_settings)
    assert local_kafka.stop(broker_settings)  # SIGTERM of the real broker process
    wait_for_log(agent, "link down", timeout=60)
    # a long stretch: over a third of the log is scored while cut off
    wait_until(lambda: len(offline_scores(tmp_path, "e1")) >= 1500, "offline scoring", proc=agent)
    local_kafka.start(broker_settings, ports=(port, controller))
    wait_for_log(agent, "link up again", timeout=90)

    def after_reconnect() -> str:
        return Path(agent.log_path).read_text().split("link up again", 1)[1]  # type: ignore[attr-defined]

    # the global model caught up: adopted again after the link came back; then stop the agent
    wait_until(lambda: "global model adopted" in after_reconnect(), "an adoption", 180, agent)
    agent.send_signal(signal.SIGTERM)
    assert wait_exit(agent, timeout=180) == 0
    assert wait_exit(merger, timeout=120) == 0
    handled = int(_log_field(agent, "events"))
    assert handled < OUTAGE_EVENTS  # stopped before the log ran out: the wait decided, not the log

    # every event scored exactly once: on the topic while linked, in the file while cut off
    bootstrap = settings.kafka_bootstrap
    online = [r["event_id"] for r in records(bootstrap, settings.topic("scores"), 1)]
    offline = [r["event_id"] for r in offline_scores(tmp_path, "e1")]
    assert len(online) > 0 and len(offline) >= 1500
    assert Counter(online + offline) == Counter(event_ids(log)[:handled])
    # every summary delivered, once, and merged exactly once
    rows = outbox_rows(tmp_path, "e1")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and all(r[2] for r in rows)
    sent = updates_of(bootstrap, settings.topic("model-updates"), "e1", 1)
    assert sorted(s for s, _ in sent) == [r[0] for r in rows]
    versions = global_versions(bootstrap, settings.topic("global-model"), 1)
    merged = Counter((c.node_id, c.sequence) for v in versions for c in v.contributors)
    assert merged == Counter({("e1", s): 1 for s, _ in sent})
    learned = int(_log_field(agent, "learned"))
    assert learned == handled
    assert max(versions, key=lambda v: v.version).summary.n_samples == learned


@pytest.mark.reliability  # #25.2, found by `make chaos` (seed 1861302288)
def test_an_edge_killed_in_a_broker_outage_loses_no_score(own_broker, tmp_path: Path):
    """Scores handed to librdkafka while the broker does not answer (the agent still
    linked) were only in memory when the next save moved the position past their
    events; a kill -9 lost them. The broker paused (SIGSTOP: connections stay open, so
    the agent keeps producing and each save's flush times out), the edge killed -9, the
    broker resumed, the edge restarted on the same state: every event of the log has a
    score on the topic or in the offline file (repeats allowed: there was a kill -9)."""
    broker_settings, settings = own_broker
    create_topics(settings, bootstrap=settings.kafka_bootstrap or "", partitions=1)
    log = fraud_log(tmp_path, 4_000)
    flags = ("--rate", "400", "--summary-every", "20")
    agent = edge(settings, tmp_path, "e1", log, *flags)
    scores = settings.topic("scores")
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    wait_until(lambda: high_watermark(probe, scores) >= 400, "scores", 90, agent)  # the end only
    probe.close()
    pid = local_kafka.running_pid(broker_settings)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(14)  # a few saves, each after a flush that times out (5 s)
        assert agent.poll() is None
        agent.kill()  # kill -9 in the outage
        assert agent.wait(30) == -signal.SIGKILL
    finally:
        os.kill(pid, signal.SIGCONT)
    again = edge(settings, tmp_path, "e1", log, *flags)
    assert wait_exit(again, timeout=240) == 0

    online = [r["event_id"] for r in records(settings.kafka_bootstrap, scores, 1)]
    offline = [r["event_id"] for r in offline_scores(tmp_path, "e1")]
    unscored = set(event_ids(log)) - set(online + offline)
    assert not unscored, f"{len(unscored)} events never scored, e.g. {sorted(unscored)[:5]}"


def _log_field(proc: subprocess.Popen, name: str) -> str:
    text = Path(proc.log_path).read_text()  # type: ignore[attr-defined]
    done = [line for line in text.splitlines() if "edge agent done" in line][-1]
    return done.split(f" {name}=", 1)[1].split()[0].rstrip('"')  # the last one ends msg="..."


# -- crash and restart ---------------------------------------------------------
def test_sigkill_and_restart_resend_nothing_twice_and_end_like_an_uninterrupted_run(
    test_settings: Settings, prism_topics, tmp_path: Path
):
    log = fraud_log(tmp_path, 3000, labels="late")
    reference = edge(test_settings, tmp_path, "ref", log, "--summary-every", "100")
    assert wait_exit(reference) == 0
    victim = edge(test_settings, tmp_path, "e2", log, "--summary-every", "100", "--rate", "600")
    wait_until(
        lambda: sum(1 for r in outbox_rows(tmp_path, "e2") if r[2]) >= 8, "8 sent", proc=victim
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed_at = len(outbox_rows(tmp_path, "e2"))
    assert 8 <= killed_at < len(outbox_rows(tmp_path, "ref"))
    resumed = edge(test_settings, tmp_path, "e2", log, "--summary-every", "100")
    assert wait_exit(resumed) == 0
    assert "edge state restored node=e2" in Path(resumed.log_path).read_text()

    rows, ref_rows = outbox_rows(tmp_path, "e2"), outbox_rows(tmp_path, "ref")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and all(r[2] for r in rows)
    sent = updates_of(test_settings.kafka_bootstrap, prism_topics["model-updates"], "e2")
    by_seq: dict[int, set[bytes]] = {}
    for seq, payload in sent:
        by_seq.setdefault(seq, set()).add(payload)
    assert sorted(by_seq) == [r[0] for r in rows]
    assert all(len(copies) == 1 for copies in by_seq.values()), "a sequence with two payloads"
    # the increments add up to what an uninterrupted node learned, and the final models agree
    increments = [summary_from_weight_record(CODEC.decode(p)) for _, p, _ in rows]
    ref_increments = [summary_from_weight_record(CODEC.decode(p)) for _, p, _ in ref_rows]
    assert sum(s.n_samples for s in increments) == sum(s.n_samples for s in ref_increments)
    final, ref_final = _saved_local(tmp_path, "e2"), _saved_local(tmp_path, "ref")
    assert final.features == ref_final.features and final.n_samples == ref_final.n_samples
    for name in ref_final.tensors:
        np.testing.assert_allclose(
            final.tensor(name), ref_final.tensor(name), rtol=1e-9, atol=1e-12
        )


def _saved_local(tmp_path: Path, node: str):
    db = sqlite3.connect(tmp_path / node / "outbox.sqlite3")
    (blob,) = db.execute("SELECT local FROM state").fetchone()
    db.close()
    return summary_from_weight_record(CODEC.decode(blob))


# -- global models: stale -> fallback, fresh -> blend ----------------------------
def publish_global(settings: Settings, topic: str, *, version: int, age_s: float) -> None:
    model = SPEC.new_model()
    rng = np.random.default_rng(1)
    for _ in range(500):
        x = {"amount": float(rng.normal(50, 20)), "hour": float(rng.integers(0, 24))}
        SPEC.learn_one(model, x, bool(x["amount"] > 80))
    summary = SPEC.summarize(model)
    created = int((time.time() - age_s) * 1000)
    record = global_model_record(summary, version=version, strategy="fedavg", created_at_ms=created)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    producer.produce(topic, CODEC.encode("GlobalModel", record), key=b"fraud-linear")
    assert producer.flush(30) == 0


def test_a_global_delta_waits_for_a_whole_version_then_the_chain_is_taken(
    test_settings: Settings, prism_topics
) -> None:
    """A delta from a version the node does not hold is skipped, not dead-lettered; a whole
    version (``<model>@whole``) starts the chain and the next delta adds up to the sender's."""
    from edge_agents.globals import TopicGlobals
    from models.packing import apply_delta, pack_delta

    topic, bad = prism_topics["global-model"], []
    feed = TopicGlobals(
        test_settings.kafka_bootstrap or "", topic, model_name="fraud-linear", node_id="n1",
        codec=CODEC, on_bad=lambda *a: bad.append(a),
    )  # fmt: skip
    rng = np.random.default_rng(5)
    model = SPEC.new_model()
    versions = []
    for _ in range(3):
        for _ in range(200):
            x = {"amount": float(rng.normal(50, 20)), "hour": float(rng.integers(0, 24))}
            SPEC.learn_one(model, x, bool(x["amount"] > 80))
        versions.append(SPEC.summarize(model))
    v3 = versions[1]
    delta4 = pack_delta(versions[2], v3, "float16")
    now = int(time.time() * 1000)

    def send(record: dict, key: bytes) -> None:
        producer = Producer({"bootstrap.servers": test_settings.kafka_bootstrap})
        producer.produce(topic, CODEC.encode("GlobalModel", record), key=key, partition=0)
        assert producer.flush(30) == 0

    try:
        send(global_model_record(versions[0], version=2, strategy="fedavg", created_at_ms=now,
                                 delta=(1, pack_delta(versions[0], versions[0], "float16"))),
             b"fraud-linear")  # fmt: skip
        deadline = time.monotonic() + 30
        while feed.unresolved == 0 and time.monotonic() < deadline:
            assert feed.poll() is None
        assert feed.unresolved == 1 and bad == []
        send(global_model_record(v3, version=3, strategy="fedavg", created_at_ms=now),
             b"fraud-linear@whole")  # fmt: skip
        send(global_model_record(versions[2], version=4, strategy="fedavg", created_at_ms=now,
                                 delta=(3, delta4)), b"fraud-linear")  # fmt: skip
        send(global_model_record(v3, version=9, strategy="fedavg", created_at_ms=now),
             b"other-model")  # fmt: skip
        got = None
        while (got is None or got.version < 4) and time.monotonic() < deadline + 30:
            got = feed.poll() or got
        assert got is not None and got.version == 4 and feed.unresolved == 1 and bad == []
        want = apply_delta(v3, delta4, versions[2].n_samples)
        for name in want.tensors:
            np.testing.assert_array_equal(got.summary.tensor(name), want.tensor(name))
        np.testing.assert_allclose(got.summary.tensor("weights"),
                                   versions[2].tensor("weights"), rtol=2e-3)  # fmt: skip
    finally:
        feed.close()


@pytest.mark.parametrize(("age_s", "expected"), [(7200.0, "local"), (0.0, "blend")])
def test_a_stale_global_model_falls_back_to_local_a_fresh_one_is_blended(
    test_settings: Settings, prism_topics, tmp_path: Path, age_s: float, expected: str
):
    log = fraud_log(tmp_path, 1500)
    publish_global(test_settings, prism_topics["global-model"], version=7, age_s=age_s)
    agent = edge(test_settings, tmp_path, "g1", log, "--rate", "300", "--global-max-age", "600")
    assert wait_exit(agent) == 0
    assert "global model adopted node=g1 version=7" in Path(agent.log_path).read_text()
    scores = [r for _, _, r in decoded(test_settings.kafka_bootstrap, prism_topics["scores"])]
    assert len(scores) == 1500
    after = [s for s in scores if s["model_version"] == 7]
    assert len(after) >= 750  # adopted within the first half (2.5 s) of the run
    assert {s["source"] for s in after} == {expected}
    assert {s["source"] for s in scores if s["model_version"] == 0} <= {"local"}
    for s in after:  # a mixed score names its experts, their weights and versions
        if expected == "blend":
            experts = {e["name"]: e for e in s["experts"]}
            # the shifted global (on by default) joins while the site's labels favour the global
            assert {"personal", "global"} <= experts.keys() <= {"personal", "global", "shifted"}
            assert experts["global"]["version"] == 7
            assert sum(e["weight"] for e in s["experts"]) == pytest.approx(1.0)
        else:
            assert s["experts"] is None


# -- privacy and forwarding ----------------------------------------------------
def test_private_mode_leaks_no_raw_event_hybrid_forwards_its_sample_and_bad_records_are_kept(
    test_settings: Settings, prism_topics, tmp_path: Path
):
    log = fraud_log(tmp_path, 2000, sites=2)
    sites = sorted({e.record["site_id"] for e in read_events(log) if e.record_type != "Label"})
    private = edge(test_settings, tmp_path, "p1", log, "--sites", sites[0])
    assert wait_exit(private) == 0
    mine = [e.record for e in read_events(log)
            if e.record_type == "Transaction" and e.record["site_id"] == sites[0]]  # fmt: skip
    markers = {r["account_id"].encode() for r in mine} | {r["merchant_id"].encode() for r in mine}
    leaked, kinds = [], Counter()
    for name in TOPICS:
        for _p, _o, _k, value in read_topic(test_settings.kafka_bootstrap, prism_topics[name]):
            rtype, _record = CODEC.decode_any(value)
            kinds[(name, rtype)] += 1
            leaked += [(name, m) for m in markers if m in value]
    # only scores (id + score, no features) and weight summaries left the node
    assert set(kinds) == {("scores", "Score"), ("model-updates", "WeightSummary")}
    assert kinds[("scores", "Score")] == len(mine)
    assert leaked == []

    hybrid = edge(test_settings, tmp_path, "h1", log, "--sites", sites[1], "--mode", "hybrid",
                  "--forward-sample", "0.3")  # fmt: skip
    assert wait_exit(hybrid) == 0
    mine = [e.record for e in read_events(log)
            if e.record_type == "Transaction" and e.record["site_id"] == sites[1]]  # fmt: skip
    assert mine
    chosen = {r["event_id"] for r in mine if zlib.crc32(r["event_id"].encode()) < 0.3 * 2**32}
    forwarded = [
        r for _, _, r in decoded(test_settings.kafka_bootstrap, prism_topics["transactions"])
    ]
    assert Counter(r["event_id"] for r in forwarded) == Counter(chosen)
    assert 0.2 * len(mine) < len(chosen) < 0.4 * len(mine)
    assert all(r["site_id"] == sites[1] for r in forwarded)


def test_bad_local_records_go_to_the_local_dead_letter_file_with_reasons(
    test_settings: Settings, prism_topics, tmp_path: Path
):
    good = {"type": "Transaction", "region": "r0", "event_id": "g1", "ts": 1_700_000_000_000,
            "site_id": "s1", "account_id": "a", "merchant_id": "m", "amount": 10.0,
            "currency": "EUR", "features": {"f": 1.0}, "label": False}  # fmt: skip
    reading = {"type": "SensorReading", "region": "r0", "event_id": "r1", "ts": 1_700_000_000_000,
               "site_id": "s1", "device_id": "d", "features": {"t": 1.0}}  # fmt: skip
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "event_id": "nan", "features": {"f": "NaN"}}),
        json.dumps({**good, "event_id": "neg", "amount": -5.0}),
        json.dumps({k: v for k, v in good.items() if k != "ts"}),
        json.dumps({**good, "event_id": "inf", "features": {"f": float("inf")}}),
        json.dumps(reading),
        json.dumps({**good, "event_id": "g2"}),
    ]
    source = tmp_path / "local.jsonl"
    source.write_text("\n".join(lines) + "\n")
    agent = edge(test_settings, tmp_path, "b1", source)
    assert wait_exit(agent) == 0
    dead = [
        json.loads(x) for x in (tmp_path / "b1" / "dead-letters.jsonl").read_text().splitlines()
    ]
    assert [d["where"] for d in dead] == [{"line": n} for n in (2, 3, 4, 5, 6)] + [7]
    assert [d["reason_code"] for d in dead] == ["invalid-record"] * 5 + ["wrong-record-type"]
    reasons = [d["reason"] for d in dead]
    assert "JSON" in reasons[0] and "NaN" in reasons[1] and "amount" in reasons[2]
    assert "'ts'" in reasons[3] and "finite" in reasons[4] and "SensorReading" in reasons[5]
    # a log's record has no bytes of its own: the dead letter holds its contract encoding
    wrong = CODEC.decode(base64.b64decode(dead[5]["raw"]), expected="SensorReading")
    assert wrong["event_id"] == "r1" and wrong["features"] == {"t": 1.0}
    scores = [r for _, _, r in decoded(test_settings.kafka_bootstrap, prism_topics["scores"])]
    assert sorted(s["event_id"] for s in scores) == ["g1", "g2"]


def test_bad_flags_are_a_message_and_exit_code_2(test_settings: Settings, tmp_path: Path):
    bad = start(test_settings, tmp_path, "edge", "run", "--node", "x", "--source", "f.avro",
                "--summary-every", "soon", name="bad")  # fmt: skip
    assert wait_exit(bad, timeout=60) == 2
    assert "--summary-every" in Path(bad.log_path).read_text()


def test_a_local_topic_source_resumes_after_its_saved_offsets(
    test_settings: Settings, prism_topics, tmp_path: Path, monkeypatch
):
    log = fraud_log(tmp_path, 900, labels="late")
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", test_settings.kafka_bootstrap or "")
    monkeypatch.setenv("PRISM_TOPIC_PREFIX", test_settings.topic_prefix)
    assert main(["replay", str(log), "--no-progress"]) == 0
    local = prism_topics["transactions"]  # the node's local topic: its events...
    producer = Producer(
        {"bootstrap.servers": test_settings.kafka_bootstrap, "enable.idempotence": True}
    )
    producer.produce(local, b"\x00garbage", key=b"x")  # ...and one undecodable message
    for _p, _o, key, value in read_topic(test_settings.kafka_bootstrap, prism_topics["labels"]):
        producer.produce(local, value, key=key)  # late labels on the same topic
    assert producer.flush(30) == 0
    args = ("--source", f"topic:{local}", "--idle-exit", "4", "--summary-every", "200")
    first = start(test_settings, tmp_path, "edge", "run", "--node", "t1", "--state-dir",
                  str(tmp_path / "t1"), *args, name="t1-first")  # fmt: skip
    assert wait_exit(first) == 0
    assert _log_field(first, "events") == "900" and _log_field(first, "learned") == "900"
    dead = (tmp_path / "t1" / "dead-letters.jsonl").read_text().splitlines()
    assert len(dead) == 1 and json.loads(dead[0])["reason_code"] == "undecodable"
    again = start(test_settings, tmp_path, "edge", "run", "--node", "t1", "--state-dir",
                  str(tmp_path / "t1"), *args, name="t1-again")  # fmt: skip
    assert wait_exit(again) == 0
    assert _log_field(again, "events") == "0"  # nothing read twice
    scores = records(test_settings.kafka_bootstrap, prism_topics["scores"])
    assert Counter(s["event_id"] for s in scores) == Counter(event_ids(log))


# -- privacy budget, with quantized summaries (#25 item 4) ---------------------------
def test_a_spent_dp_budget_stops_publishing_but_not_scoring_and_the_registry_shows_epsilon(
    test_settings: Settings, prism_topics, tmp_path: Path, monkeypatch
) -> None:
    from models.privacy import epsilon_for, releases_within

    prefix = f"t{os.urandom(4).hex()}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    settings = test_settings.model_copy(update={"redis_prefix": prefix})
    sigma, budget, delta = 3.0, 4.0, 1e-5
    allowed = releases_within(budget, sigma, delta)
    assert allowed == 5  # eps(5 releases) = 3.85 <= 4 < eps(6) = 4.25
    log = fraud_log(tmp_path, 2000)
    agent = edge(settings, tmp_path, "dp1", log, "--summary-every", "100",
                 "--dp-clip", "1.0", "--dp-noise", str(sigma), "--dp-delta", str(delta),
                 "--dp-epsilon-budget", str(budget), "--quantize", "int8")  # fmt: skip
    assert wait_exit(agent) == 0
    text = Path(agent.log_path).read_text()  # type: ignore[attr-defined]
    assert text.count("DP budget spent node=dp1") == 1, text[-3000:]

    # exactly the releases the accountant allows left the node, each with its epsilon
    rows = outbox_rows(tmp_path, "dp1")
    assert [r[0] for r in rows] == list(range(1, allowed + 1)) and all(r[2] for r in rows)
    sent = updates_of(settings.kafka_bootstrap, prism_topics["model-updates"], "dp1")
    assert sorted(seq for seq, _ in sent) == list(range(1, allowed + 1))
    for seq, payload in sent:
        record = CODEC.decode(payload)
        metrics = record["metrics"]
        assert record["state"]["packed"]["dtype"] == "int8"  # noised, then quantized to send
        assert metrics["dp_epsilon"] == pytest.approx(epsilon_for(sigma, delta, seq))
        assert (metrics["dp_releases"], metrics["dp_delta"]) == (seq, delta)
    # ... and it went on scoring every event, and learning them
    scores = records(settings.kafka_bootstrap, prism_topics["scores"])
    assert Counter(r["event_id"] for r in scores) == Counter(event_ids(log))
    assert int(_log_field(agent, "learned")) == 2000

    # the merger records the node's spend in the registry; `prism models nodes` shows it
    merger = start(settings, tmp_path, "merger", "run", "--round-size", "1", "--round-timeout",
                   "600", "--idle-exit", "4", "--group", f"dp-{prefix}", name="merger")  # fmt: skip
    assert wait_exit(merger) == 0
    query = settings.redis_query_url.get_secret_value()  # type: ignore[union-attr]
    env = service_env(settings) | {"PRISM_REDIS_PREFIX": prefix, "PRISM_REDIS_QUERY_URL": query}

    def nodes(*flags: str) -> str:
        command = [sys.executable, "-m", "prism.cli", "models", "nodes", *flags]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    (record,) = [n for n in json.loads(nodes("--json")) if n["node_id"] == "dp1"]
    assert record["last_sequence"] == allowed
    assert record["metrics"]["dp_epsilon"] == pytest.approx(epsilon_for(sigma, delta, allowed))
    assert record["metrics"]["dp_delta"] == delta
    header, *lines = [line for line in nodes().splitlines() if line.strip()]
    assert "EPSILON" in header.split()
    assert any(line.startswith("dp1") and "3.85 (delta 1e-05)" in line for line in lines)

"""Replay into the real local Kafka and read everything back."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from prism.cli import main
from prism.data.iot import IotConfig, generate_iot
from prism.data.labels import LabelPolicy
from prism.data.replay import ReplayOptions, replay
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import open_writer, read_events

pytestmark = pytest.mark.integration

Consumed = list[tuple[str, int, int, bytes, str, dict[str, Any]]]


def consume(bootstrap: str, topics: list[str], expected: int, timeout: float = 90.0) -> Consumed:
    """Every message of ``topics`` from the start, decoded, polling until ``expected``."""
    codec = Codec()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    out: Consumed = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=1.0)
            for m in batch:
                assert m.error() is None, m.error()
                rtype, record = codec.decode_any(m.value())
                out.append((m.topic(), m.partition(), m.offset(), m.key(), rtype, record))
            if len(out) >= expected and not batch:  # caught up, and nothing more came
                break
    finally:
        consumer.close()
    return out


def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("PRISM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path / "state"))


def test_cli_replay_routes_by_type_and_keeps_per_site_order(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_settings: Settings,
    prism_topics: dict[str, str],
) -> None:
    cli_env(monkeypatch, test_settings, tmp_path)
    log = tmp_path / "fraud.avro"
    assert (
        main(
            [
                "datagen",
                "fraud",
                "--events",
                "3000",
                "--sites",
                "6",
                "--seed",
                "3",
                "--out",
                str(log),
            ]
        )
        == 0
    )
    assert main(["replay", str(log), "--no-progress"]) == 0
    sent = [(e.record_type, e.record) for e in read_events(log)]
    topics = [prism_topics["transactions"], prism_topics["labels"]]
    got = consume(test_settings.kafka_bootstrap or "", topics, expected=len(sent))
    assert sorted((t, r["event_id"]) for t, r in sent) == sorted(
        (t, r["event_id"]) for *_, t, r in got
    )
    by_id = {(t, r["event_id"]): r for t, r in sent}
    assert all(by_id[(t, r["event_id"])] == r for *_, t, r in got)
    for topic, _, _, _, rtype, _ in got:
        assert topic == prism_topics["labels" if rtype == "Label" else "transactions"]
    _assert_per_key_order(sent, got)


def _assert_per_key_order(sent: list[tuple[str, dict[str, Any]]], got: Consumed) -> None:
    """Each key lives in one partition, and its events come back in log order."""
    expected: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for rtype, record in sent:
        key = (record.get("site_id") or record["event_id"]).encode()
        expected[(rtype, key)].append(record["event_id"])
    seen: dict[tuple[str, bytes], list[tuple[int, int, str]]] = defaultdict(list)
    for _, partition, offset, key, rtype, record in got:
        seen[(rtype, key)].append((partition, offset, record["event_id"]))
    assert set(seen) == set(expected)
    for k, rows in seen.items():
        assert len({p for p, _, _ in rows}) == 1, f"key {k} spread over partitions"
        assert [e for _, _, e in sorted(rows)] == expected[k]


def test_label_delay_sends_labels_after_their_events(
    tmp_path: Path, test_settings: Settings, unique_topic: Callable[..., str]
) -> None:
    log = tmp_path / "iot.jsonl"
    config = IotConfig(events=2000, sites=4, seed=5, labels=LabelPolicy(mode="inline"))
    with open_writer(log) as writer:
        for chunk in generate_iot(config):
            writer.write_many(chunk)
    topic = unique_topic(partitions=3)
    options = ReplayOptions(path=log, topic=topic, label_delay=5, progress=False)
    bootstrap = test_settings.kafka_bootstrap or ""
    summary = replay(
        options,
        bootstrap=bootstrap,
        topics=dict.fromkeys(("Transaction", "SensorReading", "Label"), topic),
        codec=Codec(),
    )
    assert summary.events == 4000 and summary.failed == 0 and not summary.raw_path
    got = consume(bootstrap, [topic], expected=4000)
    assert len(got) == 4000
    position: dict[str, tuple[int, int]] = {}
    for _, partition, offset, _, rtype, record in sorted(got, key=lambda g: (g[1], g[2])):
        if rtype == "SensorReading":
            assert record["label"] is None
            position[record["event_id"]] = (partition, offset)
        else:
            assert position[record["event_id"]] < (partition, offset)
    assert len(position) == 2000


def test_bad_input_is_reported_or_stops_with_strict(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_settings: Settings,
    unique_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(monkeypatch, test_settings, tmp_path)
    good = {"type": "Label", "event_id": "e1", "ts": 1, "label": True, "site_id": "s"}
    log = tmp_path / "labels.jsonl"
    log.write_text(f"{json.dumps(good)}\n{{broken\n{json.dumps(good)}\n")
    topic = unique_topic(partitions=1)
    assert main(["replay", str(log), "--topic", topic, "--no-progress"]) == 0
    report = [json.loads(line) for line in (tmp_path / "labels.jsonl.errors.jsonl").open()]
    assert [r["line"] for r in report] == [2] and "not valid JSON" in report[0]["reason"]
    assert "bad_records=1" in capsys.readouterr().out
    assert len(consume(test_settings.kafka_bootstrap or "", [topic], expected=2)) == 2
    assert main(["replay", str(log), "--topic", topic, "--strict", "--no-progress"]) == 4
    assert "line 2" in capsys.readouterr().err


def test_undeliverable_events_make_the_exit_code_non_zero(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(monkeypatch, test_settings, tmp_path)
    log = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", "20", "--out", str(log)]) == 0
    missing = f"missing.{uuid.uuid4().hex}"  # the local broker does not auto-create topics
    code = main(
        ["replay", str(log), "--topic", missing, "--no-progress", "-X", "message.timeout.ms=3000"]
    )
    assert code == 1
    assert "delivery_failures=40" in capsys.readouterr().out


def test_rate_and_limit(
    tmp_path: Path, test_settings: Settings, unique_topic: Callable[..., str]
) -> None:
    log = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", "500", "--out", str(log)]) == 0
    topic = unique_topic(partitions=1)
    options = ReplayOptions(path=log, topic=topic, rate=100.0, limit=60, progress=False)
    start = time.monotonic()
    summary = replay(
        options,
        bootstrap=test_settings.kafka_bootstrap or "",
        topics=dict.fromkeys(("Transaction", "Label"), topic),
        codec=Codec(),
    )
    assert time.monotonic() - start >= 0.55  # 60 events at 100/s
    assert summary.events == 60
    assert len(consume(test_settings.kafka_bootstrap or "", [topic], expected=60)) == 60

"""Replay's sources without a broker: raw Avro path == decode path; label re-timing."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from prism.data.fraud import FraudConfig, generate_fraud
from prism.data.labels import LabelPolicy
from prism.data.replay import resolve_topics
from prism.data.replay_source import Source, delay_labels
from schemas import Codec
from schemas.eventlog import CONTAINER_SCHEMA, BadRecord, Event, open_writer

TOPICS = resolve_topics("auto", lambda name: f"t.{name}")


class SingleObjectLike:
    """Header + schemaless Avro body, the shape of the real codec's avro mode."""

    def __init__(self) -> None:
        self._schemas = {s["name"]: fastavro.parse_schema(s) for s in CONTAINER_SCHEMA}

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(b"\xc3\x01" + hashlib.sha256(name.encode()).digest()[:8])
        fastavro.schemaless_writer(out, self._schemas[name], record)
        return out.getvalue()


class JsonLike:
    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        if record.get("amount", 0) > 1e6:
            raise ValueError("amount too large")
        return json.dumps({"type": name, **record}).encode()


def _log(path: Path, labels: str = "late", events: int = 3000) -> Path:
    cfg = FraudConfig(events=events, seed=1, labels=LabelPolicy(mode=labels))
    with open_writer(path) as writer:
        for chunk in generate_fraud(cfg):
            writer.write_many(chunk)
    return path


def _messages(source: Source) -> list:
    return [m for batch in source.batches(batch=500) for m in batch]


@pytest.mark.parametrize(
    "codec",
    [Codec(), Codec(mode="json"), SingleObjectLike(), JsonLike()],
    ids=["codec-avro", "codec-json", "single-object-like", "json-like"],
)
def test_raw_avro_path_sends_what_the_decode_path_sends(tmp_path: Path, codec: Any) -> None:
    avro = _log(tmp_path / "log.avro")
    bad: list[BadRecord] = []
    raw = Source(avro, codec=codec, topics=TOPICS, on_bad=bad.append)
    decoded = Source(avro, codec=codec, topics=TOPICS, on_bad=bad.append, decode=True)
    assert raw.raw and not decoded.raw
    fast, slow = _messages(raw), _messages(decoded)
    assert fast == slow and len(fast) == 6000 and not bad
    assert {m[0] for m in fast} == {"t.transactions", "t.labels"}
    assert raw.consumed == 6000
    uses_prefix = isinstance(codec, SingleObjectLike) or getattr(codec, "mode", "") == "avro"
    assert all(bool(p) == uses_prefix for p in raw._prefix.values())


def test_keys_are_sites_and_limit_counts_input_records(tmp_path: Path) -> None:
    avro = _log(tmp_path / "log.avro")
    source = Source(avro, codec=SingleObjectLike(), topics=TOPICS, on_bad=print, limit=100)
    messages = _messages(source)
    assert len(messages) == 100 and source.consumed == 100
    assert all(key.startswith(b"store-") for _, key, _, _ in messages)


def test_bad_records_reach_the_callback_with_numbers(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    good = json.dumps({"type": "Label", "event_id": "e", "ts": 5, "label": True})
    path.write_text(f"{good}\nnot json\n{good}\n")
    bad: list[BadRecord] = []
    source = Source(path, codec=JsonLike(), topics=TOPICS, on_bad=bad.append)
    assert len(_messages(source)) == 2
    assert [b.line_no for b in bad] == [2]


def test_truncated_avro_in_the_raw_path_is_a_bad_record(tmp_path: Path) -> None:
    avro = _log(tmp_path / "log.avro", events=20_000)
    cut = tmp_path / "cut.avro"
    cut.write_bytes(avro.read_bytes()[:-5000])
    bad: list[BadRecord] = []
    source = Source(cut, codec=SingleObjectLike(), topics=TOPICS, on_bad=bad.append)
    sent = _messages(source)
    assert len(bad) == 1 and "truncated or corrupt" in bad[0].reason
    assert 0 < len(sent) < 40_000


def _event(i: int, label: bool | None, ts: int | None = None) -> Event:
    record = {"event_id": f"e{i}", "ts": ts if ts is not None else i * 10, "site_id": "s"}
    return Event(i, "SensorReading", record | {"label": label})


def test_label_delay_sends_each_label_after_the_nth_following_event() -> None:
    events = [_event(1, True), _event(2, False), _event(3, None), _event(4, True)]
    out = list(delay_labels(iter(events), 2))
    order = [(e.record_type, e.record["event_id"], e.record["ts"]) for e in out]
    assert order == [
        ("SensorReading", "e1", 10),
        ("SensorReading", "e2", 20),
        ("SensorReading", "e3", 30),
        ("Label", "e1", 30),  # known when the 2nd event after e1 (e3) happened
        ("SensorReading", "e4", 40),
        ("Label", "e2", 40),
        ("Label", "e4", 40),  # pending at the end: after the last event, its ts
    ]
    assert all(e.record["label"] is None for e in out if e.record_type == "SensorReading")
    assert [e.record["label"] for e in out if e.record_type == "Label"] == [True, False, True]


def test_label_delay_zero_follows_each_event_and_passes_labels_through() -> None:
    existing = Event(9, "Label", {"event_id": "x", "ts": 1, "label": True, "site_id": None})
    out = list(delay_labels(iter([_event(1, False), existing]), 0))
    assert [e.record_type for e in out] == ["SensorReading", "Label", "Label"]
    assert out[1].record == {"event_id": "e1", "ts": 10, "label": False, "site_id": "s"}
    assert out[2] is existing


def test_label_delay_takes_the_decode_path(tmp_path: Path) -> None:
    avro = _log(tmp_path / "log.avro", labels="inline", events=500)
    source = Source(avro, codec=JsonLike(), topics=TOPICS, on_bad=print, label_delay=10)
    messages = _messages(source)
    assert not source.raw
    assert sum(m[0] == "t.labels" for m in messages) == 500
    assert len(messages) == 1000


def test_a_bad_first_record_is_reported_and_the_raw_path_still_used(tmp_path: Path) -> None:
    records = [r for chunk in generate_fraud(FraudConfig(events=50, seed=2)) for r in chunk]
    records[0][1]["features"]["amount_log"] = float("nan")  # the codec refuses NaN
    path = tmp_path / "log.avro"
    with open_writer(path) as writer:
        writer.write_many(records)
    bad: list[BadRecord] = []
    source = Source(path, codec=Codec(), topics=TOPICS, on_bad=bad.append)
    assert len(_messages(source)) == len(records) - 1
    assert [b.line_no for b in bad] == [1] and "finite" in bad[0].reason
    assert source._prefix["Transaction"]  # later records took the raw path

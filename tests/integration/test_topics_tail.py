"""`prism topics tail` and `prism topics decode` against the real local broker.

Each kind of Prism record is produced with the code the services encode it
with, read back through the command line, and compared field by field.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from models.serialization import global_model_record, weight_summary_record
from models.specs import get_spec
from prism.cli import main
from prism.data.fraud import FraudConfig, generate_fraud
from prism.data.iot import IotConfig, generate_iot
from prism.tail import Tail
from runtime.settings import Settings
from schemas import Codec
from schemas.codec import to_json_compatible
from streams.dead_letters import DeadLetters
from streams.telemetry import Telemetry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CODEC = Codec()
GARBAGE = b"\x00\xffnot a prism message\n\x00"


def _generated(task: str) -> list[tuple[str, dict[str, Any]]]:
    """(schema, record) pairs from the generators `prism datagen` uses (labels included)."""
    chunks = (
        generate_fraud(FraudConfig(events=400))
        if task == "fraud"
        else generate_iot(IotConfig(events=100))
    )
    return [pair for chunk in chunks for pair in chunk]


def _summary() -> Any:
    spec = get_spec("fraud-linear")
    model = spec.new_model()
    rng = np.random.default_rng(1)
    for _ in range(30):
        spec.learn_one(model, {"amount": float(rng.normal(3, 1))}, bool(rng.random() < 0.3))
    return spec.summarize(model).with_provenance(node_id="store-1", sequence=4, base_version=2)


def _records(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """A few records of one topic's kind, encoded as the services encode them."""
    events = {"transactions": ("fraud", "Transaction"), "labels": ("fraud", "Label"),
              "sensor-readings": ("iot", "SensorReading")}  # fmt: skip
    if kind in events:
        task, wanted = events[kind]
        return [(s, r) for s, r in _generated(task) if s == wanted][:5]
    if kind == "scores":
        return [("Score", {
            "event_id": f"e{i}", "ts": 1_700_000_000_000 + i, "scored_at": 1_700_000_000_050 + i,
            "node_id": "store-1", "model_name": "fraud-linear", "model_version": 3,
            "source": "blend", "score": 0.125 * i, "latency_ms": 0.5, "label": None,
            "experts": [{"name": "personal", "weight": 0.75, "version": 0},
                        {"name": "global", "weight": 0.25, "version": 3}],
        }) for i in range(3)]  # fmt: skip
    if kind == "model-updates":
        record = weight_summary_record(
            _summary(), tier="edge", created_at_ms=1_700_000_000_000, quantize="float16"
        )
        return [("WeightSummary", record)]
    if kind == "global-model":
        record = global_model_record(
            _summary(), version=5, parent_version=4, strategy="fedavg",
            created_at_ms=1_700_000_000_000, contributors=[], excluded=[],
        )  # fmt: skip
        return [("GlobalModel", record)]
    raise AssertionError(kind)


def _produce(settings: Settings, topic: str, values: list[tuple[bytes | None, bytes | None]]):
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in values:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


@pytest.fixture
def cli_env(test_settings: Settings, prism_topics: dict[str, str], monkeypatch, tmp_path: Path):
    """main() reads its settings from the environment: point them at the test's topics."""
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", test_settings.kafka_bootstrap or "")
    monkeypatch.setenv("PRISM_TOPIC_PREFIX", test_settings.topic_prefix)
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path / "no-stack"))
    return prism_topics


def _tail(capsys, *argv: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["topics", "tail", *argv, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    "kind",
    ["transactions", "sensor-readings", "labels", "scores", "model-updates", "global-model"],
)
def test_tail_decodes_every_kind_of_record(
    kind: str, cli_env: dict[str, str], test_settings: Settings, capsys
) -> None:
    records = _records(kind)
    keys = [f"k{i}".encode() for i in range(len(records))]
    values = [(k, CODEC.encode(s, r)) for k, (s, r) in zip(keys, records, strict=True)]
    _produce(test_settings, cli_env[kind], values)
    lines = _tail(capsys, kind, "--from-beginning", "--max", str(len(records)))
    by_key = {line["key"]: line for line in lines}
    assert len(by_key) == len(records)
    for key, (schema, record) in zip(keys, records, strict=True):
        line = by_key[key.decode()]
        assert line["topic"] == cli_env[kind]
        assert line["schema"] == schema
        assert line["value"] == to_json_compatible(CODEC.decode(CODEC.encode(schema, record)))
        assert isinstance(line["timestamp_ms"], int) and line["offset"] >= 0


def test_dead_letters_show_the_raw_bad_bytes_and_garbage_is_an_error_line(
    cli_env: dict[str, str], test_settings: Settings, capsys
) -> None:
    producer = Producer({"bootstrap.servers": test_settings.kafka_bootstrap})
    letters = DeadLetters(producer, cli_env["dead-letter"], service="prism-central",
                          codec=CODEC, telemetry=Telemetry("prism-central"))  # fmt: skip
    letters.send(topic="prism.transactions", partition=1, offset=42, key=b"store-1",
                 value=GARBAGE, reason_code="bad-marker", reason="starts with 00ff")  # fmt: skip
    producer.produce(cli_env["dead-letter"], GARBAGE, key=b"\xff\xfe")  # not a Prism value
    assert producer.flush(30) == 0
    full_name = cli_env["dead-letter"]  # with the prefix, as `topics list` prints it
    lines = _tail(capsys, full_name, "--from-beginning", "--max", "2")
    letter = next(line for line in lines if "schema" in line)
    assert letter["schema"] == "DeadLetter"
    assert base64.b64decode(letter["value"]["value"]) == GARBAGE
    assert (letter["value"]["offset"], letter["value"]["reason_code"]) == (42, "bad-marker")
    bad = next(line for line in lines if "error" in line)
    assert bad["error"]["reason_code"] == "bad-marker"
    assert base64.b64decode(bad["raw_base64"]) == GARBAGE
    assert (bad["key"], base64.b64decode(bad["key_base64"])) == (None, b"\xff\xfe")


def test_readable_lines_a_tombstone_and_idle_stop(
    cli_env: dict[str, str], test_settings: Settings, capsys
) -> None:
    (schema, record), = _records("scores")[:1]  # fmt: skip
    _produce(test_settings, cli_env["global-model"], [(b"fraud-linear", None)])
    _produce(test_settings, cli_env["scores"], [(b"e0", CODEC.encode(schema, record))])
    capsys.readouterr()
    assert main(["topics", "tail", "scores", "--from-beginning", "--idle", "1.5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{cli_env['scores']}[") and " key=e0 Score {" in line
    assert json.loads(line.split(" Score ", 1)[1])["experts"][0]["weight"] == 0.75
    (tomb,) = _tail(capsys, "global-model", "--from-beginning", "--max", "1")
    assert (tomb["key"], tomb["schema"], tomb["value"]) == ("fraud-linear", None, None)


def test_without_from_beginning_only_records_produced_after_start_are_read(
    cli_env: dict[str, str], test_settings: Settings
) -> None:
    old, new = (CODEC.encode(s, r) for s, r in _records("scores")[:2])
    _produce(test_settings, cli_env["scores"], [(b"old", old)])
    tail = Tail(test_settings.kafka_bootstrap or "", "scores",
                prefix=test_settings.topic_prefix).setup()  # fmt: skip
    try:
        _produce(test_settings, cli_env["scores"], [(b"new", new)])
        got = list(tail.records(idle_s=3.0))
    finally:
        tail.close()
    assert [r["key"] for r in got] == ["new"]


def test_unknown_topic_is_a_message_listing_prism_topics(cli_env: dict[str, str], capsys) -> None:
    assert main(["topics", "tail", "scroes", "--max", "1"]) == 3
    err = capsys.readouterr().err
    assert "no topic 'scroes'" in err and "scores" in err and "Traceback" not in err


def _decode(stdin: bytes, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRISM_STATE_DIR": "/nonexistent-prism-state"}
    return subprocess.run(
        [sys.executable, "-m", "prism", "topics", "decode", *argv],
        input=stdin, capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_kcat_piped_into_decode_as_documented(
    cli_env: dict[str, str], test_settings: Settings
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: `make setup` installs Debian's kcat"
    (schema, record), = _records("scores")[:1]  # fmt: skip
    value = CODEC.encode(schema, record)
    # a newline and a digit-space inside a value: a delimiter framing would split it here
    tricky = CODEC.encode("Label", {"event_id": "a\nb 7 ", "ts": 10, "label": True, "site_id": "s"})
    topic = cli_env["labels"]
    _produce(test_settings, topic,
             [(b"a", value), (b"b", tricky), (b"c", None), (b"d", GARBAGE)])  # fmt: skip
    dump = subprocess.run(  # the documented command, with -b and -q for the test broker
        [kcat, "-C", "-b", test_settings.kafka_bootstrap or "", "-t", topic, "-e", "-q",
         "-f", "%S %s\n"],
        capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    done = _decode(dump)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(x) for x in done.stdout.decode().splitlines()]
    assert len(lines) == 4
    decoded = [x for x in lines if x.get("schema")]
    assert sorted(x["schema"] for x in decoded) == ["Label", "Score"]
    assert any(x["value"].get("event_id") == "a\nb 7 " for x in decoded)
    assert {"schema": None, "value": None} in lines  # the null value (kcat's -1 length)
    (bad,) = [x for x in lines if "error" in x]
    assert base64.b64decode(bad["raw_base64"]) == GARBAGE


def test_decode_base64_lines_and_a_broken_frame() -> None:
    value = CODEC.encode("Label", {"event_id": "e1", "ts": 1, "label": False, "site_id": None})
    lines = base64.b64encode(value) + b"\n\n" + base64.b64encode(GARBAGE) + b"\n"
    done = _decode(lines, "--framing", "base64")
    assert done.returncode == 0, done.stderr.decode()
    first, second = (json.loads(x) for x in done.stdout.decode().splitlines())
    assert (first["schema"], first["value"]["event_id"]) == ("Label", "e1")
    assert second["error"]["reason_code"] == "bad-marker"
    broken = _decode(b"12 short")
    assert broken.returncode == 2
    assert b"value 1: 12 bytes announced, 5 read" in broken.stderr
    assert b"Traceback" not in broken.stderr

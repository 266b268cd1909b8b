"""Property tests: every schema round-trips; no input makes decode raise anything else."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from helpers.avro_strategies import from_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import SCHEMA_NAMES, Codec, SchemaError
from schemas.codec import MARKER, fingerprint, load_schema

BOUNDED = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@pytest.mark.parametrize("mode", ["avro", "json"])
def test_every_schema_round_trips(name: str, mode: str) -> None:
    codec = Codec(mode=mode)

    @settings(max_examples=60, deadline=None)
    @given(from_schema(load_schema(name)))
    def check(record: dict[str, Any]) -> None:
        data = codec.encode(name, record)
        assert codec.encode(name, record) == data  # deterministic
        assert codec.decode(data, expected=name) == record

    check()


@BOUNDED
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_schema_error(data: bytes) -> None:
    with contextlib.suppress(SchemaError):
        Codec().decode(data)


@BOUNDED
@given(st.sampled_from(SCHEMA_NAMES), st.binary(max_size=200))
def test_random_body_behind_a_valid_header(name: str, body: bytes) -> None:
    with contextlib.suppress(SchemaError):
        Codec().decode(MARKER + fingerprint(name) + body)


@BOUNDED
@given(st.data())
def test_mutated_valid_messages_only_raise_schema_error(data: st.DataObject) -> None:
    """Bit flips and cuts either fail cleanly or decode to a record the codec accepts."""
    name = data.draw(st.sampled_from(SCHEMA_NAMES))
    mode = data.draw(st.sampled_from(["avro", "json"]))
    message = bytearray(Codec(mode).encode(name, data.draw(from_schema(load_schema(name)))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(message) - 1))
        message[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(message)))
    try:
        found, record = Codec().decode_any(bytes(message[:cut]))
    except SchemaError:
        return
    Codec().encode(found, record)  # whatever decodes is a valid record


@BOUNDED
@given(st.sampled_from(SCHEMA_NAMES), st.data())
def test_avro_and_json_agree(name: str, data: st.DataObject) -> None:
    record = data.draw(from_schema(load_schema(name)))
    via_avro = Codec("avro").decode(Codec("avro").encode(name, record))
    assert via_avro == Codec("json").decode(Codec("json").encode(name, record))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_encode_many_writes_the_same_bytes_as_encode(name: str) -> None:
    codec = Codec()

    @settings(max_examples=40, deadline=None)
    @given(st.lists(from_schema(load_schema(name)), min_size=1, max_size=4))
    def check(records: list[dict[str, Any]]) -> None:
        assert codec.encode_many(name, records) == [codec.encode(name, r) for r in records]

    check()


SCORE = {
    "event_id": "e1",
    "ts": 1,
    "scored_at": 2,
    "node_id": "n",
    "model_name": "fraud-linear",
    "model_version": 0,
    "source": "central",
    "score": 0.5,
    "label": None,
    "latency_ms": 1.0,
}


@pytest.mark.parametrize(
    ("change", "reason_code"),
    [
        ({"score": float("nan")}, "non-finite"),
        ({"latency_ms": float("inf")}, "non-finite"),
        ({"score": "high"}, "wrong-type"),
        ({"event_id": None}, "wrong-type"),
        ({"source": "elsewhere"}, "wrong-type"),
    ],
)
def test_encode_many_refuses_what_encode_refuses(change: dict, reason_code: str) -> None:
    with pytest.raises(SchemaError) as e:
        Codec().encode_many("Score", [SCORE, SCORE | change])
    assert e.value.reason_code == reason_code


def test_encode_many_fills_defaults_like_encode() -> None:
    short = {k: v for k, v in SCORE.items() if k not in ("label", "latency_ms")}
    assert Codec().encode_many("Score", [short]) == [Codec().encode("Score", short)]

"""The hand-written Transaction decoder equals the codec, record for record, error for error.

Property tests: for any input the outcome of the fast path (record or
SchemaError with its reason code and message) is the outcome of the Codec.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.avro_strategies import from_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Codec, SchemaError
from schemas.codec import MARKER, fingerprint, load_schema
from schemas.hotpath_events import TransactionDecoder, _read_transaction

BOUNDED = settings(max_examples=300, deadline=None)


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args, **kwargs)
    except SchemaError as e:
        return "error", (e.reason_code, str(e))


def same(raw: bytes, codec: Codec | None = None) -> None:
    codec = codec or Codec()
    fast = outcome(TransactionDecoder(codec).decode, raw)
    slow = outcome(codec.decode, raw, expected="Transaction")
    assert fast == slow
    if fast[0] == "ok":  # key order too: the learner's feature tuples come from it
        assert list(fast[1]) == list(slow[1])
        assert list(fast[1]["features"]) == list(slow[1]["features"])


def test_the_fast_path_is_on_for_the_current_schema() -> None:
    """A schema change switches the fast path off; this says so (update the module)."""
    assert TransactionDecoder(Codec()).fast


@BOUNDED
@given(from_schema(load_schema("Transaction")))
def test_a_transaction_is_read_by_hand_as_the_codec_reads_it(tx: dict[str, Any]) -> None:
    try:
        data = Codec().encode("Transaction", tx)
    except SchemaError:  # a non-finite double the strategy drew: not a valid message
        return
    same(data)


def test_generated_transactions_take_the_fast_path() -> None:
    """Not only equal: the bench's own events are read by hand (no silent fallback)."""
    from prism.data.fraud import FraudConfig, generate_fraud

    codec = Codec()
    txs = [
        codec.encode(name, r)
        for chunk in generate_fraud(FraudConfig(events=300, sites=5, seed=3))
        for name, r in chunk
        if name == "Transaction"
    ]
    assert txs
    for data in txs:
        assert _read_transaction(data, {}) == codec.decode(data, expected="Transaction")


@BOUNDED
@given(st.data())
def test_damaged_transactions_fail_or_decode_exactly_as_the_codec(data: st.DataObject) -> None:
    codec = Codec()
    tx = data.draw(from_schema(load_schema("Transaction")))
    try:
        message = bytearray(codec.encode("Transaction", tx))
    except SchemaError:
        return
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(message) - 1))
        message[i] ^= 1 << data.draw(st.integers(0, 7))
    message = message[: data.draw(st.integers(0, len(message)))] + data.draw(st.binary(max_size=3))
    same(bytes(message), codec)


@BOUNDED
@given(st.binary(max_size=80))
def test_any_body_behind_the_transaction_header_decodes_as_the_codec(body: bytes) -> None:
    same(MARKER + fingerprint("Transaction") + body)


def _tx(features: bytes, tail: bytes = b"\x00", amount: bytes = b"\x00" * 8) -> bytes:
    strings = b"\x02e" + b"\x02" + b"\x02s\x02r\x02a\x02m"  # event_id, ts 1, four strings
    return MARKER + fingerprint("Transaction") + strings + amount + b"\x06EUR" + features + tail


NAN = b"\x00\x00\x00\x00\x00\x00\xf8\x7f"
INF = b"\x00\x00\x00\x00\x00\x00\xf0\x7f"


@pytest.mark.parametrize(
    "raw",
    [
        Codec("json").encode("Label", {"event_id": "e", "ts": 1, "label": True}),
        Codec().encode("Label", {"event_id": "e", "ts": 1, "label": True}),
        _tx(b"\x00"),  # no features, label null: fast
        _tx(b"\x02\x02x" + b"\x00" * 8 + b"\x00", b"\x02\x01"),  # one feature, label True
        _tx(b"\x02\x02x" + NAN + b"\x00"),  # a NaN feature
        _tx(b"\x02\x02x" + INF + b"\x00"),  # an infinite feature
        _tx(b"\x00", amount=NAN),  # a NaN amount
        _tx(b"\x02\x02x" + b"\x00" * 8 + b"\x02\x02y" + b"\x00" * 8 + b"\x00"),  # two blocks
        _tx(b"\x01\x14\x02x" + b"\x00" * 8 + b"\x00"),  # a sized (negative-count) block
        _tx(b"\x04\x02x" + b"\x00" * 8 + b"\x02x" + b"\x01" * 8 + b"\x00"),  # duplicate name
        _tx(b"\x02\x04\xff\xfe" + b"\x00" * 8 + b"\x00"),  # a name that is not UTF-8
        _tx(b"\x00", b"\x02\x02"),  # boolean byte 2
        _tx(b"\x00", b"\x04\x01"),  # union branch 2
        _tx(b"\x00", b"\x00\x00"),  # a byte after it
        _tx(b"\x02\x02x" + b"\x00" * 4),  # cut inside a double
    ],
    ids=[
        "json",
        "other-schema",
        "empty-features",
        "one-feature",
        "nan-feature",
        "inf-feature",
        "nan-amount",
        "two-map-blocks",
        "sized-map-block",
        "duplicate-feature",
        "invalid-utf8-name",
        "boolean-byte-2",
        "union-branch-2",
        "trailing-byte",
        "cut-double",
    ],
)
def test_what_the_fast_path_does_not_read_goes_to_the_codec(raw: bytes) -> None:
    same(raw)


def test_an_oversized_transaction_is_refused_as_the_codec_refuses_it() -> None:
    raw = _tx(b"\x00")
    assert outcome(TransactionDecoder(Codec(max_bytes=20)).decode, raw)[1][0] == "oversized"


def test_the_central_intake_decodes_transactions_by_hand() -> None:
    """The worker's intake (and so its speed) uses the fast path; other schemas the codec."""
    from streams.central.intake import Intake

    fraud = Intake(Codec(), events_topic="t", event_schema="Transaction", dead=None)  # type: ignore[arg-type]
    assert isinstance(fraud.event_decoder.__self__, TransactionDecoder)  # type: ignore[attr-defined]
    iot = Intake(Codec(), events_topic="s", event_schema="SensorReading", dead=None)  # type: ignore[arg-type]
    assert not hasattr(iot.event_decoder, "__self__")

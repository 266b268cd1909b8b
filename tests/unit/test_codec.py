"""Every bad-input kind the issue names raises SchemaError with its reason."""

from __future__ import annotations

import io
import math

import fastavro
import pytest

from schemas import SCHEMA_NAMES, Codec, SchemaError
from schemas.codec import MARKER, _current, fingerprint, load_schema, register_writer_schema

TX = {
    "event_id": "e1",
    "ts": 1_700_000_000_000,
    "site_id": "store-1",
    "region": "eu",
    "account_id": "acc-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "currency": "EUR",
    "features": {"amount": 12.5, "hour": 3.0},
    "label": None,
}


@pytest.fixture(params=["avro", "json"])
def codec(request: pytest.FixtureRequest) -> Codec:
    return Codec(mode=request.param)


def reason(fn, *args, **kwargs) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        fn(*args, **kwargs)
    return info.value


def test_round_trip_both_modes(codec: Codec) -> None:
    assert codec.decode(codec.encode("Transaction", TX), expected="Transaction") == TX


def test_avro_header_is_marker_plus_little_endian_crc64() -> None:
    data = Codec().encode("Transaction", TX)
    assert data[:2] == MARKER and data[2:10] == fingerprint("Transaction")
    # the known CRC-64-AVRO vector of the schema "int" (Avro spec / Java SchemaNormalization)
    int_fp = fastavro.schema.fingerprint('"int"', "CRC-64-AVRO")
    assert int.from_bytes(bytes.fromhex(int_fp), "little") == 0x7275D51A3F395C8F


def test_fingerprints_are_distinct_per_schema() -> None:
    assert len({fingerprint(n) for n in SCHEMA_NAMES}) == len(SCHEMA_NAMES)


def test_garbage_is_bad_marker() -> None:
    err = reason(Codec().decode, b"\x00\x01" + b"x" * 20)
    assert err.reason_code == "bad-marker" and "c301" in str(err)


def test_short_message_is_truncated() -> None:
    assert reason(Codec().decode, MARKER + b"\x01").reason_code == "truncated"


def test_cut_body_is_truncated() -> None:
    data = Codec().encode("Transaction", TX)
    for cut in (11, len(data) // 2, len(data) - 1):
        assert reason(Codec().decode, data[:cut]).reason_code == "truncated"


def test_padded_body_is_refused() -> None:
    data = Codec().encode("Label", {"event_id": "e", "ts": 1, "label": True})
    assert reason(Codec().decode, data + b"\x00").reason_code == "truncated"


def test_unknown_fingerprint_names_it() -> None:
    data = MARKER + b"\x01" * 8 + b"\x00"
    err = reason(Codec().decode, data)
    assert err.reason_code == "unknown-fingerprint" and "0101010101010101" in str(err)


def test_other_topic_schema_is_wrong_schema(codec: Codec) -> None:
    data = codec.encode("Label", {"event_id": "e", "ts": 1, "label": False})
    err = reason(codec.decode, data, expected="Transaction")
    assert err.reason_code == "wrong-schema" and "Label" in str(err)


def test_missing_required_field(codec: Codec) -> None:
    record = {k: v for k, v in TX.items() if k != "amount"}
    err = reason(codec.encode, "Transaction", record)
    assert err.reason_code == "missing-field" and "amount" in str(err)


def test_missing_field_in_json_bytes() -> None:
    data = b'{"schema":"prism.Label","record":{"event_id":"e","label":true}}'
    err = reason(Codec().decode, data)
    assert err.reason_code == "missing-field" and "ts" in str(err)


def test_wrong_type(codec: Codec) -> None:
    err = reason(codec.encode, "Transaction", dict(TX, amount="12.5"))
    assert err.reason_code == "wrong-type" and "amount" in str(err)
    assert reason(codec.encode, "Transaction", dict(TX, ts=True)).reason_code == "wrong-type"


def test_wrong_type_in_json_bytes() -> None:
    data = b'{"schema":"prism.Label","record":{"event_id":"e","ts":"yesterday","label":true}}'
    assert reason(Codec().decode, data).reason_code == "wrong-type"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_feature_names_the_feature(codec: Codec, bad: float) -> None:
    err = reason(codec.encode, "Transaction", dict(TX, features={"amount": bad}))
    assert err.reason_code == "non-finite" and "features['amount']" in str(err)


def test_non_finite_inside_avro_bytes_is_caught_on_decode() -> None:
    # a foreign writer can put NaN in the body: encode around our checks
    parsed = _current("Transaction").parsed
    out = io.BytesIO()
    out.write(MARKER + fingerprint("Transaction"))
    fastavro.schemaless_writer(out, parsed, dict(TX, features={"v": math.nan}))
    err = reason(Codec().decode, out.getvalue())
    assert err.reason_code == "non-finite" and "features['v']" in str(err)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_constants(token: bytes) -> None:
    data = (
        b'{"schema":"prism.Score","record":{"event_id":"e","ts":1,"scored_at":1,"node_id":"n",'
        b'"model_name":"m","model_version":0,"source":"local","score":' + token + b"}}"
    )
    assert reason(Codec().decode, data).reason_code == "non-finite"


def test_oversized_refused_before_parsing() -> None:
    small = Codec(max_bytes=1024)
    err = reason(small.decode, MARKER + b"\x00" * 5000)
    assert err.reason_code == "oversized" and "1024" in str(err)
    huge = dict(TX, features={f"f{i}": 1.0 for i in range(500)})
    assert reason(small.encode, "Transaction", huge).reason_code == "oversized"


def test_huge_declared_length_fails_fast() -> None:
    # event_id claims a 1 GiB string inside a 20-byte body
    data = MARKER + fingerprint("Label") + b"\xfe\xff\xff\xff\x07" + b"abc"
    assert reason(Codec().decode, data).reason_code == "truncated"


def test_invalid_utf8_in_avro_string() -> None:
    data = MARKER + fingerprint("Label") + b"\x04\xff\xfe" + b"\x02" + b"\x01"
    assert reason(Codec().decode, data).reason_code == "invalid-utf8"


def test_invalid_utf8_json() -> None:
    assert reason(Codec().decode, b'{"schema": "\xff"}').reason_code == "invalid-utf8"


def test_bad_json_and_unknown_schema() -> None:
    assert reason(Codec().decode, b"{not json").reason_code == "bad-json"
    assert reason(Codec().decode, b'{"a": 1}').reason_code == "bad-json"
    data = b'{"schema":"evil.Thing","record":{}}'
    assert reason(Codec().decode, data).reason_code == "unknown-schema"
    assert reason(Codec().encode, "Thing", {}).reason_code == "unknown-schema"


def test_unknown_field_is_refused_not_dropped(codec: Codec) -> None:
    assert reason(codec.encode, "Transaction", dict(TX, extra=1)).reason_code == "unknown-field"


def test_bad_enum_symbol() -> None:
    score = {"event_id": "e", "ts": 1, "scored_at": 1, "node_id": "n", "model_name": "m",
             "model_version": 0, "source": "oracle", "score": 0.5}  # fmt: skip
    assert reason(Codec().encode, "Score", score).reason_code == "wrong-type"


def test_not_bytes_at_all() -> None:
    assert reason(Codec().decode, "a string").reason_code == "wrong-type"  # type: ignore[arg-type]


def test_defaults_fill_optional_fields(codec: Codec) -> None:
    record = {k: v for k, v in TX.items() if k not in ("currency", "label")}
    decoded = codec.decode(codec.encode("Transaction", record))
    assert decoded["currency"] == "EUR" and decoded["label"] is None


def test_register_older_writer_schema_evolution() -> None:
    old = load_schema("Transaction")
    old["fields"] = [f for f in old["fields"] if f["name"] != "currency"]
    old_fp = register_writer_schema("Transaction", old)
    assert old_fp != fingerprint("Transaction")
    body = io.BytesIO()
    parsed = fastavro.parse_schema(old, named_schemas={})
    fastavro.schemaless_writer(body, parsed, {k: v for k, v in TX.items() if k != "currency"})
    decoded = Codec().decode(MARKER + old_fp + body.getvalue(), expected="Transaction")
    assert decoded == dict(TX, currency="EUR")

"""Every bad-input kind the issue names raises SchemaError with its reason."""

from __future__ import annotations

import io
import math
import time
import tracemalloc

import fastavro
import numpy as np
import pytest

from schemas import SCHEMA_NAMES, Codec, SchemaError
from schemas.codec import MARKER, fingerprint
from schemas.errors import REASON_CODES
from schemas.registry import current

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


@pytest.mark.parametrize(
    ("bad", "shown"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")]
)
def test_non_finite_feature_names_the_feature(codec: Codec, bad: float, shown: str) -> None:
    err = reason(codec.encode, "Transaction", dict(TX, features={"amount": bad}))
    assert err.reason_code == "non-finite" and f"features['amount'] is {shown}" in str(err)
    err = reason(codec.encode, "Transaction", dict(TX, amount=np.float32(bad)))
    assert err.reason_code == "non-finite" and f"amount is {shown}" in str(err)


def test_non_finite_inside_avro_bytes_is_caught_on_decode() -> None:
    # a foreign writer can put NaN in the body: encode around our checks
    parsed = current("Transaction").parsed
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


def _zigzag(n: int) -> bytes:
    """An Avro long as written on the wire (zigzag varint)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _avro_str(text: str) -> bytes:
    return _zigzag(len(text)) + text.encode()


def test_huge_declared_length_fails_fast() -> None:
    # event_id claims a 1 GiB string inside a 20-byte body
    data = MARKER + fingerprint("Label") + b"\xfe\xff\xff\xff\x07" + b"abc"
    assert reason(Codec().decode, data).reason_code == "truncated"


@pytest.mark.parametrize("count", [2**31, 2**62, -(2**62)])
def test_huge_declared_string_or_map_fails_fast_without_allocating(count: int) -> None:
    tx_prefix = _avro_str("e") + _zigzag(1) + b"".join(map(_avro_str, "abcd"))
    cases = [
        MARKER + fingerprint("Label") + _zigzag(count) + b"abc",  # a string that long
        MARKER + fingerprint("Transaction") + tx_prefix + b"\0" * 8 + _avro_str("EUR")
        + _zigzag(count) + _avro_str("k"),  # a features map with that many entries
    ]  # fmt: skip
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for data in cases:
            err = reason(Codec().decode, data)
            assert err.reason_code == "truncated" and "object at 0x" not in str(err)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5.0 and peak < 10_000_000  # no hang, no 2 GB


def test_int_field_wider_than_32_bits_in_avro_bytes() -> None:
    # Avro varints carry any width; the contract says int is 32 bits
    body = _avro_str("t") + _zigzag(2**40) + _zigzag(0) + b"\0\0"
    body += _avro_str("r") + _avro_str("r") + _avro_str("s") + _zigzag(1)
    err = reason(Codec().decode, MARKER + fingerprint("DeadLetter") + body)
    assert err.reason_code == "wrong-type" and "partition" in str(err) and str(2**40) in str(err)


def test_numpy_scalars_are_accepted_and_come_back_plain(codec: Codec) -> None:
    record = dict(TX, amount=np.float64(2.5), ts=np.int64(7), features={"a": np.float32(0.5)})
    decoded = codec.decode(codec.encode("Transaction", record))
    assert decoded == dict(TX, amount=2.5, ts=7, features={"a": 0.5})
    assert type(decoded["ts"]) is int and type(decoded["features"]["a"]) is float
    assert reason(codec.encode, "Transaction", dict(TX, ts=np.bool_(True))).reason_code == (
        "wrong-type"
    )


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
    err = reason(codec.encode, "Transaction", dict(TX, extra=1))
    assert err.reason_code == "wrong-type" and "unknown field(s) extra" in str(err)


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


def test_reason_codes_are_the_documented_set() -> None:
    assert set(REASON_CODES) == {
        "truncated", "bad-marker", "unknown-fingerprint", "wrong-schema", "missing-field",
        "wrong-type", "non-finite", "oversized", "bad-json", "invalid-utf8", "unknown-schema",
    }  # fmt: skip
    assert issubclass(SchemaError, ValueError)
    with pytest.raises(ValueError, match="unknown reason code"):
        SchemaError("oops", "not a code")


def _crc64_avro(data: bytes) -> int:
    """The Avro spec's reference fingerprint, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_crc64_of_the_canonical_form_little_endian() -> None:
    canonical = (
        '{"name":"prism.Label","type":"record","fields":['
        '{"name":"event_id","type":"string"},{"name":"ts","type":"long"},'
        '{"name":"label","type":"boolean"},{"name":"site_id","type":["null","string"]}]}'
    )
    assert fingerprint("Label") == _crc64_avro(canonical.encode()).to_bytes(8, "little")


@pytest.mark.parametrize("data", [b"", b"\xc3"])
def test_empty_or_cut_marker_is_truncated(data: bytes) -> None:
    assert reason(Codec().decode, data).reason_code == "truncated"


def test_timestamps_are_plain_ints(codec: Codec) -> None:
    decoded = codec.decode(codec.encode("Transaction", TX))
    assert type(decoded["ts"]) is int and decoded["ts"] == TX["ts"]


def test_int_features_become_floats_and_large_finite_values_pass(codec: Codec) -> None:
    record = dict(TX, features={"n": 3, "big": 1e308, "bigger": 1e308})
    decoded = codec.decode(codec.encode("Transaction", record))
    assert decoded["features"] == {"n": 3.0, "big": 1e308, "bigger": 1e308}
    assert type(decoded["features"]["n"]) is float


def test_non_finite_deep_path_is_named(codec: Codec) -> None:
    tensor = {"name": "w", "dtype": "float64", "shape": [1], "data": b"\0" * 8, "scale": math.inf}
    state = {"model_name": "m", "model_kind": "linear", "features": ["a"], "n_samples": 1,
             "tensors": [tensor]}  # fmt: skip
    summary = {"node_id": "n", "tier": "edge", "sequence": 1, "base_version": 0,
               "created_at": 1, "state": state}  # fmt: skip
    err = reason(codec.encode, "WeightSummary", summary)
    assert err.reason_code == "non-finite" and "state.tensors[0].scale" in str(err)


def test_out_of_range_int_and_wrong_union_branch(codec: Codec) -> None:
    dead = {"topic": "t", "partition": 2**31, "offset": 0, "reason_code": "x", "reason": "y",
            "service": "s", "failed_at": 1}  # fmt: skip
    err = reason(codec.encode, "DeadLetter", dead)
    assert err.reason_code == "wrong-type" and "partition" in str(err)
    err = reason(codec.encode, "Transaction", dict(TX, label="yes"))
    assert err.reason_code == "wrong-type" and "label" in str(err)


def test_bytes_travel_as_base64_in_json() -> None:
    dead = {"topic": "t", "partition": 0, "offset": 7, "key": b"\x00\xff", "value": None,
            "reason_code": "bad-marker", "reason": "r", "service": "s", "failed_at": 1}  # fmt: skip
    data = Codec(mode="json").encode("DeadLetter", dead)
    assert b'"key":"AP8="' in data
    assert Codec().decode(data, expected="DeadLetter") == dead
    bad = data.replace(b'"AP8="', b'"not base64!"')
    err = reason(Codec().decode, bad)
    assert err.reason_code == "wrong-type" and "key" in str(err)


def test_json_with_leading_whitespace_and_memoryview_input() -> None:
    data = Codec(mode="json").encode("Transaction", TX)
    assert Codec().decode(b"\n  " + data) == TX
    assert Codec().decode(memoryview(Codec().encode("Transaction", TX))) == TX


def test_json_schema_field_must_be_a_full_prism_name() -> None:
    data = Codec(mode="json").encode("Label", {"event_id": "e", "ts": 1, "label": True})
    err = reason(Codec().decode, data.replace(b"prism.Label", b"Label"))
    assert err.reason_code == "unknown-schema" and "'Label'" in str(err)


def test_json_deep_nesting_is_bad_json() -> None:
    assert reason(Codec().decode, b'{"schema":' + b"[" * 100_000).reason_code == "bad-json"


@pytest.mark.parametrize("where", ["event_id", "feature key"])
def test_lone_surrogate_is_invalid_utf8(codec: Codec, where: str) -> None:
    bad = "x\ud921"
    record = dict(TX, event_id=bad) if where == "event_id" else dict(TX, features={bad: 1.0})
    assert reason(codec.encode, "Transaction", record).reason_code == "invalid-utf8"
    data = Codec(mode="json").encode("Transaction", TX).replace(b'"e1"', b'"\\ud921"')
    err = reason(Codec().decode, data)
    assert err.reason_code == "invalid-utf8" and "event_id" in str(err)


def test_non_ascii_text_round_trips(codec: Codec) -> None:
    record = dict(TX, merchant_id="café ☕", features={"größe": 1.0})
    assert codec.decode(codec.encode("Transaction", record)) == record
    assert "café ☕".encode() in Codec(mode="json").encode("Transaction", record)  # readable


def test_huge_map_block_count_fails_fast() -> None:
    # a features map claiming 2**62 entries, then nothing: must not loop or allocate
    data = Codec().encode("Transaction", dict(TX, features={}, label=None))
    assert data.endswith(b"\x00\x00")  # empty map, then the null branch of label
    err = reason(Codec().decode, data[:-2] + _zigzag(2**62))
    assert err.reason_code == "truncated" and "Transaction" in str(err)

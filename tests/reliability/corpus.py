"""A corpus of bad input, one function per kind: ``(key, value bytes, expected reason)``.

Every kind is built from a *valid* record of the topic's schema, so each one
breaks exactly one thing. ``kinds_for(schema, good, ...)`` gives the generic
kinds that apply to any input topic (what the codec refuses, with the codec's
reason code); the topic-specific kinds (duplicate event ids, a label for an
unknown event, a WeightSummary whose tensors disagree with its features...)
are functions below that the tests call with their own records.

Expected reasons are the dead-letter ``reason_code`` of the central learner
and the merger (both use the codec's code). An edge agent dead-letters locally
with its own coarser codes (see tests/reliability/test_bad_input.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro

from schemas import Codec
from schemas.codec import MARKER
from schemas.registry import current, fingerprint

CODEC = Codec()


class NotApplicable(Exception):
    """The kind cannot be built for this schema (e.g. a NaN feature in a Label)."""


@dataclass(frozen=True)
class Bad:
    kind: str
    key: bytes | None
    value: bytes | None
    reason: str


def avro_unchecked(name: str, record: dict[str, Any]) -> bytes:
    """Single-object bytes written by fastavro without the codec's checks (NaN passes)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, current(name).parsed, record)
    return MARKER + fingerprint(name) + buf.getvalue()


def zigzag_varint(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _json(name: str, record: Any) -> bytes:
    return json.dumps({"schema": f"prism.{name}", "record": record}).encode()


# -- generic kinds: (schema name, a valid record, key) -> Bad ----------------------------
Ctx = tuple[str, dict[str, Any], bytes]


def truncated_avro(c: Ctx) -> Bad:
    data = CODEC.encode(c[0], c[1])
    return Bad("truncated-avro", c[2], data[: len(data) // 2], "truncated")


def cut_inside_header(c: Ctx) -> Bad:
    return Bad("cut-inside-header", c[2], CODEC.encode(c[0], c[1])[:6], "truncated")


def trailing_bytes(c: Ctx) -> Bad:
    return Bad("trailing-bytes", c[2], CODEC.encode(c[0], c[1]) + b"\x00\x00", "truncated")


def wrong_fingerprint(c: Ctx) -> Bad:
    data = CODEC.encode(c[0], c[1])
    return Bad("wrong-fingerprint", c[2], MARKER + b"\x13" * 8 + data[10:], "unknown-fingerprint")


def another_topics_schema(c: Ctx) -> Bad:
    if c[0] == "SensorReading" or c[0] == "WeightSummary":
        other = CODEC.encode("Label", {"event_id": "x", "ts": 1, "label": True})
    else:
        other = CODEC.encode("SensorReading", sensor_reading("other-schema"))
    return Bad("another-topics-schema", c[2], other, "wrong-schema")


def garbage(c: Ctx) -> Bad:
    return Bad("garbage", c[2], b"\x00\x01 not a message \xfe\xff", "bad-marker")


def plain_json(c: Ctx) -> Bad:
    return Bad("plain-json", c[2], b'{"amount": 5, "id": "no envelope"}', "bad-json")


def broken_json(c: Ctx) -> Bad:
    return Bad("broken-json", c[2], b'{"schema": "prism.' + c[0].encode() + b'", "rec', "bad-json")


def deeply_nested_json(c: Ctx) -> Bad:
    return Bad("deeply-nested-json", c[2], b"{" + b'"a":[' * 20_000, "bad-json")


def zero_length(c: Ctx) -> Bad:
    return Bad("zero-length", c[2], b"", "truncated")


def tombstone(c: Ctx) -> Bad:
    return Bad("tombstone", c[2], None, "empty")


def oversize(c: Ctx, max_bytes: int) -> Bad:
    data = CODEC.encode(c[0], c[1])
    return Bad("oversize", c[2], data + b"\x00" * (max_bytes + 1 - len(data)), "oversized")


def missing_field_json(c: Ctx) -> Bad:
    record = {k: v for k, v in _jsonable(c).items() if k not in ("ts", "node_id", "version")}
    return Bad("missing-field-json", c[2], _json(c[0], record), "missing-field")


def wrong_type_json(c: Ctx) -> Bad:
    record = _jsonable(c)
    field = "ts" if "ts" in record else "sequence" if "sequence" in record else "version"
    record[field] = "yesterday"
    return Bad("wrong-type-json", c[2], _json(c[0], record), "wrong-type")


def long_overflow_json(c: Ctx) -> Bad:
    record = _jsonable(c)
    field = "ts" if "ts" in record else "sequence" if "sequence" in record else "version"
    record[field] = 2**70
    return Bad("long-overflow-json", c[2], _json(c[0], record), "wrong-type")


def unknown_field_json(c: Ctx) -> Bad:
    record = _jsonable(c) | {"is_admin": True}
    return Bad("unknown-field-json", c[2], _json(c[0], record), "wrong-type")


def unknown_schema_json(c: Ctx) -> Bad:
    body = json.dumps({"schema": "prism.Nope", "record": {}}).encode()
    return Bad("unknown-schema-json", c[2], body, "unknown-schema")


def nan_in_json(c: Ctx) -> Bad:
    text = _json(c[0], _jsonable(c)).decode()
    field = (
        '"ts": ' if '"ts": ' in text else '"sequence": ' if '"sequence"' in text else '"version": '
    )
    head, _, tail = text.partition(field)
    value = tail[: min(i for i in (tail.find(","), tail.find("}")) if i >= 0)]
    return Bad(
        "nan-in-json", c[2], (head + field + "NaN" + tail[len(value) :]).encode(), "non-finite"
    )


def lone_surrogate_json(c: Ctx) -> Bad:
    record = _jsonable(c)
    field = next(k for k in ("event_id", "node_id", "model_name") if k in record)
    text = _json(c[0], record | {field: "PLACEHOLDER"}).decode()
    return Bad(
        "lone-surrogate-json",
        c[2],
        text.replace("PLACEHOLDER", "\\ud800x").encode(),
        "invalid-utf8",
    )


def invalid_utf8_json(c: Ctx) -> Bad:
    record = _jsonable(c)
    field = next(k for k in ("event_id", "node_id", "model_name") if k in record)
    data = _json(c[0], record | {field: "PLACEHOLDER"})
    return Bad("invalid-utf8-json", c[2], data.replace(b"PLACEHOLDER", b"\xff\xfe"), "invalid-utf8")


def invalid_utf8_avro(c: Ctx) -> Bad:
    field = next(k for k in ("event_id", "node_id", "model_name") if k in c[1])
    data = CODEC.encode(c[0], c[1] | {field: "QQQQQQQQ"})
    assert data.count(b"QQQQQQQQ") == 1
    return Bad(
        "invalid-utf8-avro", c[2], data.replace(b"QQQQQQQQ", b"\xff\xfeQQ\xc3(QQ"), "invalid-utf8"
    )


def huge_map_count(c: Ctx) -> Bad:
    """A map whose block claims 2**60 entries in a few bytes: must not allocate for them."""
    record, field = _with_marked_map(c)
    data = CODEC.encode(c[0], record)
    block = b"\x02\x10ZZZZZZZZ"  # count 1 (zigzag 2), key length 8 (zigzag 16), key
    assert data.count(block) == 1, c[0]
    return Bad(
        "huge-map-count", c[2], data.replace(block, zigzag_varint(2**60) + block[1:]), "truncated"
    )


def huge_string_length(c: Ctx) -> Bad:
    """A string that claims 2**62 bytes: must not allocate them."""
    field = next(k for k in ("event_id", "node_id", "model_name") if k in c[1])
    data = CODEC.encode(c[0], c[1] | {field: "QQQQQQQQ"})
    head = b"\x10QQQQQQQQ"
    assert data.count(head) == 1
    return Bad(
        "huge-string-length", c[2], data.replace(head, zigzag_varint(2**62) + b"QQ"), "truncated"
    )


def _with_marked_map(c: Ctx) -> tuple[dict[str, Any], str]:
    for field in ("features", "metrics"):
        if field in c[1]:
            return c[1] | {field: {"ZZZZZZZZ": 1.0}}, field
    raise NotApplicable(f"{c[0]} has no map of doubles")


def nan_feature_avro(c: Ctx) -> Bad:
    record, field = _with_marked_map(c)
    return Bad(
        "nan-feature-avro",
        c[2],
        avro_unchecked(c[0], record | {field: {"x": math.nan}}),
        "non-finite",
    )


def inf_feature_avro(c: Ctx) -> Bad:
    record, field = _with_marked_map(c)
    return Bad(
        "inf-feature-avro",
        c[2],
        avro_unchecked(c[0], record | {field: {"x": -math.inf}}),
        "non-finite",
    )


GENERIC: tuple[Callable[[Ctx], Bad], ...] = (
    truncated_avro,
    cut_inside_header,
    trailing_bytes,
    wrong_fingerprint,
    another_topics_schema,
    garbage,
    plain_json,
    broken_json,
    deeply_nested_json,
    zero_length,
    tombstone,
    missing_field_json,
    wrong_type_json,
    long_overflow_json,
    unknown_field_json,
    unknown_schema_json,
    nan_in_json,
    lone_surrogate_json,
    invalid_utf8_json,
    invalid_utf8_avro,
    huge_map_count,
    huge_string_length,
    nan_feature_avro,
    inf_feature_avro,
)


def kinds_for(schema: str, good: dict[str, Any], *, key: bytes, max_bytes: int) -> list[Bad]:
    """Every generic kind for a topic whose values are ``schema`` records."""
    c: Ctx = (schema, good, key)
    out = [oversize(c, max_bytes)]
    for kind in GENERIC:
        with contextlib.suppress(NotApplicable):
            out.append(kind(c))
    return out


def json_of(c: Ctx) -> bytes:
    return Codec(mode="json").encode(c[0], c[1])


def _jsonable(c: Ctx) -> dict[str, Any]:
    return json.loads(json_of(c))["record"]


# -- valid records -------------------------------------------------------------------
def transaction(event_id: str, ts: int = 1_700_000_000_000, **over: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "ts": ts, "site_id": "s1", "region": "eu", "account_id": "a1",
        "merchant_id": "m1", "amount": 12.5, "currency": "EUR",
        "features": {"amount": 12.5, "hour": 3.0}, "label": None,
    } | over  # fmt: skip


def sensor_reading(event_id: str, ts: int = 1_700_000_000_000, **over: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "ts": ts, "site_id": "s1", "region": "eu", "device_id": "d1",
        "features": {"vibration": 0.4, "temperature": 0.6}, "label": None,
    } | over  # fmt: skip


def label(event_id: str, ts: int = 1_700_000_000_000, value: bool = True) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "label": value, "site_id": None}

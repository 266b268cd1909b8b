"""The raw Avro splitter agrees byte for byte with fastavro, on any record it can skip."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avroraw import CorruptData, UnsupportedSchema, iter_raw

SCHEMA = {
    "type": "record",
    "name": "test.Everything",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "int"},
        {"name": "ok", "type": "boolean"},
        {"name": "f", "type": "float"},
        {"name": "raw", "type": "bytes"},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["R", "G"]}},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 3}},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "xs", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": ["null", "string"]}},
        ]}},
        {"name": "features", "type": {"type": "map", "values": "double"}},
        {"name": "site_id", "type": ["null", "string"]},
    ],
}  # fmt: skip

text = st.text(max_size=70)  # past 63 characters a length takes two varint bytes
record = st.fixed_dictionaries(
    {
        "event_id": text,
        "ts": st.integers(0, 253_402_300_799_999),
        "n": st.integers(-(2**31), 2**31 - 1),
        "ok": st.booleans(),
        "f": st.floats(width=32, allow_nan=False),
        "raw": st.binary(max_size=80),
        "color": st.sampled_from(["R", "G"]),
        "tag": st.binary(min_size=3, max_size=3),
        "inner": st.fixed_dictionaries(
            {
                "xs": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
                "m": st.dictionaries(text, st.none() | text, max_size=4),
            }
        ),
        "features": st.dictionaries(text, st.floats(allow_nan=False), max_size=70),
        "site_id": st.none() | text,
    }
)


def _body(schema: Any, rec: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, rec)
    return out.getvalue()


@settings(max_examples=60, deadline=None)
@given(st.lists(record, min_size=1, max_size=30))
def test_bodies_keys_and_times_match_fastavro(tmp_path_factory: Any, recs: list) -> None:
    path = tmp_path_factory.mktemp("raw") / "log.avro"
    parsed = fastavro.parse_schema(SCHEMA)
    with path.open("wb") as fo:
        fastavro.writer(fo, parsed, recs, sync_interval=500)
    raw = list(iter_raw(path))
    assert [r.index for r in raw] == list(range(1, len(recs) + 1))
    for got, rec in zip(raw, recs, strict=True):
        assert got.body == _body(parsed, rec)
        assert got.record_type == "Everything" and got.ts == rec["ts"]
        expected_key = rec["site_id"] if rec["site_id"] is not None else rec["event_id"]
        assert got.key == expected_key.encode()


def test_a_truncated_file_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "log.avro"
    rows = [{"event_id": str(i), "ts": i, "site_id": "s"} for i in range(3000)]
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "ts", "type": "long"},
        {"name": "site_id", "type": "string"}]}  # fmt: skip
    with path.open("wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(schema), rows)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptData) as err:
        list(iter_raw(path))
    assert 0 < err.value.index <= 3000


def test_named_type_references_are_not_skipped_but_decoded(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["X"]}},
        {"name": "b", "type": "E"}]}  # fmt: skip
    path = tmp_path / "log.avro"
    with path.open("wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(schema), [{"a": "X", "b": "X"}])
    with pytest.raises(UnsupportedSchema):
        list(iter_raw(path))

"""What a Java reader (org.apache.avro.message.BinaryMessageDecoder) relies on in our bytes.

Its header check is: ``C3 01``, then SchemaNormalization.parsingFingerprint64 of
the writer schema as a little-endian long. That fingerprint is computed here
with the Avro specification's own CRC-64-AVRO algorithm, independent of the
fastavro call the codec makes (docs/registry-and-topics.md, Java users).
"""

from __future__ import annotations

import struct

import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas import Codec
from schemas.registry import SCHEMA_NAMES, load_schema

EMPTY = 0xC15D213AA4D7A795  # the Avro spec's CRC-64-AVRO seed


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


TABLE = _table()


def fingerprint64(data: bytes) -> int:
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp


def test_the_spec_algorithm_matches_the_spec_example() -> None:
    # Avro spec, "Schema Fingerprints": the fingerprint of the schema "int"
    assert fingerprint64(b'"int"') == 0x7275D51A3F395C8F


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_message_header_is_what_binary_message_decoder_checks(name: str) -> None:
    canonical = to_parsing_canonical_form(parse_schema(load_schema(name), named_schemas={}))
    expected = struct.pack("<Q", fingerprint64(canonical.encode()))
    data = Codec().encode(name, _smallest(load_schema(name)))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected


def _smallest(schema: dict) -> dict:
    """A valid record of ``schema`` built from its fields' types."""
    return {f["name"]: _value(f["type"]) for f in schema["fields"]}


def _value(t):  # noqa: ANN001, ANN202 - a tiny Avro-type walker
    if isinstance(t, list):
        return None if "null" in t else _value(t[0])
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            return _smallest(t)
        if kind == "enum":
            return t["symbols"][0]
        if kind in ("array", "map"):
            return [] if kind == "array" else {}
        return _value(kind)
    return {"string": "x", "bytes": b"", "long": 1, "int": 1, "double": 0.5, "float": 0.5,
            "boolean": True}[t]  # fmt: skip

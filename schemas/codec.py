"""Avro single-object encoding (and a JSON debug mode) for every Prism message.

Wire format (Avro spec, "single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | body

The fingerprint tells a consumer which schema wrote the bytes, so an older
writer version (registered with :func:`register_writer_schema`) is resolved
against the current reader schema — schema evolution — and foreign bytes are
rejected with a reason instead of being misread.

JSON mode is for plain tools (kcat, redis-cli): a UTF-8 object
``{"schema": "prism.Transaction", "record": {...}}`` with ``bytes`` fields as
base64 text; NaN/Infinity are rejected. :meth:`Codec.decode` detects the mode
from the first byte (``0xC3`` Avro, ``{`` JSON), whatever the codec writes.

Records are plain dicts. ``timestamp-millis`` fields are plain ``int`` epoch
milliseconds both ways (the reader schemas drop the logical type, which the
parsing canonical form ignores, so fingerprints are unaffected). Enums are
``str``, ``bytes`` are ``bytes``, null unions are ``None``.

Examples
--------
>>> codec = Codec()
>>> label = {"event_id": "e1", "ts": 1700000000000, "label": True}
>>> data = codec.encode("Label", label)
>>> data[:2].hex(), len(data) > 10
('c301', True)
>>> codec.decode(data, expected="Label")["label"]
True
"""

from __future__ import annotations

import base64
import copy
import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas.errors import SchemaError
from schemas.validate import Check, compile_check

SCHEMA_NAMES = (
    "Transaction",
    "SensorReading",
    "Label",
    "Score",
    "WeightSummary",
    "GlobalModel",
    "DeadLetter",
)
NAMESPACE = "prism"
MARKER = b"\xc3\x01"
HEADER_SIZE = 10
_AVRO_DIR = Path(__file__).parent / "avro"


def load_schema(name: str) -> dict[str, Any]:
    """The contract schema ``schemas/avro/<name>.avsc`` as a fresh dict."""
    if name not in SCHEMA_NAMES:
        raise SchemaError("unknown-schema", f"no schema named {name!r}; known: {SCHEMA_NAMES}")
    return dict(json.loads((_AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8")))


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def _fingerprint_of(parsed: Any) -> bytes:
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@dataclass(frozen=True)
class _Compiled:
    name: str
    parsed: Any
    fingerprint: bytes
    check: Check
    check_json: Check


def _compile(name: str, schema: dict[str, Any]) -> _Compiled:
    plain = _strip_logical_types(copy.deepcopy(schema))
    parsed = parse_schema(plain, named_schemas={})
    return _Compiled(
        name, parsed, _fingerprint_of(parsed),
        compile_check(plain), compile_check(plain, from_json=True),
    )  # fmt: skip


@cache
def _current(name: str) -> _Compiled:
    return _compile(name, load_schema(name))


# fingerprint -> (schema name, compiled writer schema); current versions added lazily.
_WRITERS: dict[bytes, tuple[str, _Compiled]] = {}


def _writers() -> dict[bytes, tuple[str, _Compiled]]:
    if not _WRITERS or any(_current(n).fingerprint not in _WRITERS for n in SCHEMA_NAMES):
        for n in SCHEMA_NAMES:
            _WRITERS.setdefault(_current(n).fingerprint, (n, _current(n)))
    return _WRITERS


def fingerprint(name: str) -> bytes:
    """The 8 bytes that follow the marker for the current version of ``name``."""
    return _current(name).fingerprint


def register_writer_schema(name: str, schema: dict[str, Any]) -> bytes:
    """Make bytes written with an older (or newer) version of ``name`` decodable.

    Returns that version's fingerprint. Resolution against the current reader
    schema follows Avro's rules (added fields need defaults).
    """
    compiled = _compile(name, schema)
    _writers()[compiled.fingerprint] = (name, compiled)
    return compiled.fingerprint


def _full_name(name: str) -> str:
    return f"{NAMESPACE}.{name}"


class Codec:
    """Encode records to bytes and bytes back to validated records.

    Parameters
    ----------
    mode
        What :meth:`encode` writes: ``"avro"`` (single-object) or ``"json"``.
    max_bytes
        Larger payloads are refused before any parsing (``oversized``).
    """

    def __init__(self, mode: str = "avro", max_bytes: int = 1_048_576) -> None:
        if mode not in ("avro", "json"):
            raise ValueError(f"mode must be 'avro' or 'json', got {mode!r}")
        self.mode = mode
        self.max_bytes = max_bytes

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Validate ``record`` against schema ``name`` and encode it."""
        compiled = _current(name) if name in SCHEMA_NAMES else _unknown(name)
        checked = compiled.check(record, "")
        if self.mode == "json":
            body = {"schema": _full_name(name), "record": to_json_compatible(checked)}
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        else:
            out = io.BytesIO()
            out.write(MARKER + compiled.fingerprint)
            fastavro.schemaless_writer(out, compiled.parsed, checked)
            data = out.getvalue()
        if len(data) > self.max_bytes:
            raise SchemaError(
                "oversized", f"{name} encodes to {len(data)} bytes > {self.max_bytes}"
            )
        return data

    def decode(self, data: bytes, expected: str | None = None) -> dict[str, Any]:
        """The record in ``data``; with ``expected``, bytes of any other schema are refused."""
        name, record = self.decode_any(data)
        if expected is not None and name != expected:
            raise SchemaError(
                "wrong-schema", f"expected a {expected} message, got a {name} message"
            )
        return record

    def decode_any(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """``(schema name, record)``; any failure is a :class:`SchemaError`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SchemaError("wrong-type", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise SchemaError("oversized", f"message of {len(data)} bytes > limit {self.max_bytes}")
        if data[:1] == b"{":
            return _decode_json(data)
        return _decode_avro(data)


def _unknown(name: str) -> _Compiled:
    raise SchemaError("unknown-schema", f"no schema named {name!r}; known: {SCHEMA_NAMES}")


def _decode_avro(data: bytes) -> tuple[str, dict[str, Any]]:
    if len(data) < HEADER_SIZE:
        raise SchemaError("truncated", f"{len(data)} bytes is shorter than the 10-byte header")
    if data[:2] != MARKER:
        raise SchemaError(
            "bad-marker",
            f"starts with {data[:2].hex()}, not the Avro single-object marker c301 or JSON",
        )
    found = _writers().get(data[2:HEADER_SIZE])
    if found is None:
        raise SchemaError(
            "unknown-fingerprint",
            f"writer schema fingerprint {data[2:HEADER_SIZE].hex()} is not a known Prism schema",
        )
    name, writer = found
    reader = _current(name)
    body = io.BytesIO(data[HEADER_SIZE:])
    try:
        record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
    except UnicodeDecodeError as e:
        raise SchemaError("invalid-utf8", f"{name}: a string is not valid UTF-8 ({e})") from e
    except (EOFError, MemoryError, OverflowError) as e:
        raise SchemaError("truncated", f"{name}: the body ends early or is cut ({e!r})") from e
    except Exception as e:  # noqa: BLE001 - fastavro raises many kinds on garbage
        raise SchemaError("truncated", f"{name}: the body is not valid Avro ({e!r})") from e
    if body.tell() != len(data) - HEADER_SIZE:
        raise SchemaError(
            "truncated", f"{name}: body length does not match its content (cut or padded)"
        )
    if not isinstance(record, dict):
        raise SchemaError("wrong-type", f"{name}: body did not decode to a record")
    return name, reader.check(record, "")


def _decode_json(data: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SchemaError("invalid-utf8", f"JSON message is not valid UTF-8 ({e})") from e
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except SchemaError:
        raise
    except (ValueError, RecursionError) as e:
        raise SchemaError("bad-json", f"not valid JSON: {e}") from e
    if not isinstance(body, dict) or set(body) != {"schema", "record"}:
        raise SchemaError("bad-json", 'expected {"schema": "prism.<Name>", "record": {...}}')
    full = body["schema"]
    name = full.rpartition(".")[2] if isinstance(full, str) else ""
    if name not in SCHEMA_NAMES or full != _full_name(name):
        raise SchemaError("unknown-schema", f"unknown schema {full!r} in JSON message")
    return name, _current(name).check_json(body["record"], "")


def _reject_constant(token: str) -> Any:
    raise SchemaError("non-finite", f"JSON contains {token}: only finite numbers are allowed")


def to_json_compatible(value: Any) -> Any:
    """A decoded record as plain JSON types: ``bytes`` become base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: to_json_compatible(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_compatible(v) for v in value]
    return value

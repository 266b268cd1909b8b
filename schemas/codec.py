"""Avro single-object encoding (and a JSON debug mode) for every Prism message.

Wire format (Avro spec, "single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | body

The fingerprint tells a consumer which schema wrote the bytes, so an older
writer version (kept in ``avro/history/`` or registered with
:func:`register_writer_schema`) is resolved against the current reader
schema — schema evolution — and foreign bytes are rejected with a reason
instead of being misread.

JSON mode is for plain tools (kcat, redis-cli): a UTF-8 object
``{"schema": "prism.Transaction", "record": {...}}`` with ``bytes`` fields as
base64 text, union values written plainly (no Avro-JSON ``{"string": ...}``
wrappers), and NaN/Infinity rejected. Decoding detects the mode from the
first byte whatever the codec writes: ``C3`` is Avro, ``{`` (or leading
JSON whitespace) is JSON, anything else is ``bad-marker``.

Records are plain dicts. ``timestamp-millis`` fields are plain ``int`` epoch
milliseconds both ways (the reader schemas drop the logical type, which the
parsing canonical form ignores, so fingerprints are unaffected). Enums are
``str``, ``bytes`` are ``bytes``, maps are ``dict``, null unions are ``None``.
Encoding also takes numpy scalars and ints for doubles; decoding always
returns plain Python types.

Every failure, on encode or decode, is a :class:`SchemaError` whose
``reason_code`` a consumer puts on the dead letter.

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
import io
import json
import re
from collections.abc import Sequence
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from schemas.errors import SchemaError
from schemas.registry import (
    NAMESPACE,
    SCHEMA_NAMES,
    current,
    fingerprint,
    load_schema,
    register_writer_schema,
    writer,
)

__all__ = [
    "MARKER",
    "SCHEMA_NAMES",
    "Codec",
    "fingerprint",
    "load_schema",
    "register_writer_schema",
    "to_json_compatible",
]

MARKER = b"\xc3\x01"
HEADER_SIZE = 10


def _full_name(name: str) -> str:
    return f"{NAMESPACE}.{name}"


class Codec:
    """Encode records to bytes and bytes back to validated records.

    Stateless apart from its two settings, so one instance can serve a
    whole process; schemas are parsed once per process, not per codec.

    Parameters
    ----------
    mode
        What :meth:`encode` writes: ``"avro"`` (single-object) or ``"json"``.
        Decoding accepts both, whatever the mode.
    max_bytes
        Larger payloads are refused (``oversized``) before any parsing, so a
        hostile message cannot make the decoder allocate or loop for long.

    Examples
    --------
    >>> codec = Codec(mode="json")
    >>> data = codec.encode("Label", {"event_id": "e1", "ts": 1700000000000, "label": False})
    >>> data
    b'{"schema":"prism.Label","record":{"event_id":"e1","ts":1700000000000,"label":false,"site_id":null}}'
    >>> Codec().decode_any(data)
    ('Label', {'event_id': 'e1', 'ts': 1700000000000, 'label': False, 'site_id': None})
    >>> try:
    ...     Codec().decode(b"\\x00\\x00 not a message")
    ... except SchemaError as e:
    ...     print(e.reason_code, "|", e)
    bad-marker | starts with 0000, not the Avro single-object marker c301 nor a JSON object
    """

    def __init__(self, mode: str = "avro", max_bytes: int = 1_048_576) -> None:
        if mode not in ("avro", "json"):
            raise ValueError(f"mode must be 'avro' or 'json', got {mode!r}")
        self.mode = mode
        self.max_bytes = max_bytes

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Validate ``record`` against schema ``name`` and encode it.

        Missing fields with defaults are filled in; anything else wrong is a
        :class:`SchemaError`, so a bad record never reaches the wire.
        """
        compiled = current(name)
        checked = compiled.check(record, "")
        if self.mode == "json":
            body = {"schema": _full_name(name), "record": to_json_compatible(checked)}
            # ensure_ascii=False: "café" stays readable in kcat; checks already refused surrogates
            text = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
            data = text.encode("utf-8")
        else:
            out = io.BytesIO()
            out.write(MARKER)
            out.write(compiled.fingerprint)
            fastavro.schemaless_writer(out, compiled.parsed, checked)
            data = out.getvalue()
        if len(data) > self.max_bytes:
            raise SchemaError(
                "oversized",
                f"{name} encodes to {len(data)} bytes > max_bytes {self.max_bytes}; "
                "send fewer features or raise the limit",
            )
        return data

    def encode_many(self, name: str, records: Sequence[dict[str, Any]]) -> list[bytes]:
        """Encode records that Prism code built from typed values (hot paths: scores).

        Same bytes as :meth:`encode`, at about half the cost: instead of the
        full check, each record gets the cheap test decoders use (finite
        doubles, 32-bit ints) and fastavro's own type errors; a record failing
        either goes through :meth:`encode`, whose full check names the problem
        (or fills a missing default). Not for records from outside: a ``bool``
        in a ``long`` field, say, is written as 0/1 here and refused there.
        """
        compiled = current(name)
        if self.mode == "json":
            return [self.encode(name, r) for r in records]
        quick, parsed = compiled.quick, compiled.parsed
        head = MARKER + compiled.fingerprint
        out, encoded = io.BytesIO(), []
        for record in records:
            try:
                if quick is not None and not quick(record):
                    raise ValueError("needs the full check")
                out.seek(0)
                out.truncate()
                out.write(head)
                fastavro.schemaless_writer(out, parsed, record)
                data = out.getvalue()
            except Exception:  # noqa: BLE001 - the full path raises the precise SchemaError
                data = self.encode(name, record)
            if len(data) > self.max_bytes:
                data = self.encode(name, record)  # raises "oversized" with the message
            encoded.append(data)
        return encoded

    def decode(self, data: bytes, expected: str | None = None) -> dict[str, Any]:
        """The record in ``data``; with ``expected``, bytes of any other schema are refused."""
        name, record = self.decode_any(data)
        if expected is not None and name != expected:
            raise SchemaError(
                "wrong-schema",
                f"expected a {expected} message, got a {name} message (wrong topic?)",
            )
        return record

    def decode_any(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """``(schema name, record)``; any failure at all is a :class:`SchemaError`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SchemaError("wrong-type", f"expected bytes, got {type(data).__name__}")
        size = len(data)
        if size > self.max_bytes:
            raise SchemaError("oversized", f"message of {size} bytes > max_bytes {self.max_bytes}")
        data = bytes(data)
        try:
            if size and data[0] in _JSON_START:
                return _decode_json(data)
            return _decode_avro(data)
        except SchemaError:
            raise
        except Exception as e:  # noqa: BLE001 - the contract: nothing else escapes
            raise SchemaError("truncated", f"undecodable message ({e!r})") from e


_JSON_START = frozenset(b"{ \t\r\n")


def _decode_avro(data: bytes) -> tuple[str, dict[str, Any]]:
    if len(data) < 2 and MARKER.startswith(data):
        raise SchemaError("truncated", f"{len(data)} bytes: empty or cut inside the marker")
    if data[:2] != MARKER:
        raise SchemaError(
            "bad-marker",
            f"starts with {data[:2].hex()}, "
            "not the Avro single-object marker c301 nor a JSON object",
        )
    if len(data) < HEADER_SIZE:
        raise SchemaError(
            "truncated", f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    fp = data[2:HEADER_SIZE]
    found = writer(fp)
    if found is None:
        raise SchemaError(
            "unknown-fingerprint",
            f"writer schema fingerprint {fp.hex()} is not a known Prism schema version; "
            "keep the old .avsc in schemas/avro/history/ or call register_writer_schema",
        )
    name = found.name
    reader = current(name)
    body = io.BytesIO(data)
    body.seek(HEADER_SIZE)
    try:
        # the current version needs no resolution: skip fastavro's resolving reader
        resolve_to = None if found is reader else reader.parsed
        record = fastavro.schemaless_reader(body, found.parsed, resolve_to)
    except UnicodeDecodeError as e:
        raise SchemaError("invalid-utf8", f"{name}: a string is not valid UTF-8 ({e})") from e
    except SchemaResolutionError as e:
        raise SchemaError(
            "wrong-schema", f"{name}: writer version {fp.hex()} does not resolve ({e})"
        ) from e
    except (EOFError, MemoryError, OverflowError) as e:
        raise SchemaError("truncated", f"{name}: the body ends early or is cut ({_why(e)})") from e
    except Exception as e:  # noqa: BLE001 - fastavro raises many kinds on garbage
        raise SchemaError("truncated", f"{name}: the body is not valid Avro ({_why(e)})") from e
    if body.tell() != len(data):
        raise SchemaError(
            "truncated", f"{name}: {len(data) - body.tell()} bytes left after the record"
        )
    if not isinstance(record, dict):
        raise SchemaError("wrong-type", f"{name}: body did not decode to a record")
    if reader.quick is not None and not reader.quick(record):
        return name, reader.check(record, "")  # raises, naming the bad path
    return name, record


def _why(e: BaseException) -> str:
    """fastavro's message without the stream object's address in it."""
    return _OBJECT_REPR.sub("the message", f"{type(e).__name__}: {e}".rstrip(": "))


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


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
    return name, current(name).check_json(body["record"], "")


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

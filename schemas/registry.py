"""The contract schemas, their fingerprints, and the older writer versions we accept.

Schemas are parsed and their checks compiled once per process (cached), so
the codec's hot path only looks things up. The writer table maps an 8-byte
fingerprint to a compiled writer schema: every current version is in it, as
is every older version kept in ``avro/history/`` (see :func:`register_history`),
and :func:`register_writer_schema` adds more at run time, so bytes from
producers not yet upgraded keep decoding after the contract evolves.

Timestamps: compiled schemas drop ``logicalType``. The Parsing Canonical Form
ignores it, so fingerprints are those of the ``.avsc`` files, and fastavro
then reads and writes plain ``int`` epoch milliseconds instead of datetimes.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

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
    "LifecycleEvent",
    "DeadLetter",
    "CentralCheckpoint",
    "SecAggRound",
    "SecAggKeys",
    "SecAggShares",
    "SecAggMasked",
    "SecAggUnmask",
    "SecAggConfirm",
)
NAMESPACE = "prism"
_AVRO_DIR = Path(__file__).parent / "avro"


def _require_known(name: str) -> None:
    if name not in SCHEMA_NAMES:
        raise SchemaError(
            "unknown-schema", f"no schema named {name!r}; use one of {', '.join(SCHEMA_NAMES)}"
        )


def load_schema(name: str) -> dict[str, Any]:
    """The contract ``schemas/avro/<name>.avsc`` as a fresh dict (safe to modify)."""
    _require_known(name)
    return dict(json.loads((_AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8")))


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


Quick = Callable[[Any], bool]
_INT32 = range(-(2**31), 2**31)


def compile_quick(schema: Any) -> Quick | None:
    """A cheap ``value -> plausible`` test for records fastavro has read, or None.

    Avro bytes already fix the types once fastavro has read them; what can
    still slip through is a NaN or infinity, or an ``int`` field whose varint
    holds more than 32 bits. Decoders run this test and fall back to the full
    check (which names the path) only when it fails. None means nothing in
    the schema can go wrong that way.
    """
    if isinstance(schema, list):
        parts = [compile_quick(s) for s in schema]
        return _quick_any if any(p is not None for p in parts) else None
    if isinstance(schema, str):
        if schema in ("double", "float"):
            return math.isfinite
        return _INT32.__contains__ if schema == "int" else None
    kind = schema["type"]
    if kind == "record":
        fields = [(f["name"], compile_quick(f["type"])) for f in schema["fields"]]
        tests = tuple((name, test) for name, test in fields if test is not None)
        if not tests:
            return None

        def record_ok(v: Any) -> bool:  # a plain loop: all(genexpr) costs 2x on the hot path
            for name, test in tests:  # noqa: SIM110
                if not test(v[name]):
                    return False
            return True

        return record_ok
    if kind in ("array", "map"):
        inner = compile_quick(schema["items" if kind == "array" else "values"])
        if inner is None:
            return None
        if inner is math.isfinite:
            return lambda v: _finite_sum(v.values() if kind == "map" else v)
        return lambda v: all(map(inner, v.values() if kind == "map" else v))
    if kind == "enum":
        return None
    return compile_quick(kind)


def _finite_sum(values: Iterable[float]) -> bool:
    values = list(values)
    return math.isfinite(sum(values)) or all(map(math.isfinite, values))


def _quick_any(v: Any) -> bool:
    """Which union branch was read is not known here: be strict, the full check decides.

    A large ``long`` fails this test although it is fine; that only costs a
    full check, never a wrong answer.
    """
    if isinstance(v, float):
        return math.isfinite(v)
    if type(v) is int:
        return v in _INT32
    if isinstance(v, dict):
        return all(map(_quick_any, v.values()))
    if isinstance(v, list):
        return all(map(_quick_any, v))
    return True


@dataclass(frozen=True)
class Compiled:
    """One schema version, ready for the hot path."""

    name: str
    parsed: Any
    fingerprint: bytes
    check: Check
    check_json: Check
    quick: Quick | None


def compile_schema(name: str, schema: dict[str, Any]) -> Compiled:
    """Parse ``schema`` once and compile its checks; a bad schema is a SchemaError."""
    plain = _strip_logical_types(copy.deepcopy(schema))
    try:
        parsed = parse_schema(plain, named_schemas={})
        canonical = to_parsing_canonical_form(parsed)
    except Exception as e:  # noqa: BLE001 - fastavro raises several kinds for bad schemas
        raise SchemaError("wrong-schema", f"{name}: not a valid Avro schema ({e})") from e
    fp = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    return Compiled(
        name=name,
        parsed=parsed,
        fingerprint=fp,
        check=compile_check(plain),
        check_json=compile_check(plain, from_json=True),
        quick=compile_quick(plain),
    )


@cache
def current(name: str) -> Compiled:
    """The current (reader) version of ``name``; unknown names are a SchemaError."""
    _require_known(name)
    return compile_schema(name, load_schema(name))


_WRITERS: dict[bytes, Compiled] = {}
HISTORY_DIR = _AVRO_DIR / "history"


def writer(fp: bytes) -> Compiled | None:
    """The writer schema with fingerprint ``fp``, or None if no version has it."""
    if not _WRITERS:
        _WRITERS.update({current(n).fingerprint: current(n) for n in SCHEMA_NAMES})
        try:
            register_history(HISTORY_DIR)
        except SchemaError:
            _WRITERS.clear()  # fail on every decode until the file is fixed, not just once
            raise
    return _WRITERS.get(fp)


def fingerprint(name: str) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian as the Avro spec says.

    These are the 8 bytes after the ``C3 01`` marker in every message of the
    current version of ``name``.

    Examples
    --------
    >>> fingerprint("Label").hex()
    '6e7d411dd30e7e4d'
    """
    return current(name).fingerprint


def register_writer_schema(name: str, schema: dict[str, Any]) -> bytes:
    """Accept bytes written with another version of ``name``; returns its fingerprint.

    Decoding resolves that writer against the current reader schema by Avro's
    rules: fields the reader added need defaults, removed fields are skipped,
    ``int``/``long``/``float`` promote to ``double``. A version that cannot
    resolve fails at decode time with ``wrong-schema``.
    """
    _require_known(name)
    compiled = compile_schema(name, schema)
    declared = compiled.parsed.get("name") if isinstance(compiled.parsed, dict) else None
    if declared != f"{NAMESPACE}.{name}":
        raise SchemaError(
            "wrong-schema", f"a version of {name} must declare {NAMESPACE}.{name}, not {declared!r}"
        )
    writer(compiled.fingerprint)  # fill the table with the shipped versions first
    _WRITERS[compiled.fingerprint] = compiled
    return compiled.fingerprint


def register_history(directory: Path) -> list[bytes]:
    """Register every older version kept in ``directory`` (``*.avsc``); their fingerprints.

    Before changing a contract, copy the old ``.avsc`` to ``avro/history/``
    (e.g. ``Transaction.v1.avsc``): consumers on the new contract then keep
    reading what producers not yet upgraded write. Each file names its
    schema in its own ``name`` field.
    """
    fingerprints = []
    for path in sorted(directory.glob("*.avsc")):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            name = str(schema["name"]).rpartition(".")[2]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SchemaError("wrong-schema", f"{path}: not a readable Avro schema ({e})") from e
        try:
            fingerprints.append(register_writer_schema(name, schema))
        except SchemaError as e:
            raise SchemaError(e.reason_code, f"{path}: {e}") from e
    return fingerprints

"""Record checks compiled from the Avro schemas themselves.

fastavro checks types only loosely on write and not at all on read; the
contract also demands finite doubles (a NaN feature poisons every model it
reaches). A check is compiled once per schema into closures, so the hot path
does no schema walking. Paths in messages look like ``features['amount']``.
"""

from __future__ import annotations

import base64
import binascii
import math
import numbers
from collections.abc import Callable
from typing import Any

from schemas.errors import SchemaError

Check = Callable[[Any, str], Any]
_MISSING = object()


def compile_check(schema: Any, *, from_json: bool = False) -> Check:
    """A function ``(value, path) -> value`` that raises :class:`SchemaError`.

    With ``from_json`` bytes arrive as base64 text and are decoded.
    """
    if isinstance(schema, list):
        return _union([compile_check(s, from_json=from_json) for s in schema])
    if isinstance(schema, str):
        return _PRIMITIVES[schema](from_json)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, from_json)
    if kind == "array":
        return _array(compile_check(schema["items"], from_json=from_json))
    if kind == "map":
        if schema["values"] in ("double", "float"):
            return _double_map(_map(_double(from_json)))
        return _map(compile_check(schema["values"], from_json=from_json))
    if kind == "enum":
        return _enum(tuple(schema["symbols"]))
    return compile_check(kind, from_json=from_json)  # a logical type over a primitive


def _wrong(path: str, expected: str, value: Any) -> SchemaError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return SchemaError("wrong-type", f"{path} should be {expected}, got {shown}")


def _string(from_json: bool) -> Check:
    def check(v: Any, path: str) -> Any:
        if not isinstance(v, str):
            raise _wrong(path, "a string", v)
        if not v.isascii():
            _require_utf8(v, path)
        return v

    return check


def _require_utf8(text: str, path: str) -> None:
    """Python strings can hold lone surrogates (e.g. JSON ``"\\ud921"``); UTF-8 cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SchemaError(
            "invalid-utf8", f"{path} is not valid Unicode text ({e.reason} at {e.start})"
        ) from e


def _integer(bits: int) -> Callable[[bool], Check]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def make(from_json: bool) -> Check:
        def check(v: Any, path: str) -> Any:
            if type(v) is not int:
                # numpy integers are welcome (models hand them over); bools are not
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise _wrong(path, f"a {bits}-bit integer", v)
                v = int(v)
            if not low <= v <= high:
                raise _wrong(path, f"a {bits}-bit integer", v)
            return v

        return check

    return make


def _double(from_json: bool) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not float:
            # ints and numpy floats are welcome; bools and numeric strings are not
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise _wrong(path, "a number", v)
            v = float(v)
        if not math.isfinite(v):
            shown = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            raise SchemaError("non-finite", f"{path} is {shown}: only finite numbers are allowed")
        return v

    return check


def _boolean(from_json: bool) -> Check:
    def check(v: Any, path: str) -> Any:
        if not isinstance(v, bool):
            raise _wrong(path, "true or false", v)
        return v

    return check


def _null(from_json: bool) -> Check:
    def check(v: Any, path: str) -> Any:
        if v is not None:
            raise _wrong(path, "null", v)
        return None

    return check


def _bytes(from_json: bool) -> Check:
    def check(v: Any, path: str) -> Any:
        if from_json and isinstance(v, str):
            try:
                return base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as e:
                raise _wrong(path, "base64 text", v) from e
        if not isinstance(v, bytes | bytearray | memoryview):
            raise _wrong(path, "bytes", v)
        return bytes(v)

    return check


_PRIMITIVES: dict[str, Callable[[bool], Check]] = {
    "string": _string,
    "int": _integer(32),
    "long": _integer(64),
    "double": _double,
    "float": _double,
    "boolean": _boolean,
    "null": _null,
    "bytes": _bytes,
}


def _union(branches: list[Check]) -> Check:
    def check(v: Any, path: str) -> Any:
        first: SchemaError | None = None
        for branch in branches:
            try:
                return branch(v, path)
            except SchemaError as e:
                # a finiteness problem is more useful than "not null"
                if first is None or (e.reason_code == "non-finite"):
                    first = e
        assert first is not None
        raise first

    return check


def _array(items: Check) -> Check:
    def check(v: Any, path: str) -> Any:
        if not isinstance(v, list | tuple):
            raise _wrong(path, "a list", v)
        return [items(item, f"{path}[{i}]") for i, item in enumerate(v)]

    return check


def _map(values: Check) -> Check:
    def check(v: Any, path: str) -> Any:
        if not isinstance(v, dict):
            raise _wrong(path, "a map of named values", v)
        out = {}
        for key, item in v.items():
            if not isinstance(key, str):
                raise _wrong(f"{path} key", "a string", key)
            if not key.isascii():
                _require_utf8(key, f"{path} key")
            out[key] = values(item, f"{path}[{key!r}]")
        return out

    return check


_FLOAT = frozenset({float})
_STR = frozenset({str})


def _double_map(slow: Check) -> Check:
    """Named features are the bulk of every event: check them in one pass when clean.

    The sum of finite floats is finite unless it overflows, and any NaN or
    infinity makes it non-finite, so one ``isfinite`` clears the whole map;
    anything unusual takes the slow path, which names the bad entry.
    """

    def check(v: Any, path: str) -> Any:
        if (
            type(v) is dict
            and set(map(type, v.values())) <= _FLOAT
            and set(map(type, v)) <= _STR
            and "".join(v).isascii()
            and math.isfinite(sum(v.values()))
        ):
            return dict(v)
        return slow(v, path)

    return check


def _enum(symbols: tuple[str, ...]) -> Check:
    def check(v: Any, path: str) -> Any:
        if v not in symbols:
            raise _wrong(path, f"one of {', '.join(symbols)}", v)
        return v

    return check


def _record(schema: dict[str, Any], from_json: bool) -> Check:
    fields = [
        (f["name"], compile_check(f["type"], from_json=from_json), f.get("default", _MISSING))
        for f in schema["fields"]
    ]
    names = {name for name, _, _ in fields}
    record_name = schema["name"]

    def check(v: Any, path: str) -> Any:
        if not isinstance(v, dict):
            raise _wrong(path or record_name, f"a {record_name} record", v)
        out = {}
        for name, field_check, default in fields:
            value = v.get(name, _MISSING)
            where = f"{path}.{name}" if path else name
            if value is _MISSING:
                if default is _MISSING:
                    raise SchemaError(
                        "missing-field", f"{record_name}: required field {where!r} is missing"
                    )
                value = default
            out[name] = field_check(value, where)
        extra = set(v) - names
        if extra:
            raise SchemaError(
                "wrong-type",
                f"{record_name}: unknown field(s) {', '.join(sorted(extra))}; "
                "remove them or add them to the .avsc",
            )
        return out

    return check

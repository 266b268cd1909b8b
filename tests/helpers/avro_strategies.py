"""Hypothesis strategies for valid values of an Avro schema, derived from the schema itself."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_PRIMITIVE = {
    "string": st.text(max_size=12),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False, allow_infinity=False),
    "boolean": st.booleans(),
    "null": st.none(),
    "bytes": st.binary(max_size=32),
}


def from_schema(schema: Any) -> st.SearchStrategy[Any]:
    """Valid values for an Avro schema dict, derived from the schema itself."""
    if isinstance(schema, list):
        return st.one_of([from_schema(s) for s in schema])
    if isinstance(schema, str):
        return _PRIMITIVE[schema]
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: from_schema(f["type"]) for f in schema["fields"]})
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), from_schema(schema["values"]), max_size=4)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    return from_schema(kind)

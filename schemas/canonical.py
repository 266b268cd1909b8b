"""The exact bytes a signature covers, per signed contract.

A signature must not depend on the wire mode (Avro or JSON), on map order or
on Python number types, and one made for one kind of record must not verify
as another. So the bytes are: a domain tag naming the contract, then Avro
binary of a *fixed* list of fields (in that order) with every map's entries
sorted by key. The list is fixed rather than "every field but the
signature" because a reader resolves a newer writer's record to its own
contract: a field it does not know would silently drop out of the bytes.
Adding a signed field is a contract change that bumps the contract's tag.

>>> from schemas.canonical import SIGNED_FIELDS
>>> SIGNED_FIELDS["GlobalModel"][-1]
'key_id'
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from typing import Any

import fastavro

from schemas.registry import compile_schema, current, load_schema

__all__ = ["SIGNED_FIELDS", "SIGNING_VERSION", "canonical_bytes"]

SIGNING_VERSION = 3  # of WeightSummary's signed bytes
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "WeightSummary": (
        "node_id",
        "tier",
        "region",
        "sequence",
        "base_version",
        "created_at",
        "state",
        "metrics",
        "meta",
        "key_id",
    ),
    "GlobalModel": (
        "model_name",
        "version",
        "parent_version",
        "delta_from",
        "strategy",
        "created_at",
        "state",
        "contributors",
        "excluded",
        "metrics",
        "held_back",
        "restored_from",
        "reason",
        "canary",
        "key_id",
    ),
}
#: secure aggregation's step records (issue #28): every field but the signature, in order
for _step, _fields in {
    "SecAggKeys": (
        "model_name",
        "sequence",
        "base_version",
        "features",
        "cipher_public",
        "mask_public",
    ),
    "SecAggShares": ("ciphertexts",),
    "SecAggMasked": ("vector",),
    "SecAggUnmask": ("seed_shares", "key_shares"),
    "SecAggConfirm": ("survivors",),
}.items():
    SIGNED_FIELDS[_step] = ("round_id", "node_id", *_fields, "created_at", "key_id")
#: the merger's phase records, signed with its global key: every field but the signature
SIGNED_FIELDS["SecAggRound"] = (
    "round_id",
    "model_name",
    "phase",
    "features",
    "length",
    "max_dropout",
    "roster",
    "routed",
    "nodes",
    "confirmations",
    "version",
    "reason",
    "created_at",
    "key_id",
)
# WeightSummary's tag names HMAC for history: Ed25519 signs the very same bytes, so one
# canonical form serves both and a node can move between them without a contract change.
_TAGS = {
    "WeightSummary": b"prism.WeightSummary.hmac-sha256.v%d\x00" % SIGNING_VERSION,
    "GlobalModel": b"prism.GlobalModel.v1\x00",
    **{
        step: b"prism.%s.v1\x00" % step.encode()
        for step in SIGNED_FIELDS
        if step.startswith("SecAgg")
    },
}


@cache
def _signed_schema(contract: str) -> Any:
    """The contract restricted to its signed fields, in their fixed order."""
    schema = load_schema(contract)
    by_name = {f["name"]: f for f in schema["fields"]}
    fields = [by_name[name] for name in SIGNED_FIELDS[contract]]
    return compile_schema(contract, dict(schema, fields=fields)).parsed


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted_maps(v) for v in value]
    return value


def canonical_bytes(record: Mapping[str, Any], contract: str = "WeightSummary") -> bytes:
    """Domain tag + Avro of the signed fields, maps sorted.

    ``record`` is checked against the contract first (defaults filled in), so a
    record about to be encoded and the same record decoded give equal bytes.
    """
    if contract not in SIGNED_FIELDS:
        raise ValueError(f"{contract} records are not signed (signed: {sorted(SIGNED_FIELDS)})")
    checked = current(contract).check(dict(record, signature=None), "")
    body = {name: _sorted_maps(checked[name]) for name in SIGNED_FIELDS[contract]}
    out = io.BytesIO()
    out.write(_TAGS[contract])
    fastavro.schemaless_writer(out, _signed_schema(contract), body)
    return out.getvalue()

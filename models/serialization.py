"""Summaries to and from the Avro records on the wire (plain dicts, never pickle).

A :class:`~models.summary.Summary` becomes a ``ModelState`` record, packed
(:mod:`models.packing`): a layout named by a 64-bit id (sent in full unless
the receiver holds it), counts as exact varints, every float tensor in one
block -- float64 (lossless, the default at rest), or float32/float16/int8
when the caller trades precision for bytes, and the summary then says by how
much (``max_error``). Records of the older form (v1: every tensor spelled out
with its dtype and shape) still decode. Decoding trusts nothing: every
failure is an :class:`~models.errors.InvalidSummaryError`. The encoding
itself (Avro single-object or JSON) is :mod:`schemas.codec`'s job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import DeltaBaseError, InvalidSummaryError, ModelError
from models.merge import Contributor, Exclusion
from models.packing import LayoutBook, apply_delta, pack, unpack
from models.summary import Summary

__all__ = [
    "GlobalModelInfo",
    "global_model_from_record",
    "global_model_record",
    "state_to_summary",
    "summary_from_weight_record",
    "summary_to_state",
    "unpacked_state",
    "weight_summary_record",
    "wire_roundtrip",
]

TIERS = ("edge", "regional", "central")
QUANTIZE = (None, "float64", "float32", "float16", "int8")
_WIRE = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "int8": "i1", "int64": "<i8"}


def _tensor_record(name: str, array: np.ndarray, quantize: str | None) -> dict[str, Any]:
    shape = [int(d) for d in array.shape]
    if array.dtype.kind in "iu":
        data, dtype, scale, zero = array.astype("<i8").tobytes(), "int64", 1.0, 0.0
    elif quantize is None:
        data, dtype, scale, zero = array.astype("<f8").tobytes(), "float64", 1.0, 0.0
    else:
        from models.quantize import quantize as _quantize

        q = _quantize(np.asarray(array, dtype=np.float64), quantize)
        data, dtype, scale, zero = q.to_bytes(), quantize, float(q.scale), float(q.zero)
    return {
        "name": name,
        "dtype": dtype,
        "shape": shape,
        "data": data,
        "scale": scale,
        "zero": zero,
    }


def summary_to_state(
    summary: Summary, quantize: str | None = None, *, with_layout: bool = True
) -> dict[str, Any]:
    """The ``ModelState`` record of ``summary``, packed (:mod:`models.packing`).

    Floats travel as ``quantize`` (float32, float16, int8), or float64 --
    lossless -- when it is None; counts are always exact. ``with_layout=False``
    names the layout by id only: for a receiver known to hold it.

    Examples
    --------
    >>> s = Summary("iot-gauss", "gauss", ("t",), 2, {"mean": np.array([1.5])})
    >>> state = summary_to_state(s)
    >>> state["packed"]["dtype"], state["packed"]["layout"]["features"]
    ('float64', ['t'])
    >>> state_to_summary(state).tensors["mean"].tolist()
    [1.5]
    """
    if not isinstance(summary, Summary):
        raise InvalidSummaryError(f"expected a Summary, got {type(summary).__name__}")
    if quantize not in QUANTIZE:
        raise ModelError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    return {
        **_state_head(summary),
        "packed": pack(summary, quantize or "float64", with_layout=with_layout),
    }


def _state_head(summary: Summary) -> dict[str, Any]:
    return {
        "model_name": summary.model_name,
        "model_kind": summary.kind,
        "features": [],
        "n_samples": int(summary.n_samples),
        "tensors": [],
        "params": {},
    }


def unpacked_state(summary: Summary, quantize: str | None = None) -> dict[str, Any]:
    """The v1 ``ModelState`` form (every tensor spelled out): what older consumers read."""
    return {
        "model_name": summary.model_name,
        "model_kind": summary.kind,
        "features": list(summary.features),
        "n_samples": int(summary.n_samples),
        "tensors": [
            _tensor_record(n, summary.tensors[n], quantize) for n in sorted(summary.tensors)
        ],
        "params": {str(k): str(v) for k, v in summary.params.items()},
        "packed": None,
    }


def wire_roundtrip(summary: Summary, quantize: str | None) -> Summary:
    """``summary`` as a receiver decodes it after :func:`summary_to_state` (provenance kept).

    A sender that keeps this instead of what it packed holds exactly the
    numbers its receivers hold (the merger's next round starts from the
    global the sites got), so precision loss never compounds unseen.
    """
    if quantize in (None, "float64"):
        return summary
    out = unpack(pack(summary, quantize), summary.model_name, summary.kind, summary.n_samples)
    return out.with_provenance(
        node_id=summary.node_id, sequence=summary.sequence, base_version=summary.base_version
    )


def _bytes(value: Any, name: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):  # Avro JSON encodes bytes as latin-1 code points
        return value.encode("latin-1")
    raise InvalidSummaryError(f"tensor {name!r}: data must be bytes")


def _decode_tensor(record: Mapping[str, Any]) -> tuple[str, np.ndarray]:
    name = str(record["name"])
    dtype = record["dtype"]
    if dtype not in _WIRE:
        raise InvalidSummaryError(f"tensor {name!r}: unknown dtype {dtype!r}")
    shape = tuple(int(d) for d in record["shape"])
    if any(d < 0 for d in shape):
        raise InvalidSummaryError(f"tensor {name!r}: negative dimension in shape {shape}")
    data = _bytes(record["data"], name)
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_WIRE[dtype]).itemsize
    if len(data) != expected:
        raise InvalidSummaryError(
            f"tensor {name!r}: {len(data)} bytes of data, shape {shape} of {dtype} needs {expected}"
        )
    if dtype in ("int64", "float64"):
        out = np.frombuffer(data, dtype=_WIRE[dtype]).reshape(shape)
        return name, out.astype(np.int64 if dtype == "int64" else np.float64)
    from models.quantize import QuantizedArray, dequantize

    scale, zero = float(record.get("scale", 1.0)), float(record.get("zero", 0.0))
    q = QuantizedArray.from_bytes(dtype, shape, data, scale, zero)
    return name, np.asarray(dequantize(q), dtype=np.float64).reshape(shape)


def state_to_summary(
    state: Mapping[str, Any],
    *,
    node_id: str = "",
    sequence: int = 0,
    base_version: int = 0,
    book: LayoutBook | None = None,
) -> Summary:
    """A validated Summary from a ``ModelState`` record, packed or (v1) spelled out.

    A packed state that names its layout by id only needs ``book`` to hold it.
    """
    try:
        if state.get("packed") is not None:
            return unpack(
                state["packed"],
                str(state["model_name"]),
                str(state["model_kind"]),
                int(state["n_samples"]),
                book=book,
                node_id=node_id,
                sequence=sequence,
                base_version=base_version,
            )
        tensors = dict(_decode_tensor(t) for t in state["tensors"])
        if len(tensors) != len(state["tensors"]):
            raise InvalidSummaryError("duplicate tensor names")
        return Summary(
            model_name=str(state["model_name"]),
            kind=str(state["model_kind"]),
            features=tuple(str(f) for f in state["features"]),
            n_samples=int(state["n_samples"]),
            tensors=tensors,
            params={str(k): str(v) for k, v in state.get("params", {}).items()},
            node_id=node_id,
            sequence=int(sequence),
            base_version=int(base_version),
        )
    except InvalidSummaryError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidSummaryError(f"malformed ModelState record: {e!r}") from e


def _metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    out = {str(k): float(v) for k, v in (metrics or {}).items()}
    if not all(np.isfinite(list(out.values()))):
        raise ModelError("metrics must be finite numbers")
    return out


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):  # fastavro decodes timestamp-millis to datetime
        return int(value.timestamp() * 1000)
    return int(value)


def weight_summary_record(
    summary: Summary,
    *,
    tier: str,
    region: str | None = None,
    created_at_ms: int,
    metrics: Mapping[str, float] | None = None,
    meta: Mapping[str, str] | None = None,
    quantize: str | None = None,
    with_layout: bool = True,
) -> dict[str, Any]:
    """The ``WeightSummary`` record a node publishes; provenance from ``summary``."""
    if tier not in TIERS:
        raise ModelError(f"tier must be one of {TIERS}, got {tier!r}")
    if not summary.node_id:
        raise ModelError("a published summary needs a node_id: use Summary.with_provenance")
    return {
        "node_id": summary.node_id,
        "tier": tier,
        "region": region,
        "sequence": int(summary.sequence),
        "base_version": int(summary.base_version),
        "created_at": int(created_at_ms),
        "state": summary_to_state(summary, quantize, with_layout=with_layout),
        "metrics": _metrics(metrics),
        "meta": {str(k): str(v) for k, v in (meta or {}).items()},
    }


def summary_from_weight_record(
    record: Mapping[str, Any], book: LayoutBook | None = None
) -> Summary:
    """The Summary in a ``WeightSummary`` record, with node/sequence/base version."""
    try:
        node_id, sequence, base = record["node_id"], record["sequence"], record["base_version"]
        state = record["state"]
    except (KeyError, TypeError) as e:
        raise InvalidSummaryError(f"malformed WeightSummary record: {e!r}") from e
    return state_to_summary(
        state, node_id=str(node_id), sequence=sequence, base_version=base, book=book
    )


@dataclass(frozen=True)
class GlobalModelInfo:
    """A decoded ``GlobalModel``; ``summary.base_version`` is its version."""

    summary: Summary
    version: int
    parent_version: int
    strategy: str
    created_at_ms: int
    contributors: tuple[Contributor, ...]
    excluded: tuple[Exclusion, ...]
    metrics: Mapping[str, float]
    #: an earlier version this one republishes (a rollback), and why; None: a merged version
    restored_from: int | None = None
    reason: str | None = None
    canary: float | None = None  # only that share of the edges may adopt it (models/canary.py)


def global_model_record(
    summary: Summary,
    *,
    version: int,
    strategy: str,
    created_at_ms: int,
    parent_version: int = 0,
    contributors: Iterable[Contributor] = (),
    excluded: Iterable[Exclusion] = (),
    metrics: Mapping[str, float] | None = None,
    quantize: str | None = None,
    with_layout: bool = True,
    delta: tuple[int, Mapping[str, Any]] | None = None,
    restored_from: int | None = None,
    reason: str | None = None,
    canary: float | None = None,
) -> dict[str, Any]:
    """The ``GlobalModel`` record of a merged summary (e.g. a MergeResult's).

    ``restored_from``: the record republishes that earlier version's model (a
    rollback), ``reason`` says why; both are signed with the rest.

    ``delta=(from_version, packed)`` publishes :func:`models.packing.pack_delta`'s
    record instead of the whole model (``summary`` is then what it adds up to).
    """
    if version < 1 or parent_version < 0:
        raise ModelError("global versions start at 1 and parent_version must be >= 0")
    return {
        "model_name": summary.model_name,
        "version": int(version),
        "parent_version": int(parent_version),
        "delta_from": 0 if delta is None else int(delta[0]),
        "strategy": str(strategy),
        "created_at": int(created_at_ms),
        "state": (
            summary_to_state(summary, quantize, with_layout=with_layout)
            if delta is None
            else {**_state_head(summary), "packed": dict(delta[1])}
        ),
        "contributors": [
            {
                "node_id": c.node_id,
                "sequence": int(c.sequence),
                "n_samples": int(c.n_samples),
                "staleness": int(c.staleness),
                "weight": float(c.weight),
            }
            for c in contributors
        ],
        "excluded": [
            {"node_id": e.node_id, "sequence": int(e.sequence), "reason": e.reason}
            for e in excluded
        ],
        "metrics": _metrics(metrics),
        "restored_from": None if restored_from is None else int(restored_from),
        "reason": reason,
        "canary": None if canary is None else float(canary),
    }


def global_model_from_record(
    record: Mapping[str, Any], book: LayoutBook | None = None, held: Summary | None = None
) -> GlobalModelInfo:
    """Decode a ``GlobalModel`` record; the summary is stamped with its version.

    A delta record (``delta_from`` v) needs ``held``, the version v this node
    holds (``held.base_version == v``); else :class:`DeltaBaseError`.
    """
    try:
        version = int(record["version"])
        base = int(record.get("delta_from") or 0)
        if base:
            if held is None or held.base_version != base or record["state"].get("packed") is None:
                raise DeltaBaseError(
                    f"global version {version} is a delta from version {base}, and this node "
                    f"holds {'none' if held is None else held.base_version}: it waits for a "
                    "whole version"
                )
            whole = apply_delta(held, record["state"]["packed"], int(record["state"]["n_samples"]))
            summary = whole.with_provenance(node_id="global", sequence=0, base_version=version)
        else:
            summary = state_to_summary(
                record["state"], node_id="global", base_version=version, book=book
            )
        if summary.model_name != record["model_name"]:
            raise InvalidSummaryError("GlobalModel model_name disagrees with its state")
        return GlobalModelInfo(
            summary=summary,
            version=version,
            parent_version=int(record.get("parent_version", 0)),
            strategy=str(record["strategy"]),
            created_at_ms=_millis(record["created_at"]),
            contributors=tuple(Contributor(**dict(c)) for c in record["contributors"]),
            excluded=tuple(Exclusion(**dict(e)) for e in record.get("excluded", [])),
            metrics={str(k): float(v) for k, v in record.get("metrics", {}).items()},
            restored_from=record.get("restored_from"),
            reason=record.get("reason"),
            canary=record.get("canary"),
        )
    except InvalidSummaryError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidSummaryError(f"malformed GlobalModel record: {e!r}") from e

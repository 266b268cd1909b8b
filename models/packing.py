"""Compact summaries: a layout sent once, then numbers only.

A v1 ``ModelState`` spelled every tensor out (name, dtype, shape, scale,
zero, float64 data) and every feature and hyper-parameter by name: ~750
bytes for an 11-feature linear model whose learned state is ~35 numbers.
Packed, the same summary is

- a :class:`Layout` -- the feature index, each tensor's name, shape and
  whether it holds counts, and the spec's parameters -- named by a 64-bit
  :func:`layout_id`; the layout itself travels only when the receiver may
  not know it yet (:class:`LayoutBook` is what a receiver knows);
- counts (exact: merges add them) as zigzag LEB128 varints, in layout order:
  one byte for a count below 64, so sparse HST node masses shrink to a byte
  a node; when raw deflate makes that block smaller (long runs of zeros:
  HST increments and deltas, 2-3x) it travels deflated (``counts_codec``);
- every float tensor concatenated in layout order as one ``dtype`` block:
  float64 (lossless), float32 (the wire default), float16, or int8 (affine
  per tensor, its ``scale`` / ``zero`` pair in ``scales``);
- ``max_error``: the largest absolute difference between a decoded float and
  the value packed, measured at packing (0 = exact), so a summary says how
  approximate it is.

Decoding trusts nothing: the layout must hash to its id, every block must
have exactly the bytes the layout asks for, varints must end where the
counts do. Every failure is an :class:`~models.errors.InvalidSummaryError`.

>>> s = Summary("m", "linear", ("a", "b"), 3,
...             {"count": np.array([3, 3]), "weights": np.array([0.5, -1.25])})
>>> packed = pack(s, "float32")
>>> len(packed["counts"]), len(packed["values"]), packed["max_error"]
(2, 8, 0.0)
>>> unpack(packed, "m", "linear", 3).tensors["weights"].tolist()
[0.5, -1.25]
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import InvalidSummaryError, ModelError, UnknownLayoutError
from models.quantize import DTYPES, QuantizedArray, dequantize, quantize
from models.summary import Summary

__all__ = [
    "PACK_DTYPES",
    "Layout",
    "LayoutBook",
    "apply_delta",
    "pack_delta",
    "layout_id_of",
    "layout_of",
    "pack",
    "unpack",
    "varint_decode",
    "varint_encode",
]

PACK_DTYPES = ("float64", "float32", "float16", "int8")


@dataclass(frozen=True)
class Slot:
    """One tensor's place in a packed summary."""

    name: str
    shape: tuple[int, ...]
    count: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Layout:
    """What the numbers of a packed summary mean: features, tensor slots, parameters."""

    features: tuple[str, ...]
    slots: tuple[Slot, ...]
    params: tuple[tuple[str, str], ...]

    @property
    def id(self) -> int:
        """64-bit digest (signed, an Avro ``long``) of everything in the layout."""
        text = json.dumps(
            [self.features, [[s.name, s.shape, s.count] for s in self.slots], self.params],
            separators=(",", ":"),
        )
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)

    def to_record(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "slots": [
                {"name": s.name, "shape": list(s.shape), "kind": "count" if s.count else "float"}
                for s in self.slots
            ],
            "params": dict(self.params),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Layout:
        try:
            slots = tuple(
                Slot(str(s["name"]), tuple(int(d) for d in s["shape"]), _is_count(s["kind"]))
                for s in record["slots"]
            )
            params = tuple(sorted((str(k), str(v)) for k, v in record["params"].items()))
            layout = cls(tuple(str(f) for f in record["features"]), slots, params)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidSummaryError(f"malformed packed layout: {e!r}") from e
        if any(d < 0 for s in layout.slots for d in s.shape):
            raise InvalidSummaryError("packed layout: negative dimension in a tensor shape")
        if len({s.name for s in layout.slots}) != len(layout.slots):
            raise InvalidSummaryError("packed layout: duplicate tensor names")
        return layout


def _is_count(kind: object) -> bool:
    if kind not in ("float", "count"):
        raise InvalidSummaryError(f"packed layout: slot kind {kind!r} is not float or count")
    return kind == "count"


def layout_of(summary: Summary) -> Layout:
    """The layout of ``summary``: tensors in name order, integer tensors as counts."""
    slots = tuple(
        Slot(
            name,
            tuple(int(d) for d in summary.tensors[name].shape),
            summary.tensors[name].dtype.kind in "iu",
        )
        for name in sorted(summary.tensors)
    )
    params = tuple(sorted((str(k), str(v)) for k, v in summary.params.items()))
    return Layout(tuple(summary.features), slots, params)


def layout_id_of(summary: Summary | None) -> int | None:
    """The layout id of ``summary`` (None for None)."""
    return None if summary is None else layout_of(summary).id


class LayoutBook:
    """The layouts a receiver knows, by id: learned from what it decoded or built itself.

    A sender may leave a layout out only when it knows the receiver's book
    holds it (the rules are the callers': see ``edge_agents`` and
    ``streams.merger``); an id the book lacks is refused, never guessed.
    Bounded: the oldest layouts are forgotten past ``capacity``.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._known: dict[int, Layout] = {}

    def learn(self, layout: Layout) -> int:
        lid = layout.id
        self._known.pop(lid, None)
        self._known[lid] = layout
        while len(self._known) > self.capacity:
            self._known.pop(next(iter(self._known)))
        return lid

    def get(self, layout_id: int) -> Layout | None:
        return self._known.get(int(layout_id))

    def __contains__(self, layout_id: object) -> bool:
        return layout_id in self._known

    def __len__(self) -> int:
        return len(self._known)


# -- varints ------------------------------------------------------------------
def varint_encode(values: np.ndarray) -> bytes:
    """Zigzag LEB128 of int64 values (vectorised: one pass per 7-bit group)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    z = ((v << 1) ^ (v >> 63)).view(np.uint64)
    if z.size == 0:
        return b""
    groups = np.ones(z.size, dtype=np.int64)
    rest = z >> np.uint64(7)
    while np.any(rest):
        groups += rest > 0
        rest = rest >> np.uint64(7)
    out = np.zeros(int(groups.sum()), dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(groups)[:-1]))
    for k in range(int(groups.max())):
        live = groups > k
        byte = (z[live] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (groups[live] > k + 1).astype(np.uint8) << 7
        out[starts[live] + k] = byte.astype(np.uint8) | more
    return out.tobytes()


def varint_decode(data: bytes, n: int) -> np.ndarray:
    """Exactly ``n`` zigzag LEB128 int64 values that use up ``data``."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) != n or (n and ends[-1] != len(raw) - 1) or (n == 0 and len(raw)):
        raise InvalidSummaryError(
            f"packed counts: {len(raw)} bytes hold {len(ends)} complete varints, expected {n}"
        )
    starts = np.concatenate(([0], ends[:-1] + 1)) if n else ends
    lengths = ends - starts + 1
    if n and lengths.max() > 10:
        raise InvalidSummaryError("packed counts: a varint longer than 10 bytes")
    z = np.zeros(n, dtype=np.uint64)
    for k in range(int(lengths.max()) if n else 0):
        live = lengths > k
        z[live] |= (raw[starts[live] + k].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
    return (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)


#: a counts block shorter than this is never worth deflating
DEFLATE_FROM = 48


def deflate_counts(varints: bytes) -> tuple[bytes, str]:
    """The counts block and its codec: raw deflate (RFC 1951) when it is smaller."""
    if len(varints) < DEFLATE_FROM:
        return varints, "varint"
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = z.compress(varints) + z.flush()
    return (deflated, "deflate") if len(deflated) < len(varints) else (varints, "varint")


def inflate_counts(data: bytes, codec: str, n: int) -> bytes:
    """The varints of ``n`` counts, inflated if need be (never more than 10 bytes a count)."""
    if codec == "varint":
        return data
    if codec != "deflate":
        raise InvalidSummaryError(f"packed counts codec {codec!r} is not varint or deflate")
    z = zlib.decompressobj(-15)
    try:
        out = z.decompress(data, 10 * n + 1)
    except zlib.error as e:
        raise InvalidSummaryError(f"packed counts do not inflate: {e}") from e
    if not z.eof or z.unused_data or len(out) > 10 * n:
        raise InvalidSummaryError("packed counts: deflated block cut short, padded or too big")
    return out


# -- packing ------------------------------------------------------------------
def _floats(summary: Summary, layout: Layout) -> list[np.ndarray]:
    return [
        np.asarray(summary.tensors[s.name], np.float64).ravel() for s in layout.slots if not s.count
    ]


def pack(summary: Summary, dtype: str = "float32", *, with_layout: bool = True) -> dict[str, Any]:
    """The ``Packed`` record of ``summary`` (floats as ``dtype``; counts always exact).

    ``with_layout=False`` leaves the layout out (its id stays): only for a
    receiver whose :class:`LayoutBook` holds it. A float32/float16 block that
    cannot hold a value (beyond ±3.4e38 / ±65,504) falls back to float64.
    """
    if dtype not in PACK_DTYPES:
        raise ModelError(f"packed dtype must be one of {PACK_DTYPES}, got {dtype!r}")
    layout = layout_of(summary)
    counts = [np.asarray(summary.tensors[s.name]).ravel() for s in layout.slots if s.count]
    floats = _floats(summary, layout)
    scales: list[float] = []
    try:
        coded = [quantize(f, dtype) for f in floats]
    except ModelError:  # out of the dtype's range: this summary travels lossless
        dtype, coded = "float64", [quantize(f, "float64") for f in floats]
    varints = varint_encode(np.concatenate(counts)) if counts else b""
    packed_counts, counts_codec = deflate_counts(varints)
    error = 0.0
    for f, q in zip(floats, coded, strict=True):
        if dtype == "int8":
            scales += [q.scale, q.zero]
        if f.size:
            error = max(error, float(np.max(np.abs(dequantize(q) - f))))
    return {
        "layout_id": layout.id,
        "layout": layout.to_record() if with_layout else None,
        "dtype": dtype,
        "scales": scales,
        "counts": packed_counts,
        "counts_codec": counts_codec,
        "values": b"".join(q.to_bytes() for q in coded),
        "max_error": error,
    }


def resolve_layout(packed: Mapping[str, Any], book: LayoutBook | None) -> Layout:
    """The packed record's layout: its own (checked against its id) or the book's."""
    lid = int(packed["layout_id"])
    if packed.get("layout") is not None:
        layout = Layout.from_record(packed["layout"])
        if layout.id != lid:
            raise InvalidSummaryError(
                f"packed layout hashes to {layout.id}, not its layout_id {lid}: altered or corrupt"
            )
        if book is not None:
            book.learn(layout)
        return layout
    known = book.get(lid) if book is not None else None
    if known is None:
        raise UnknownLayoutError(
            f"packed summary names layout {lid}, which this receiver has not seen: "
            "the sender must send the layout in full"
        )
    return known


def unpack(
    packed: Mapping[str, Any],
    model_name: str,
    kind: str,
    n_samples: int,
    *,
    book: LayoutBook | None = None,
    node_id: str = "",
    sequence: int = 0,
    base_version: int = 0,
) -> Summary:
    """The Summary a ``Packed`` record holds (validated; floats back as float64)."""
    try:
        layout = resolve_layout(packed, book)
        dtype = str(packed["dtype"])
        if dtype not in PACK_DTYPES:
            raise InvalidSummaryError(f"packed dtype {dtype!r} is not one of {PACK_DTYPES}")
        count_slots = [s for s in layout.slots if s.count]
        float_slots = [s for s in layout.slots if not s.count]
        n_counts = sum(s.size for s in count_slots)
        varints = inflate_counts(
            bytes(packed["counts"]), str(packed.get("counts_codec", "varint")), n_counts
        )
        counts = varint_decode(varints, n_counts)
        values = bytes(packed["values"])
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        need = sum(s.size for s in float_slots) * itemsize
        if len(values) != need:
            raise InvalidSummaryError(
                f"packed values: {len(values)} bytes, the layout's floats as {dtype} need {need}"
            )
        scales = [float(v) for v in packed["scales"]]
        if len(scales) != (2 * len(float_slots) if dtype == "int8" else 0):
            raise InvalidSummaryError(f"packed scales: {len(scales)} values do not fit {dtype}")
        tensors: dict[str, np.ndarray] = {}
        at_count = at_value = 0
        for i, slot in enumerate(float_slots):
            chunk = values[at_value : at_value + slot.size * itemsize]
            at_value += slot.size * itemsize
            scale, zero = (scales[2 * i], scales[2 * i + 1]) if dtype == "int8" else (1.0, 0.0)
            q = QuantizedArray.from_bytes(dtype, slot.shape, chunk, scale, zero)
            with np.errstate(over="ignore", invalid="ignore"):
                decoded = np.asarray(dequantize(q), np.float64).reshape(slot.shape)
            if not np.isfinite(decoded).all():  # a packer never sends these (float64 fallback)
                raise InvalidSummaryError(f"packed tensor {slot.name!r} decodes to NaN or inf")
            tensors[slot.name] = decoded
        for slot in count_slots:
            tensors[slot.name] = counts[at_count : at_count + slot.size].reshape(slot.shape)
            at_count += slot.size
        return Summary(
            model_name=model_name,
            kind=kind,
            features=layout.features,
            n_samples=int(n_samples),
            tensors={s.name: tensors[s.name] for s in layout.slots},
            params=dict(layout.params),
            node_id=node_id,
            sequence=int(sequence),
            base_version=int(base_version),
        )
    except InvalidSummaryError:
        raise
    except (KeyError, TypeError, ValueError, ModelError) as e:
        raise InvalidSummaryError(f"malformed packed summary: {e!r}") from e


# -- deltas between versions of one model ----------------------------------------
def pack_delta(new: Summary, base: Summary, dtype: str = "float16") -> dict[str, Any]:
    """``new - base`` as a ``Packed`` record (layout by id: both must share it).

    Counts travel as exact varint differences; floats as ``dtype`` differences,
    which are small between consecutive globals, so float16 keeps them to
    ~5e-4 of the change. Raises :class:`ModelError` when the layouts differ.
    """
    layout = layout_of(new)
    if layout.id != layout_of(base).id:
        raise ModelError("a delta needs the same layout on both sides: send the model whole")
    diff = {
        name: np.asarray(new.tensors[name]) - np.asarray(base.tensors[name]) for name in new.tensors
    }
    delta = Summary(new.model_name, new.kind, new.features, new.n_samples, diff, new.params)
    return pack(delta, dtype, with_layout=False)


def apply_delta(base: Summary, packed: Mapping[str, Any], n_samples: int) -> Summary:
    """``base`` plus a delta from :func:`pack_delta`: the sender's reconstruction, exactly.

    The sender keeps this very result as its model (error feedback): whoever
    holds ``base`` and applies the delta holds what the sender holds.
    """
    layout = layout_of(base)
    if int(packed["layout_id"]) != layout.id:
        raise InvalidSummaryError(
            f"delta for layout {int(packed['layout_id'])} does not fit the model held "
            f"(layout {layout.id})"
        )
    book = LayoutBook(capacity=1)
    book.learn(layout)
    diff = unpack(packed, base.model_name, base.kind, n_samples, book=book)
    tensors = {name: np.asarray(base.tensors[name]) + diff.tensors[name] for name in base.tensors}
    return Summary(
        base.model_name,
        base.kind,
        base.features,
        n_samples,
        tensors,
        base.params,
        base.node_id,
        base.sequence,
        base.base_version,
    )

"""Avro by hand for the central worker's two hottest records: Labels in, Scores out.

Why: the central learner reads one Label and writes one Score per event. For
records this small most of fastavro's cost is its generic machinery (a call
per field, a schema walk, a BytesIO), not the bytes. Measured on the
reference machine (best of 40 runs of 1,000 records, ``process_time``):

- Label decode: ``Codec.decode`` 3.1 us, fastavro alone 2.0 us, here 1.5 us;
- Score encode: ``Codec.encode_many`` 4.2 us (plus the dict per Score the
  caller builds), here 1.6 us: the fields every Score of a batch shares
  (``scored_at``, ``node_id``, ``model_name``, ``model_version``, ``source``)
  are encoded once per batch. An edge agent's Scores come one at a time,
  with their mixture weights (``experts``): :meth:`ScoreEncoder.encode_one`.

Safety: each path is written for one schema *version*, named by its
fingerprint below. The bytes are the Avro single-object encoding the
:class:`~schemas.codec.Codec` writes and reads, byte for byte (property-tested
against it in ``tests/unit/test_hotpath.py``). Anything this code does not
expect -- another schema version, JSON mode, a non-finite double, a string
that is not valid UTF-8, a varint longer than 8 bytes, trailing bytes, an
oversized message -- goes through the Codec, so every error and its reason
code are the Codec's own. When a schema changes, its fingerprint changes and
the fast path switches itself off (a test fails to say so), never misreads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from schemas.codec import MARKER, Codec
from schemas.registry import current

__all__ = [
    "EdgeScoreEncoder",
    "LabelDecoder",
    "ScoreEncoder",
    "ScoreRow",
    "avro_long",
    "read_avro_long",
]

#: the versions this module is written for (CRC-64-AVRO of the canonical form)
LABEL_FINGERPRINT = bytes.fromhex("6e7d411dd30e7e4d")
SCORE_FINGERPRINT = bytes.fromhex("6553dc9e5c701ef3")

_LONG = range(-(2**63), 2**63)
_DOUBLES = struct.Struct("<dd").pack
_DOUBLE = struct.Struct("<d").pack
_LABEL_BYTES = {None: b"\x00", True: b"\x02\x01", False: b"\x02\x00"}

#: (event_id, ts, score, label, latency_ms): the per-event part of a Score
ScoreRow = tuple[str, int, float, "bool | None", float]


def avro_long(n: int) -> bytes:
    """An Avro ``long`` as written on the wire: zig-zag, then 7 bits per byte, low bits first."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(s: str) -> bytes:
    data = s.encode("utf-8")
    return avro_long(len(data)) + data


def _finite(v: Any) -> bool:
    return type(v) is float and v - v == 0.0  # NaN and +-inf give NaN


_SCORE_FIELDS = frozenset(
    (
        "event_id",
        "ts",
        "scored_at",
        "node_id",
        "model_name",
        "model_version",
        "source",
        "score",
        "latency_ms",
        "label",
        "experts",
        "provenance",
    )
)
_EXPERT_FIELDS = frozenset(("name", "weight", "version"))


def _experts(experts: Any) -> bytes | None:
    """The ``experts`` union's bytes (null, or an array of ExpertWeight); None if not plain."""
    if experts is None:
        return b"\x00"
    if type(experts) is not list:
        return None
    parts = [b"\x02", avro_long(len(experts))] if experts else [b"\x02"]
    for e in experts:
        if type(e) is not dict or e.keys() != _EXPERT_FIELDS:
            return None
        name, weight, version = e["name"], e["weight"], e["version"]
        if not (type(name) is str and _finite(weight) and type(version) is int):
            return None
        if version not in _LONG:
            return None
        try:
            parts += (_string(name), _DOUBLE(weight), avro_long(version))
        except UnicodeEncodeError:
            return None
    parts.append(b"\x00")  # the array's end (its only block when empty)
    return b"".join(parts)


def _string_map(values: Any) -> bytes | None:
    """An Avro ``map<string>``'s bytes (one block, then its end); None if not plain."""
    if type(values) is not dict:
        return None
    if not values:
        return b"\x00"
    parts = [avro_long(len(values))]
    for k, v in values.items():
        if type(k) is not str or type(v) is not str:
            return None
        try:
            parts += (_string(k), _string(v))
        except UnicodeEncodeError:
            return None
    parts.append(b"\x00")
    return b"".join(parts)


class ScoreEncoder:
    """Encode a batch of Scores that share their scorer, model and time."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        compiled = current("Score")
        self.fast = codec.mode == "avro" and compiled.fingerprint == SCORE_FINGERPRINT
        self._head = MARKER + SCORE_FINGERPRINT
        (source,) = (f for f in compiled.parsed["fields"] if f["name"] == "source")
        self._sources = {s: i for i, s in enumerate(source["type"]["symbols"])}

    def encode(
        self,
        rows: Iterable[ScoreRow],
        *,
        scored_at: int,
        node_id: str,
        model_name: str,
        model_version: int,
        source: str,
    ) -> list[bytes]:
        """The encoded Score of every row, in order (what ``Codec.encode`` would write)."""
        rows = list(rows)
        shared = dict(
            scored_at=scored_at,
            node_id=node_id,
            model_name=model_name,
            model_version=model_version,
            source=source,
        )
        middle = self._shared(**shared) if self.fast else None
        if middle is None:
            return self.codec.encode_many("Score", [self._record(r, shared) for r in rows])
        head, max_bytes, out = self._head, self.codec.max_bytes, []
        for row in rows:
            event_id, ts, score, label, latency = row
            data = None
            if (
                type(ts) is int
                and ts in _LONG
                and _finite(score)
                and _finite(latency)
                and (label is None or type(label) is bool)
                and type(event_id) is str
            ):
                try:
                    eid = event_id.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate: the codec names it
                    pass
                else:
                    data = b"".join(
                        (
                            head,
                            avro_long(len(eid)),
                            eid,
                            avro_long(ts),
                            middle,
                            _DOUBLES(score, latency),
                            _LABEL_BYTES[label],
                            b"\x00",  # experts: null (one model scored)
                            b"\x00",  # provenance: {} (a central worker's own model)
                        )
                    )
            if data is None or len(data) > max_bytes:
                data = self.codec.encode("Score", self._record(row, shared))
            out.append(data)
        return out

    def _shared(
        self, *, scored_at: Any, node_id: Any, model_name: Any, model_version: Any, source: Any
    ) -> bytes | None:
        """The bytes of the fields between ``ts`` and ``score``; None if not plainly valid."""
        ints_ok = all(type(v) is int and v in _LONG for v in (scored_at, model_version))
        strs_ok = type(node_id) is str and type(model_name) is str
        if not (ints_ok and strs_ok and source in self._sources):
            return None
        try:
            return b"".join(
                (
                    avro_long(scored_at),
                    _string(node_id),
                    _string(model_name),
                    avro_long(model_version),
                    avro_long(self._sources[source]),
                )
            )
        except UnicodeEncodeError:
            return None

    def encode_one(self, record: dict[str, Any]) -> bytes:
        """One whole Score (``experts`` too), as ``Codec.encode`` writes it or fails.

        An edge agent sends its Scores one at a time, each with its own
        mixture weights, so nothing is shared across a batch; what is saved is
        the codec's per-field checks and fastavro's schema walk.
        """
        data = self._whole(record) if self.fast else None
        if data is None or len(data) > self.codec.max_bytes:
            return self.codec.encode("Score", record)
        return data

    def _whole(self, r: Any) -> bytes | None:
        """The bytes of a plainly valid Score; None for anything the codec should judge."""
        if type(r) is not dict or not r.keys() <= _SCORE_FIELDS:
            return None
        try:
            eid, ts, score = r["event_id"], r["ts"], r["score"]
            shared = {k: r[k] for k in ("scored_at", "node_id", "model_name", "model_version")}
            source = r["source"]
        except KeyError:
            return None
        latency, label = r.get("latency_ms", 0.0), r.get("label")
        if not (
            type(eid) is str
            and type(ts) is int
            and ts in _LONG
            and _finite(score)
            and _finite(latency)
            and (label is None or type(label) is bool)
        ):
            return None
        experts = _experts(r.get("experts"))
        provenance = _string_map(r.get("provenance", {}))
        middle = self._shared(**shared, source=source)
        if experts is None or provenance is None or middle is None:
            return None
        try:
            eid_bytes = _string(eid)
        except UnicodeEncodeError:
            return None
        return b"".join(
            (
                self._head,
                eid_bytes,
                avro_long(ts),
                middle,
                _DOUBLES(score, latency),
                _LABEL_BYTES[label],
                experts,
                provenance,
            )
        )

    @staticmethod
    def _record(row: ScoreRow, shared: dict[str, Any]) -> dict[str, Any]:
        event_id, ts, score, label, latency = row
        return {
            "event_id": event_id,
            "ts": ts,
            **shared,
            "score": score,
            "label": label,
            "latency_ms": latency,
        }


class LabelDecoder:
    """Decode Labels; the current version in Avro is read here, anything else by the codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.fast = current("Label").fingerprint == LABEL_FINGERPRINT
        self._head = MARKER + LABEL_FINGERPRINT

    def decode(self, data: bytes) -> dict[str, Any]:
        """The Label in ``data``, as ``Codec.decode(data, expected="Label")`` returns it.

        Raises the codec's :class:`SchemaError` for anything that is not a
        plainly valid current-version Label.
        """
        if (
            self.fast
            and type(data) is bytes
            and len(data) <= self.codec.max_bytes
            and data[:10] == self._head
        ):
            try:
                return _read_label(data)
            except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
                pass
        return self.codec.decode(data, expected="Label")


def read_avro_long(data: bytes, i: int) -> tuple[int, int]:
    """An Avro long at ``i`` and the position after it; at most 8 bytes (56 bits) here."""
    byte = data[i]
    n = byte & 0x7F
    shift = 7
    i += 1
    while byte & 0x80:
        if shift > 49:
            raise ValueError("a varint longer than this fast path reads")
        byte = data[i]
        n |= (byte & 0x7F) << shift
        shift += 7
        i += 1
    return (n >> 1) ^ -(n & 1), i


def _read_string(data: bytes, i: int) -> tuple[str, int]:
    size, i = read_avro_long(data, i)
    end = i + size
    if size < 0 or end > len(data):
        raise ValueError("a string that does not fit")
    return data[i:end].decode("utf-8"), end


def _read_label(data: bytes) -> dict[str, Any]:
    """Label v1: event_id string, ts long, label boolean, site_id [null, string]."""
    event_id, i = _read_string(data, 10)
    ts, i = read_avro_long(data, i)
    label = data[i]
    branch = data[i + 1]
    i += 2
    if label > 1:
        raise ValueError("a boolean byte other than 0 or 1")
    if branch == 0:
        site_id = None
    elif branch == 2:  # zig-zag 1: the string branch
        site_id, i = _read_string(data, i)
    else:
        raise ValueError("a union branch Label does not have")
    if i != len(data):
        raise ValueError("bytes after the record")
    return {"event_id": event_id, "ts": ts, "label": label == 1, "site_id": site_id}


class EdgeScoreEncoder:
    """An edge agent's Score, from its fields: no dict per Score, the repeated parts cached.

    Why (#26 item 3): building the Score dict, then checking and walking it
    again in :meth:`ScoreEncoder.encode_one`, was most of what sending a score
    cost an edge agent. The node, model, version and source change rarely:
    their bytes are kept per combination; an expert's name bytes per name.
    The bytes are :meth:`ScoreEncoder.encode_one`'s of :meth:`record` (so the
    codec's), property-tested; anything not plainly valid goes there.
    """

    max_cached = 64  # (node, model, version, source) combinations kept

    def __init__(self, codec: Codec) -> None:
        self.whole = ScoreEncoder(codec)
        self.fast, self.max_bytes = self.whole.fast, codec.max_bytes
        self._middles: dict[tuple[str, str, int, str], bytes] = {}
        self._names: dict[str, bytes] = {}

    @staticmethod
    def record(
        event_id: str,
        ts: int,
        scored_at: int,
        node_id: str,
        model_name: str,
        version: int,
        source: str,
        score: float,
        latency_ms: float,
        label: bool | None,
        weights: tuple[tuple[str, float], ...],
        provenance: dict[str, str],
    ) -> dict[str, Any]:
        """The Score as a record: ``weights`` are (expert, weight); the personal model's
        version is 0, the others' the global's."""
        return {
            "event_id": event_id,
            "ts": ts,
            "scored_at": scored_at,
            "node_id": node_id,
            "model_name": model_name,
            "model_version": version,
            "source": source,
            "score": score,
            "latency_ms": latency_ms,
            "label": label,
            "experts": [
                {"name": n, "weight": w, "version": 0 if n == "personal" else version}
                for n, w in weights
            ]
            or None,
            "provenance": provenance,
        }

    def encode(
        self,
        event_id: str,
        ts: int,
        scored_at: int,
        node_id: str,
        model_name: str,
        version: int,
        source: str,
        score: float,
        latency_ms: float,
        label: bool | None,
        weights: tuple[tuple[str, float], ...],
        provenance: dict[str, str],
    ) -> bytes:
        """``encode_one(record(...))``'s bytes (or its error), by hand when plainly valid."""
        args = (event_id, ts, scored_at, node_id, model_name, version, source, score,
                latency_ms, label, weights, provenance)  # fmt: skip
        data = self._fast(*args) if self.fast else None
        if data is None or len(data) > self.max_bytes:
            return self.whole.encode_one(self.record(*args))
        return data

    def _fast(
        self,
        event_id: Any,
        ts: Any,
        scored_at: Any,
        node_id: Any,
        model_name: Any,
        version: Any,
        source: Any,
        score: Any,
        latency_ms: Any,
        label: Any,
        weights: Any,
        provenance: Any,
    ) -> bytes | None:
        if not (
            type(event_id) is str
            and type(ts) is int
            and ts in _LONG
            and type(scored_at) is int
            and scored_at in _LONG
            and _finite(score)
            and _finite(latency_ms)
            and (label is None or type(label) is bool)
        ):
            return None
        if not (
            type(node_id) is str
            and type(model_name) is str
            and type(version) is int
            and type(source) is str
        ):
            return None  # a key of these exact types cannot match a cached one by equality
        key = (node_id, model_name, version, source)
        middle = self._middles.get(key)
        if middle is None:
            middle = self._middle(node_id, model_name, version, source)
            if middle is None:
                return None
            if len(self._middles) >= self.max_cached:
                self._middles.clear()
            self._middles[key] = middle
        if not weights:
            experts = b"\x00"
        else:
            experts = self._experts(weights, version)
            if experts is None:
                return None
        if type(provenance) is dict and not provenance:
            tail = b"\x00"
        else:
            tail = _string_map(provenance)
            if tail is None:
                return None
        try:
            eid = event_id.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the codec names it
            return None
        return b"".join(
            (
                self.whole._head,
                avro_long(len(eid)),
                eid,
                avro_long(ts),
                avro_long(scored_at),
                middle,
                _DOUBLES(score, latency_ms),
                _LABEL_BYTES[label],
                experts,
                tail,
            )
        )

    def _middle(self, node_id: Any, model_name: Any, version: Any, source: Any) -> bytes | None:
        """node_id, model_name, model_version and source's bytes; None if not plainly valid."""
        sources = self.whole._sources
        if not (
            type(node_id) is str
            and type(model_name) is str
            and type(version) is int
            and version in _LONG
            and type(source) is str
            and source in sources
        ):
            return None
        try:
            names = _string(node_id) + _string(model_name)
        except UnicodeEncodeError:
            return None
        return names + avro_long(version) + avro_long(sources[source])

    def _experts(self, weights: Any, version: int) -> bytes | None:
        """The ``experts`` union's array branch, from (name, weight) pairs."""
        if type(weights) is not tuple:
            return None
        parts = [b"\x02", avro_long(len(weights))]
        names = self._names
        for pair in weights:
            if type(pair) is not tuple or len(pair) != 2:
                return None
            name, weight = pair
            if type(name) is not str or not _finite(weight):
                return None
            head = names.get(name)
            if head is None:
                try:
                    head = _string(name)
                except UnicodeEncodeError:
                    return None
                if len(names) < self.max_cached:
                    names[name] = head
            parts += (head, _DOUBLE(weight), b"\x00" if name == "personal" else avro_long(version))
        parts.append(b"\x00")
        return b"".join(parts)

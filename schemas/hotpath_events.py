"""Avro by hand for the central worker's hottest record: the Transaction it decodes per event.

Why: profiled with py-spy (#26 item 1), decoding Transactions was ~44 % of one
central worker's time: ``Codec.decode`` reads through fastavro's generic
reader (a BytesIO, a call per field) and then walks the record again for
non-finite doubles. Reading the one current version by hand, checking each
double as it is read, costs ~40 % of that (docs/performance.md has figures).

Safety, as in :mod:`schemas.hotpath`: written for one schema *version*
(the fingerprint below); the record is exactly what ``Codec.decode(data,
expected="Transaction")`` returns (property-tested in
``tests/unit/test_hotpath_events.py``). Anything this code does not expect --
another version, JSON, a non-finite double, invalid UTF-8, a varint longer
than 8 bytes, a map in several or sized blocks, trailing bytes, an oversized
message -- goes through the Codec, so errors and reason codes are its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from schemas.codec import MARKER, Codec
from schemas.hotpath import read_avro_long
from schemas.registry import current

__all__ = ["TransactionDecoder", "read_transaction_at"]

#: the version this module is written for (CRC-64-AVRO of the canonical form)
TRANSACTION_FINGERPRINT = bytes.fromhex("88ddb36911f77bb2")

_DOUBLE = struct.Struct("<d").unpack_from


class TransactionDecoder:
    """Decode Transactions; the current version in Avro is read here, anything else by the codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.fast = current("Transaction").fingerprint == TRANSACTION_FINGERPRINT
        self._head = MARKER + TRANSACTION_FINGERPRINT
        #: feature-name bytes -> the one str for them: names repeat in every event, and
        #: shared strs make the learner's key-tuple comparisons identity checks
        self._names: dict[bytes, str] = {}

    def decode(self, data: bytes) -> dict[str, Any]:
        """The Transaction in ``data``, as ``Codec.decode(data, expected="Transaction")``.

        Raises the codec's :class:`~schemas.codec.SchemaError` for anything
        that is not a plainly valid current-version Transaction.
        """
        if (
            self.fast
            and type(data) is bytes
            and len(data) <= self.codec.max_bytes
            and data[:10] == self._head
        ):
            try:
                return _read_transaction(data, self._names)
            except (IndexError, ValueError, struct.error):  # UnicodeDecodeError: a ValueError
                pass
        return self.codec.decode(data, expected="Transaction")


def _string(data: bytes, i: int) -> tuple[str, int]:
    size = data[i]
    if size < 0x80:  # one-byte length: nearly every string here
        size, i = (size >> 1) ^ -(size & 1), i + 1
    else:
        size, i = read_avro_long(data, i)
    end = i + size
    if size < 0 or end > len(data):
        raise ValueError("a string that does not fit")
    return data[i:end].decode("utf-8"), end


def _read_transaction(data: bytes, names: dict[bytes, str]) -> dict[str, Any]:
    """A single-object encoded Transaction: the whole of ``data`` after its header."""
    record, i = read_transaction_at(data, 10, names)
    if i != len(data):
        raise ValueError("bytes after the record: the codec says which")
    return record


#: a features map's layout: (its unpacker, its bytes, each name's bytes, the names)
Shape = tuple[Callable[[bytes, int], tuple[Any, ...]], int, tuple[bytes, ...], tuple[str, ...]]


def _learn_shape(shapes: dict[int, Shape], raws: list[tuple[bytes, str]], span: int) -> None:
    """Keep the layout of a map just read: the next map of its size is read in one call
    (the events of one stream carry the same feature names in the same order)."""
    if len(shapes) >= 64 and len(raws) not in shapes:
        shapes.clear()  # bounded: odd producers cannot grow it forever
    layout = struct.Struct("<" + "".join(f"{len(head)}sd" for head, _ in raws))
    if layout.size == span:
        heads = tuple(head for head, _ in raws)
        shapes[len(raws)] = (layout.unpack_from, span, heads, tuple(n for _, n in raws))


def read_transaction_at(
    data: bytes, i: int, names: dict[bytes, str], shapes: dict[int, Shape] | None = None
) -> tuple[dict[str, Any], int]:
    """Transaction v1 at ``i`` (six strings and a long, amount double, currency, features
    map, label) and the position after it; also a record in a container file's block.

    Raises ValueError, IndexError or struct.error for anything it does not read plainly
    (the caller's generic reader then decides); ``names`` shares feature-name strs;
    ``shapes`` (kept by the caller) remembers each map size's last layout.
    """
    event_id, i = _string(data, i)
    ts, i = read_avro_long(data, i)
    site_id, i = _string(data, i)
    region, i = _string(data, i)
    account_id, i = _string(data, i)
    merchant_id, i = _string(data, i)
    (amount,) = _DOUBLE(data, i)
    i += 8
    currency, i = _string(data, i)
    count, i = read_avro_long(data, i)
    features: dict[str, float] = {}
    finite = amount - amount == 0.0  # NaN and +-inf give NaN
    if count < 0:
        raise ValueError("a sized map block: the codec reads it")
    shape = shapes.get(count) if shapes is not None and count > 0 else None
    read = False
    if shape is not None:  # the names (and their order) of the last map of this size?
        unpack, span, heads, keys = shape
        try:
            got = unpack(data, i)
        except struct.error:  # too short: the loop below says what is wrong
            got = None
        if got is not None and got[0::2] == heads:
            values = got[1::2]
            total = sum(values)
            if total - total == 0.0:  # all finite (an inf or NaN, or an overflow: the loop)
                features = dict(zip(keys, values, strict=True))
                i += span
                read = True
    if count and not read:
        size = len(data)
        start, raws = i, []
        for _ in range(count):
            n = data[i]
            if n >= 0x80:
                raise ValueError("a long feature name: the codec reads it")
            end = i + 1 + (n >> 1)
            if n & 1 or end > size:
                raise ValueError("a feature name that does not fit")
            raw = data[i + 1 : end]
            name = names.get(raw)
            if name is None:
                name = raw.decode("utf-8")
                if len(names) < 4096:  # bounded: odd producers cannot grow it forever
                    names[raw] = name
            (value,) = _DOUBLE(data, end)
            finite = finite and value - value == 0.0
            features[name] = value
            raws.append((data[i:end], name))
            i = end + 8
        if shapes is not None and finite:
            _learn_shape(shapes, raws, i - start)
    if count:
        if data[i] != 0:
            raise ValueError("a second map block: the codec reads it")
        i += 1  # the map's end
    branch = data[i]
    if branch == 0:
        label, i = None, i + 1
    elif branch == 2:  # zig-zag 1: the boolean branch
        flag = data[i + 1]
        if flag > 1:
            raise ValueError("a boolean byte other than 0 or 1")
        label, i = flag == 1, i + 2
    else:
        raise ValueError("a union branch Transaction.label does not have")
    if not finite:
        raise ValueError("a non-finite double: the codec says which")
    return {
        "event_id": event_id,
        "ts": ts,
        "site_id": site_id,
        "region": region,
        "account_id": account_id,
        "merchant_id": merchant_id,
        "amount": amount,
        "currency": currency,
        "features": features,
        "label": label,
    }, i

"""Split an Avro container into raw record bytes without decoding them.

Replay's fast path. A record body inside a container file is byte-for-byte
the body of its Avro single-object message, so a replay that only needs each
record's key and time can skip decoding into dicts and re-encoding, which are
most of the cost in Python. The skipper is compiled from the file's own
writer schema (not from hard-coded field positions), reads only the fields it
is asked for (``event_id``, ``site_id``, ``ts``) and skips the rest.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fastavro

from schemas.hotpath import avro_long

_STR, _LONG, _FIXED, _UNION, _MAP, _ARRAY = range(6)
_SIZES = {"double": 8, "float": 4, "boolean": 1, "null": 0}
_CAPTURE = {"event_id": 0, "site_id": 1, "ts": 2}


class RawRecord(NamedTuple):
    index: int  # 1-based record number in the file
    record_type: str
    branch: int  # union branch of the container schema (0 when it is one record)
    key: bytes  # site_id, or event_id when a record has no site
    ts: int | None
    body: bytes  # the record's Avro binary body


class UnsupportedSchema(ValueError):
    """The container's schema is outside what the skipper compiles; decode instead."""


def _compile(schema: Any, capture: int = -1) -> tuple:
    """One op tuple ``(code, arg, capture_slot)`` for an Avro (sub)schema."""
    if isinstance(schema, list):
        return (_UNION, [_compile(s, capture) for s in schema], capture)
    if isinstance(schema, str):
        schema = {"type": schema}
    kind = schema["type"]
    if kind in ("string", "bytes"):
        return (_STR, None, capture)
    if kind in ("int", "long", "enum"):
        return (_LONG, None, capture)
    if kind in _SIZES or kind == "fixed":
        return (_FIXED, _SIZES.get(kind, schema.get("size")), -1)
    if kind == "map":
        return (_MAP, _compile(schema["values"]), -1)
    if kind == "array":
        return (_ARRAY, _compile(schema["items"]), -1)
    raise UnsupportedSchema(f"cannot skip Avro type {kind!r}")


def compile_record(schema: dict[str, Any], *, with_ts: bool = True) -> list[tuple]:
    """The op list of a top-level record; nested records are flattened in place.

    ``event_id`` is only captured when ``site_id`` may be null (it is the key
    then), and ``ts`` only ``with_ts``: every capture costs time per event.
    """
    names = {f["name"]: f["type"] for f in schema["fields"]}
    capture = dict(_CAPTURE)
    if isinstance(names.get("site_id"), str):
        del capture["event_id"]
    if not with_ts:
        del capture["ts"]
    ops: list[tuple] = []
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "record":
            ops.extend(compile_record(t, with_ts=False))
        else:
            ops.append(_compile(t, capture.get(f["name"], -1)))
    return ops


def _long(buf: bytes, i: int) -> tuple[int, int]:
    b = buf[i]
    n, shift = b & 0x7F, 7
    while b & 0x80:
        i += 1
        b = buf[i]
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), i + 1


def _skip(buf: bytes, i: int, op: tuple, got: list) -> int:
    """Skip one value at ``buf[i]``; store captured values in ``got``; return the end."""
    code, arg, slot = op
    if code == _STR:
        b = buf[i]
        if b < 0x80:
            n, i = b >> 1, i + 1
        else:
            n, i = _long(buf, i)
        if slot >= 0:
            got[slot] = buf[i : i + n]
        return i + n
    if code == _FIXED:
        return i + arg
    if code == _LONG:
        n, end = _long(buf, i)
        if slot >= 0:
            got[slot] = n
        return end
    if code == _UNION:
        branch, i = _long(buf, i)
        return _skip(buf, i, arg[branch], got)
    return _skip_blocks(buf, i, code, arg, got)


def _skip_blocks(buf: bytes, i: int, code: int, item: tuple, got: list) -> int:
    """Arrays and maps: blocks of ``count`` items until a zero count."""
    fixed = item[0] == _FIXED
    while True:
        count, i = _long(buf, i)
        if count == 0:
            return i
        if count < 0:  # a block with its byte size: skip it whole
            size, i = _long(buf, i)
            i += size
            continue
        if code == _MAP and fixed:  # map<double>: the features of every event
            size = item[1]
            for _ in range(count):
                b = buf[i]
                if b < 0x80:
                    i += 1 + (b >> 1) + size
                else:
                    n, i = _long(buf, i)
                    i += n + size
            continue
        for _ in range(count):
            if code == _MAP:
                i = _skip(buf, i, (_STR, None, -1), got)
            i = i + item[1] if fixed else _skip(buf, i, item, got)


def build_splitter(ops: list[tuple]) -> Any:
    """``split(buf, i) -> (end, event_id, site_id, ts)`` for one record type.

    Generated as straight-line Python from the op list: an interpreter pays a
    function call per field, and this loop runs once per replayed event.
    """
    items: list[tuple] = []
    lines = ["def split(buf, i):", "    c0 = c1 = c2 = None"]
    for op in ops:
        lines += _lines(op, items, "    ")
    lines.append("    return i, c0, c1, c2")
    namespace = {"_long": _long, "_skip_blocks": _skip_blocks, "ITEMS": items, "_g": [None] * 3}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from op codes only
    return namespace["split"]


def _lines(op: tuple, items: list[tuple], ind: str) -> list[str]:
    code, arg, slot = op
    if code == _STR and slot < 0:
        return [
            f"{ind}b = buf[i]",
            f"{ind}if b < 128:",
            f"{ind}    i += 1 + (b >> 1)",
            f"{ind}else:",
            f"{ind}    n, i = _long(buf, i)",
            f"{ind}    i += n",
        ]
    if code == _STR:
        return [
            f"{ind}b = buf[i]",
            f"{ind}if b < 128:",
            f"{ind}    n = b >> 1",
            f"{ind}    i += 1",
            f"{ind}else:",
            f"{ind}    n, i = _long(buf, i)",
            f"{ind}c{slot} = buf[i : i + n]",
            f"{ind}i += n",
        ]
    if code == _LONG:
        if slot >= 0:
            return [f"{ind}c{slot}, i = _long(buf, i)"]
        return [f"{ind}while buf[i] & 128:", f"{ind}    i += 1", f"{ind}i += 1"]
    if code == _FIXED:
        return [f"{ind}i += {arg}"] if arg else []
    if code == _UNION:  # branch n is the single byte 2n (zigzag), for n < 64
        if len(arg) > 63:
            raise UnsupportedSchema("unions of more than 63 branches")
        out = [f"{ind}b = buf[i]", f"{ind}i += 1"]
        for n, branch in enumerate(arg):
            out.append(f"{ind}{'if' if n == 0 else 'elif'} b == {2 * n}:")
            out += _lines(branch, items, ind + "    ") or [f"{ind}    pass"]
        return [*out, f"{ind}else:", f"{ind}    raise ValueError(f'union branch byte {{b}}')"]
    if code == _MAP and arg[0] == _FIXED:  # map<double>: the features of every event
        return _fixed_map_lines(arg[1], ind)
    items.append(arg)
    return [f"{ind}i = _skip_blocks(buf, i, {code}, ITEMS[{len(items) - 1}], _g)"]


def _fixed_map_lines(size: int, ind: str) -> list[str]:
    """Skip a map whose values have a fixed size: only the keys need reading."""
    return [
        f"{ind}while True:",
        f"{ind}    k = buf[i]",
        f"{ind}    if k < 128 and not k & 1:",  # a small positive count: one byte
        f"{ind}        k >>= 1",
        f"{ind}        i += 1",
        f"{ind}    else:",
        f"{ind}        k, i = _long(buf, i)",
        f"{ind}    if k <= 0:",
        f"{ind}        if k == 0:",
        f"{ind}            break",
        f"{ind}        k, i = _long(buf, i)",
        f"{ind}        i += k",
        f"{ind}        continue",
        f"{ind}    for _ in range(k):",
        f"{ind}        b = buf[i]",
        f"{ind}        if b < 128:",
        f"{ind}            i += {1 + size} + (b >> 1)",
        f"{ind}        else:",
        f"{ind}            n, i = _long(buf, i)",
        f"{ind}            i += n + {size}",
    ]


def writer_schema(path: str | Path) -> Any:
    """The container's writer schema, to decode raw bodies with exactly that schema."""
    with Path(path).open("rb") as fo:
        return fastavro.block_reader(fo).writer_schema


def decode_body(schema: Any, branch: int, body: bytes) -> tuple[str, dict[str, Any]]:
    """``(record_type, record)`` of one raw body; ``schema`` from :func:`writer_schema`."""
    if isinstance(schema, list):
        head = avro_long(branch)
        name, record = fastavro.schemaless_reader(
            io.BytesIO(head + body), schema, return_record_name=True
        )
    else:
        name, record = schema["name"], fastavro.schemaless_reader(io.BytesIO(body), schema)
    return str(name).rpartition(".")[2], record


def iter_raw(path: str | Path, *, with_ts: bool = True) -> Iterator[RawRecord]:
    """Raw records of an Avro container, one by one (see :func:`iter_raw_blocks`)."""
    for block in iter_raw_blocks(path, with_ts=with_ts):
        yield from (RawRecord(*rec) for rec in block)


def iter_raw_blocks(path: str | Path, *, with_ts: bool = True) -> Iterator[list[tuple]]:
    """Raw records of an Avro container, one list per Avro block, in file order.

    Items are plain tuples in :class:`RawRecord` field order (cheaper to build
    in the hot loop); ``ts`` is None unless ``with_ts``. Raises
    :class:`UnsupportedSchema` before the first block if the schema cannot be
    skipped, and :class:`CorruptData` with the record number if the data are
    truncated or corrupt.
    """
    with Path(path).open("rb") as fo:
        blocks = fastavro.block_reader(fo)
        schema = blocks.writer_schema
        branches = schema if isinstance(schema, list) else [schema]
        if any(not isinstance(b, dict) or b.get("type") != "record" for b in branches):
            raise UnsupportedSchema("the container's records are not Avro records")
        if len(branches) > 63:
            raise UnsupportedSchema("unions of more than 63 record types")
        splitters = [build_splitter(compile_record(b, with_ts=with_ts)) for b in branches]
        names = [str(b["name"]).rpartition(".")[2] for b in branches]
        union = isinstance(schema, list)
        index = 0
        try:
            for block in blocks:
                buf, out, i = block.bytes_.getvalue(), [], 0
                for _ in range(block.num_records):
                    index += 1
                    branch = 0
                    if union:
                        branch, i = buf[i] >> 1, i + 1  # < 64 branches: one byte
                    start = i
                    i, event_id, site, ts = splitters[branch](buf, i)
                    key = site if site is not None else event_id or b""
                    out.append((index, names[branch], branch, key, ts, buf[start:i]))
                if i != len(buf):
                    raise ValueError(f"block ends at byte {i} of {len(buf)}")
                yield out
        except (IndexError, ValueError, EOFError, OSError) as e:
            raise CorruptData(index, e) from e


class CorruptData(ValueError):
    """The container is truncated or corrupt at record ``index``; nothing after is readable."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(f"truncated or corrupt Avro data at record {index}: {cause!r}")
        self.index = index

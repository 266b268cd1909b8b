"""Event logs on disk: Avro object container files and JSON Lines.

A log holds events *and* the late labels that follow them, interleaved in time
order, because that is what a replay must reproduce: a chargeback arrives
hours after its transaction, between later transactions. So one file carries
several record types:

* **Avro (``.avro``)** — an object container file whose writer schema is the
  union ``[prism.Transaction, prism.SensorReading, prism.Label]``, built from
  the contract ``.avsc`` files unchanged. Any Avro tool can read it; the union
  branch names the record type. Timestamps are ``timestamp-millis`` longs.
* **JSON Lines (``.jsonl``, ``.jsonl.gz``)** — one JSON object per line with
  the same field names as the schemas plus ``"type"`` naming the record
  (``"Transaction"``, ``"SensorReading"`` or ``"Label"``); ``ts`` is an integer
  of epoch milliseconds. Missing fields that have a schema default take it.

Readers yield :class:`Event` ``(line_no, record_type, record)``; in Avro the
"line" is the 1-based record number. A bad line becomes a :class:`BadRecord`
with a reason given to ``on_error`` (or raised as :class:`EventLogError` when
no callback is given) — never a traceback. Records always use ints for ``ts``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import math
import struct
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import fastavro
import fastavro.schema
import fastavro.write

from schemas.codec import load_schema
from schemas.errors import SchemaError
from schemas.hotpath_events import TRANSACTION_FINGERPRINT, Shape, read_transaction_at
from schemas.registry import current
from schemas.validate import compile_check

log = logging.getLogger(__name__)

__all__ = [
    "RECORD_TYPES",
    "BadRecord",
    "count_records",
    "Event",
    "EventLogError",
    "EventLogWriter",
    "log_format",
    "open_writer",
    "read_events",
]

RECORD_TYPES = ("Transaction", "SensorReading", "Label")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
CONTAINER_SCHEMA: list[dict[str, Any]] = [load_schema(name) for name in RECORD_TYPES]


class Event(NamedTuple):
    line_no: int
    record_type: str
    record: dict[str, Any]


class BadRecord(NamedTuple):
    line_no: int
    reason: str
    text: str = ""


class EventLogError(ValueError):
    """A log (or one of its records) cannot be read or written as asked."""

    def __init__(self, reason: str, *, line_no: int = 0, path: Path | None = None) -> None:
        where = f"{path}:{line_no}: " if path and line_no else (f"{path}: " if path else "")
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.line_no = line_no


OnError = Callable[[BadRecord], None]


def log_format(path: str | Path) -> str:
    """``"avro"`` or ``"jsonl"``, chosen by the file name so no flag can disagree."""
    name = str(path).lower()
    if name.endswith(".avro"):
        return "avro"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    raise EventLogError(f"unknown event-log extension in {path!s}: use .avro, .jsonl or .jsonl.gz")


def read_events(path: str | Path, *, on_error: OnError | None = None) -> Iterator[Event]:
    """Yield the events of a log in file order; bad records go to ``on_error``."""
    path = Path(path)
    report = on_error or _raiser(path)
    if not path.is_file():
        raise EventLogError("no such file", path=path)
    if log_format(path) == "avro":
        yield from _read_avro(path, report)
    else:
        yield from _read_jsonl(path, report)


def count_records(path: str | Path) -> int:
    """Records in a log without decoding them (for progress bars): blocks or lines."""
    path = Path(path)
    if log_format(path) == "avro":
        with path.open("rb") as fo:
            try:
                return sum(block.num_records for block in fastavro.block_reader(fo))
            except Exception as e:
                raise EventLogError(f"cannot count records ({e})", path=path) from e
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fo:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fo.read(1 << 20), b""))


def _raiser(path: Path) -> OnError:
    def raise_bad(bad: BadRecord) -> None:
        raise EventLogError(bad.reason, line_no=bad.line_no, path=path)

    return raise_bad


def _read_avro(path: Path, report: OnError) -> Iterator[Event]:
    checker = RecordChecker()
    n = 0
    with path.open("rb") as fo:
        try:
            records = fastavro.reader(fo, return_record_name=True)
            if _canonical(records.writer_schema) != _CONTRACT:
                # another writer schema (one record type, an older or a foreign one): resolve
                # it against the contract, else its records need not have the contract's fields
                fo.seek(0)
                records = fastavro.reader(fo, CONTAINER_SCHEMA, return_record_name=True)
        except Exception as e:  # fastavro raises ValueError, EOFError, ... on bad headers
            raise EventLogError(f"not an Avro container file ({e})", path=path) from e
        skip = 0  # records the block reader yielded (or reported) before it gave up
        if records.codec in _BLOCK_CODECS and _hand_readable(records.writer_schema):
            fo.seek(0)
            skip = yield from _read_avro_blocks(fo, report, checker)
            if skip is None:
                return
            fo.seek(0)  # a damaged block: the record reader says what it says of it
            records = fastavro.reader(fo, return_record_name=True)
        while True:
            try:
                item = next(records)
            except StopIteration:
                return
            except Exception as e:  # a truncated or corrupt block: nothing after it is readable
                report(BadRecord(n + 1, f"truncated or corrupt Avro data after record {n}: {e!r}"))
                return
            n += 1
            if n <= skip:
                continue
            name, record = item if isinstance(item, tuple) else (_single_type(records), item)
            event = _checked(n, name, record, checker, report)
            if event is not None:
                yield event


def _checked(
    n: int, name: str, record: dict[str, Any], checker: RecordChecker, report: OnError
) -> Event | None:
    """Record ``n`` as an Event (``ts`` in epoch ms), or None once reported as bad."""
    rtype = name.rpartition(".")[2]
    ts = record.get("ts")
    if isinstance(ts, dt.datetime):
        record["ts"] = (ts - _EPOCH) // _MS
    problem = checker.semantic_problem(rtype, record)
    if problem:
        report(BadRecord(n, problem))
        return None
    return Event(n, rtype, record)


#: container codecs whose blocks fastavro's block reader hands over decompressed
_BLOCK_CODECS = ("null", "deflate")
#: a Transaction's union branch in the contract container (zig-zag 0), and ``ts``'s range
#: as a datetime (what the generic reader would fail on is left to it)
_TRANSACTION_BRANCH = 0
_TS_RANGE = range(
    (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _MS,
    (dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC) - _EPOCH) // _MS + 1,
)


def _hand_readable(writer_schema: Any) -> bool:
    """The contract container, with the Transaction version the hand reader is written for."""
    return (
        _canonical(writer_schema) == _CONTRACT
        and RECORD_TYPES[_TRANSACTION_BRANCH] == "Transaction"
        and current("Transaction").fingerprint == TRANSACTION_FINGERPRINT
    )


def _hand_block(
    data: bytes, count: int, names: dict[bytes, str], shapes: dict[int, Shape]
) -> list[dict[str, Any]] | None:
    """A block of Transactions read by hand (#26 item 3: fastavro's generic reader and the
    datetime round trip of ``ts`` were most of an edge agent's read), or None when the
    block holds anything else -- another record type, a value the hand reader does not
    read plainly, bytes left over -- and the generic reader must read it."""
    out: list[dict[str, Any]] = []
    i = 0
    try:
        for _ in range(count):
            if data[i] != _TRANSACTION_BRANCH:
                return None
            record, i = read_transaction_at(data, i + 1, names, shapes)
            if record["ts"] not in _TS_RANGE:
                return None
            out.append(record)
    except (IndexError, ValueError, struct.error):
        return None
    return out if i == len(data) else None


def _read_avro_blocks(
    fo: IO[bytes], report: OnError, checker: RecordChecker
) -> Generator[Event, None, int | None]:
    """:func:`_read_avro`'s records, a block at a time: the same events, the same bad records.

    Returns None at the end of the log; at a block it cannot read (truncated or
    corrupt), the records yielded so far: the record reader goes on from there,
    so a damaged log's records and reasons are the record reader's own (it
    yields a block's records before it finds the block's end damaged).
    """
    names: dict[bytes, str] = {}
    shapes: dict[int, Shape] = {}
    n = 0
    blocks = fastavro.block_reader(fo, return_record_name=True)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return None
        except Exception:  # noqa: BLE001 - the record reader reports it
            return n
        fast = _hand_block(block.bytes_.getvalue(), block.num_records, names, shapes)
        if fast is not None:
            for record in fast:
                n += 1
                if not record["amount"] >= 0:  # features are finite: the hand reader checked
                    report(BadRecord(n, checker.semantic_problem("Transaction", record) or ""))
                    continue
                yield Event(n, "Transaction", record)
            continue
        block.bytes_.seek(0)
        records = iter(block)
        while True:
            try:
                item = next(records)
            except StopIteration:
                break
            except Exception:  # noqa: BLE001 - the record reader reports it
                return n
            n += 1
            name, record = item
            event = _checked(n, name, record, checker, report)
            if event is not None:
                yield event


def _canonical(schema: Any) -> str:
    return fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema))


_CONTRACT = _canonical(CONTAINER_SCHEMA)


def _single_type(records: Any) -> str:
    """The record name of a container written with one record schema, not the union."""
    return str(records.writer_schema.get("name", ""))


class RecordChecker:
    """The codec's own record checks (types, finite doubles, defaults), for log lines.

    Plus what the schema docs ask beyond types: a Transaction's amount is >= 0.
    """

    def __init__(self) -> None:
        self._checks = {
            name: compile_check(load_schema(name), from_json=True) for name in RECORD_TYPES
        }

    def check_json(self, obj: Any) -> tuple[str, dict[str, Any]]:
        """``(record_type, record)`` from one decoded JSON line, or ``ValueError``."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        rtype = str(obj.get("type", "")).rpartition(".")[2]
        check = self._checks.get(rtype)
        if check is None:
            raise ValueError(
                f"field 'type' must be one of {', '.join(RECORD_TYPES)}, got {rtype!r}"
            )
        record = check({k: v for k, v in obj.items() if k != "type"}, "")
        problem = self.semantic_problem(rtype, record)
        if problem:
            raise ValueError(problem)
        return rtype, record

    @staticmethod
    def semantic_problem(rtype: str, record: dict[str, Any]) -> str | None:
        """Checks a valid Avro container cannot guarantee: finite features, amount >= 0."""
        features = record.get("features") or {}
        if not all(map(math.isfinite, features.values())):
            name = next(k for k, v in features.items() if not math.isfinite(v))
            return f"{rtype}: features[{name!r}] is {features[name]!r}: only finite numbers"
        if rtype == "Transaction" and not record["amount"] >= 0:
            return f"Transaction: amount must be >= 0, got {record['amount']!r}"
        return None


def _read_jsonl(path: Path, report: OnError) -> Iterator[Event]:
    checker = RecordChecker()
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fo:
        for line_no, line in enumerate(fo, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rtype, record = checker.check_json(obj)
            except (ValueError, TypeError) as e:
                report(BadRecord(line_no, _reason(e), line.rstrip("\n")[:200]))
                continue
            yield Event(line_no, rtype, record)


def _reason(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at column {e.colno}"
    if isinstance(e, SchemaError):
        return f"{e.reason_code}: {e}"
    return str(e)


class EventLogWriter:
    """Write events to one log; the format follows the file extension.

    Use as a context manager. ``sync_marker`` fixes the Avro sync bytes so a
    seeded generator writes byte-identical files.
    """

    def __init__(self, path: str | Path, *, sync_marker: bytes | None = None) -> None:
        self.path = Path(path)
        self.format = log_format(self.path)
        self.count = 0
        self._fo: IO[Any]
        self._avro: Any = None
        if self.format == "avro":
            self._fo = self.path.open("wb")
            self._avro = fastavro.write.Writer(
                self._fo,
                fastavro.parse_schema(CONTAINER_SCHEMA),
                metadata={"prism.eventlog": "1"},
                sync_marker=sync_marker or b"",
            )
        elif self.path.name.lower().endswith(".gz"):
            self._fo = gzip.open(self.path, "wt", encoding="utf-8", compresslevel=5)  # noqa: SIM115
        else:
            self._fo = self.path.open("w", encoding="utf-8")

    def write(self, record_type: str, record: dict[str, Any]) -> None:
        self.write_many(((record_type, record),))

    def write_many(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Append ``(record_type, record)`` pairs; records use int epoch-millis ``ts``."""
        try:
            if self._avro is not None:
                write = self._avro.write
                for rtype, record in events:
                    write((f"prism.{rtype}", record))
                    self.count += 1
            else:
                dumps, out = json.JSONEncoder(allow_nan=False).encode, self._fo.write
                for rtype, record in events:
                    out(dumps({"type": rtype, **record}) + "\n")
                    self.count += 1
        except (ValueError, TypeError, KeyError) as e:
            raise EventLogError(
                f"record {self.count + 1} does not fit its schema: {e}", path=self.path
            ) from e

    def close(self) -> None:
        if self._avro is not None:
            self._avro.flush()
        self._fo.close()

    def __enter__(self) -> EventLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(path: str | Path, *, sync_marker: bytes | None = None) -> EventLogWriter:
    """An :class:`EventLogWriter` for ``path`` (``.avro``, ``.jsonl`` or ``.jsonl.gz``)."""
    return EventLogWriter(path, sync_marker=sync_marker)

"""Where replayed messages come from: an event log turned into (topic, key, value).

Two sources give the same messages:

* the **raw Avro path** splits a container into record bodies
  (:mod:`schemas.avroraw`) and prefixes each with the codec's
  single-object header — no decode, no re-encode. It is used only after the
  first record of each type, decoded and encoded by the real codec, came out
  byte-identical; otherwise that type is decoded and encoded record by record.
* the **decode path** reads records (:func:`schemas.eventlog.read_events`),
  optionally re-times inline labels (``label_delay``) and encodes each with
  the codec. JSON Lines, ``--label-delay`` and ``--decode`` take this path.

Both count input records in ``consumed`` (for ``--limit`` and progress) and
send bad records to ``on_bad`` with their line (record) number.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from schemas.avroraw import (
    CorruptData,
    RawRecord,
    UnsupportedSchema,
    decode_body,
    iter_raw_blocks,
    writer_schema,
)
from schemas.eventlog import BadRecord, Event, log_format, read_events

Message = tuple[str, bytes, bytes, int]  # topic, key, value, event ts (ms)
DATA_TYPES = ("Transaction", "SensorReading")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, name: str, record: dict[str, Any]) -> bytes: ...


class Source:
    """Messages of one log, in file order, in lists of up to ``batch`` messages."""

    def __init__(
        self,
        path: Path,
        *,
        codec: Encoder,
        topics: dict[str, str],
        on_bad: Callable[[BadRecord], None],
        limit: int | None = None,
        label_delay: int | None = None,
        decode: bool = False,
        need_ts: bool = True,
    ) -> None:
        self.path, self.codec, self.topics, self.on_bad = path, codec, topics, on_bad
        self.limit, self.label_delay = limit, label_delay
        self.raw = log_format(path) == "avro" and label_delay is None and not decode
        self.consumed = 0
        self.need_ts = need_ts  # only pacing by event time needs ts on the raw path
        self._prefix: dict[str, bytes] = {}  # record type -> codec header, b'' = decode
        self._file_schema: Any = None

    def batches(self, batch: int = 2000) -> Iterator[list[Message]]:
        """Lists of messages: one per Avro block on the raw path, ``batch`` long otherwise."""
        if self.raw:
            yield from self._raw()
            return
        messages = self._decoded()
        while chunk := list(itertools.islice(messages, batch)):
            yield chunk

    def _raw(self) -> Iterator[list[Message]]:
        topics, prefix, left = self.topics, self._prefix, self.limit
        try:
            for block in iter_raw_blocks(self.path, with_ts=self.need_ts):
                if left is not None:
                    block, left = block[:left], left - min(left, len(block))
                self.consumed += len(block)
                out: list[Message] = []
                for rec in block:  # (index, record_type, branch, key, ts, body)
                    head = prefix.get(rec[1])
                    if head is None:  # the first record of its type
                        head = self._verify(RawRecord(*rec))
                    if head:
                        out.append((topics[rec[1]], rec[3], head + rec[5], rec[4] or 0))
                    elif msg := self._slow(RawRecord(*rec)):
                        out.append(msg)
                yield out
                if left == 0:
                    return
        except UnsupportedSchema as e:
            log.info("event=replay_decode_path reason=%r", str(e))
            self.raw = False
            yield from self.batches()
        except CorruptData as e:
            self.on_bad(BadRecord(e.index, str(e)))

    def _verify(self, rec: RawRecord) -> bytes:
        """The codec's header for this type if codec(decode(body)) == header + body."""
        body = rec.body
        try:
            encoded = self.codec.encode(rec.record_type, self._decode_body(rec))
        except Exception:  # a bad record: the slow path reports it; verify on the next one
            return b""
        same = len(encoded) > len(body) and encoded.endswith(body)
        self._prefix[rec.record_type] = encoded[: len(encoded) - len(body)] if same else b""
        if not same:
            log.info("event=replay_decode_path type=%s reason=codec_bytes_differ", rec.record_type)
        return self._prefix[rec.record_type]

    def _decode_body(self, rec: RawRecord) -> dict[str, Any]:
        if self._file_schema is None:
            self._file_schema = writer_schema(self.path)
        _, record = decode_body(self._file_schema, rec.branch, rec.body)
        if isinstance(record.get("ts"), dt.datetime):
            record["ts"] = (record["ts"] - _EPOCH) // dt.timedelta(milliseconds=1)
        return record

    def _slow(self, rec: RawRecord) -> Message | None:
        return self._encode(Event(rec.index, rec.record_type, self._decode_body(rec)))

    def _encode(self, event: Event) -> Message | None:
        line_no, rtype, record = event
        try:
            value = self.codec.encode(rtype, record)
        except Exception as e:  # SchemaError and anything a bad record can raise
            self.on_bad(BadRecord(line_no, f"{rtype} cannot be encoded: {e}", str(record)[:200]))
            return None
        key = (record.get("site_id") or record["event_id"]).encode()
        return self.topics[rtype], key, value, int(record["ts"])

    def _decoded(self) -> Iterator[Message]:
        events = read_events(self.path, on_error=self.on_bad)
        for event in self._with_labels(self._counted(events)):
            msg = self._encode(event)
            if msg:
                yield msg

    def _counted(self, events: Iterator[Event]) -> Iterator[Event]:
        for event in itertools.islice(events, self.limit):
            self.consumed += 1
            yield event

    def _with_labels(self, events: Iterator[Event]) -> Iterator[Event]:
        return events if self.label_delay is None else delay_labels(events, self.label_delay)


def delay_labels(events: Iterator[Event], n: int) -> Iterator[Event]:
    """Move inline labels out of their events into ``Label`` events ``n`` data events later.

    The label of the k-th data event (Transaction or SensorReading) is sent as
    a Label right after the (k+n)-th data event, with that event's ``ts`` as
    the time the label became known; the event itself is sent with
    ``label=null``. Labels still pending at the end follow the last event,
    with its ``ts``. Label records already in the log pass through unchanged.
    """
    pending: deque[tuple[int, Event]] = deque()
    count, last_ts = 0, 0
    for event in events:
        line_no, rtype, record = event
        if rtype not in DATA_TYPES or record.get("label") is None:
            yield event
        else:
            label = {"event_id": record["event_id"], "ts": 0, "label": record["label"]}
            label["site_id"] = record.get("site_id")
            pending.append((count + 1 + n, Event(line_no, "Label", label)))
            yield Event(line_no, rtype, {**record, "label": None})
        if rtype in DATA_TYPES:
            count += 1
            last_ts = record["ts"]
            while pending and pending[0][0] <= count:
                due = pending.popleft()[1]
                due.record["ts"] = last_ts
                yield due
    for _, due in pending:
        due.record["ts"] = last_ts
        yield due

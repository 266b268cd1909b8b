"""Intake of the central worker: consumed records in, per-partition work out, bad ones dead.

:meth:`Intake.route` is the hottest loop of the service: one call per
mini-batch, decoding inlined, so a record costs no Python call beyond its
decoder. What cannot be decoded still takes its place in its partition's
offset order (the learner counts it and hands it back as a rejection), so
each bad record is dead-lettered exactly once, by :meth:`Intake.dead_letter`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from schemas import Codec, SchemaError
from schemas.hotpath import LabelDecoder
from schemas.hotpath_events import TransactionDecoder
from streams.central.partition import EventIn, LabelIn, Rejected, Undecodable
from streams.dead_letters import DeadLetters

__all__ = ["Intake", "RecordIn"]


@dataclass(slots=True)  # not frozen: one per consumed record, frozen costs 4x
class RecordIn:
    """A consumed Kafka record, whatever the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


class Intake:
    """Decodes and routes a batch by partition; dead-letters what the learners refuse."""

    def __init__(
        self, codec: Codec, *, events_topic: str, event_schema: str, dead: DeadLetters
    ) -> None:
        self.codec, self.dead = codec, dead
        self.events_topic, self.event_schema = events_topic, event_schema
        # the hot path: Avro by hand for Labels and Transactions, equal to the codec
        self.label_decoder = LabelDecoder(codec)
        self.event_decoder = (
            TransactionDecoder(codec).decode
            if event_schema == "Transaction"
            else lambda data: codec.decode(data, expected=event_schema)
        )

    def route(
        self, records: Sequence[RecordIn], owned: Collection[int]
    ) -> tuple[dict[int, list[EventIn]], dict[int, list[LabelIn]]]:
        """Events and labels of the ``owned`` partitions, decoded, in consumed order."""
        events: dict[int, list[EventIn]] = {}
        labels: dict[int, list[LabelIn]] = {}
        events_topic = self.events_topic
        decode, decode_label = self.event_decoder, self.label_decoder.decode
        for rec in records:  # the hottest loop: decoding inlined on purpose
            p = rec.partition
            if p not in owned:
                continue  # revoked while buffered: its next owner reads it from the checkpoint on
            is_event = rec.topic == events_topic
            record = error = None
            if rec.value is None:
                error = Undecodable("empty", "a record without a value (tombstone)")
            else:
                try:
                    record = decode(rec.value) if is_event else decode_label(rec.value)
                except SchemaError as e:
                    error = Undecodable(e.reason_code, str(e))
                else:  # the schema's doc: amounts are >= 0 (types alone cannot say it)
                    if is_event and not record.get("amount", 0.0) >= 0:
                        amount, record = record["amount"], None
                        error = Undecodable("out-of-range", f"amount must be >= 0, got {amount!r}")
            if is_event:
                item = EventIn(rec.offset, record, rec.value, rec.timestamp_ms, error, rec.key)
                events.setdefault(p, []).append(item)
            else:
                labels.setdefault(p, []).append(
                    LabelIn(rec.offset, record, rec.value, error, rec.key)
                )
        return events, labels

    def dead_letter(self, partition: int, rejected: Sequence[Rejected]) -> None:
        """What a learner refused after decoding, with its reason (the raw bytes if kept)."""
        for rej in rejected:
            value = rej.value
            if value is None and rej.record is not None:
                value = self.codec.encode("Label", dict(rej.record))
            self.dead.send(
                topic=rej.topic,
                partition=partition,
                offset=rej.offset,
                key=rej.key,
                value=value,
                reason_code=rej.reason_code,
                reason=rej.reason,
            )

    def dead_records(self, records: Sequence[RecordIn], e: Exception) -> None:
        """Dead-letter records as consumed (key and bytes intact) after an unexpected error."""
        for rec in records:
            self.dead.send(
                topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                key=rec.key,
                value=rec.value,
                reason_code="processing-error",
                reason=f"processing failed: {type(e).__name__}: {e}",
            )

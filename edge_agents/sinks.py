"""Where an edge node's output goes: scores, summaries, forwarded events, bad records.

Each sink sends through the shared :class:`~edge_agents.link.Link` while it is
up and keeps things on the node while it is down:

- :class:`ScoreSink`: the scores topic, else ``scores-offline.jsonl``; a
  failed delivery lands in the file too, so every score is in one of the two;
  until its delivery report a score is also held in :class:`PendingScores`,
  which every save stores (a kill -9 loses none);
- :class:`SummarySender`: unsent outbox rows, marked sent only on delivery;
- :class:`Forwarder`: hybrid mode's raw events (all or a sample), buffered in
  SQLite while cut off and drained when the link is back;
- :class:`LocalDeadLetters`: bad local records with the reason, as JSON lines.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
import zlib
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, Message

from edge_agents.link import Link
from edge_agents.outbox import Outbox
from edge_agents.pending import PendingScores
from schemas import Codec
from schemas.hotpath import EdgeScoreEncoder

log = logging.getLogger(__name__)

__all__ = ["Forwarder", "LocalDeadLetters", "ScoreSink", "SummarySender", "sampled"]


class _JsonLines:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":"), default=_jsonable) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class ScoreSink(_JsonLines):
    """Scores to Kafka when linked, to the node's offline file otherwise."""

    def __init__(self, link: Link, topic: str, codec: Codec, offline: Path) -> None:
        super().__init__(offline)
        self.link, self.topic, self.codec = link, topic, codec
        self.encoder = EdgeScoreEncoder(codec)
        self.pending = PendingScores()  # produced, no delivery report yet: a save keeps them
        self.sent = self.offline = self.failed = self.resent = 0

    def send(self, *fields: Any) -> None:
        """One Score, its fields as :meth:`EdgeScoreEncoder.record` takes them (no dict is
        built unless it goes to the offline file)."""
        if self.link.up and self._produce(fields[0].encode(), self.encoder.encode(*fields)):
            return
        self.write(self.encoder.record(*fields))
        self.offline += 1

    def resend(self, items: list[tuple[bytes, bytes]]) -> None:
        """Scores a save kept unacknowledged before a crash: the same bytes, again."""
        for key, value in items:
            self.resent += 1
            if not (self.link.up and self._produce(key, value)):
                self.write(self.codec.decode(value, expected="Score"))
                self.offline += 1

    def _produce(self, key: bytes, value: bytes) -> bool:
        token = self.pending.add(key, value)
        try:
            self.link.producer.produce(
                self.topic, value, key=key, on_delivery=functools.partial(self._delivered, token)
            )
        except BufferError:
            self.pending.settle(token)
            self.link.mark_down("producer queue full")
            return False
        self.sent += 1
        return True

    def _delivered(self, token: int, err: KafkaError | None, msg: Message) -> None:
        self.pending.settle(token)
        if err is None:
            return
        self.failed += 1
        self.sent -= 1
        self.link.mark_down(err.str())
        self.write(self.codec.decode(msg.value(), expected="Score"))
        self.offline += 1


class SummarySender:
    """Produces unsent outbox rows; a row is marked sent only on delivery."""

    def __init__(self, link: Link, outbox: Outbox, topic: str, key: bytes) -> None:
        self.link, self.outbox, self.topic, self.key = link, outbox, topic, key
        self.in_flight: set[int] = set()
        self.delivered = self.failures = 0

    def pump(self) -> None:
        if not self.link.up:
            return
        for row in self.outbox.unsent():
            if row.sequence in self.in_flight:
                continue
            try:
                self.link.producer.produce(
                    self.topic,
                    row.payload,
                    key=self.key,
                    on_delivery=functools.partial(self._done, row.sequence),
                )
            except BufferError:
                self.link.mark_down("producer queue full")
                return
            self.in_flight.add(row.sequence)

    def _done(self, sequence: int, err: KafkaError | None, _msg: Message) -> None:
        self.in_flight.discard(sequence)
        if err is None:
            self.outbox.mark_sent(sequence)
            self.delivered += 1
            return
        self.failures += 1
        self.link.mark_down(err.str())
        log.warning("summary not delivered sequence=%s error=%s: kept for resend", sequence, err)

    @property
    def idle(self) -> bool:
        return not self.in_flight and self.outbox.counts()["unsent"] == 0


def sampled(event_id: str, sample: float) -> bool:
    """Whether hybrid mode forwards this event: the same events on every run and in
    every tool (crc32 of the id, not random), so ``prism compare`` forwards what
    the agents forward."""
    return sample >= 1.0 or zlib.crc32(event_id.encode()) < sample * 2**32


class Forwarder:
    """Hybrid mode: raw events (or a stable sample by event id) to the central topic."""

    def __init__(
        self, link: Link, outbox: Outbox, topic: str, sample: float, labels_topic: str
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"the forwarding sample must be in (0, 1], got {sample}")
        self.link, self.outbox, self.topic, self.sample = link, outbox, topic, sample
        self.labels_topic = labels_topic
        self._held: list[tuple[str, bytes | None, bytes]] = []
        self.forwarded = self.buffered = 0

    def chosen(self, event_id: str) -> bool:
        return sampled(event_id, self.sample)

    def offer(self, event_id: str, key: bytes | None, value: bytes, *, label: bool = False) -> None:
        """A chosen event -- or the late Label of one, so the centre can learn it too."""
        if not self.chosen(event_id):
            return
        topic = self.labels_topic if label else self.topic
        if self.link.up and self._produce(topic, key, value):
            return
        self._held.append((topic, key, value))
        self.buffered += 1

    def save(self) -> None:
        """Move held events into SQLite (called with every state save)."""
        if self._held:
            self.outbox.buffer_forward(self._held)
            self._held = []

    def drain(self, limit: int = 5000) -> None:
        if not self.link.up:
            return
        rows = self.outbox.forward_batch(limit)
        done = 0
        for row_id, topic, key, value in rows:
            if not self._produce(topic, key, value):
                break
            done = row_id
        if done:
            self.outbox.drop_forwarded(done)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> bool:
        try:
            self.link.producer.produce(topic, value, key=key, on_delivery=self._delivered)
        except BufferError:
            self.link.mark_down("producer queue full")
            return False
        self.forwarded += 1
        return True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.forwarded -= 1
            self.link.mark_down(err.str())
            self._held.append((msg.topic(), msg.key(), msg.value()))


class LocalDeadLetters(_JsonLines):
    """Bad local records, one JSON line each: where it was, why, and the raw text."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.by_reason: dict[str, int] = {}

    def add(
        self,
        *,
        reason_code: str,
        reason: str,
        where: Any,
        raw: str | bytes,
        extra: dict[str, str] | None = None,
    ) -> None:
        """``extra``: fields an internal error adds (its exception type and trace id)."""
        self.by_reason[reason_code] = self.by_reason.get(reason_code, 0) + 1
        self.write(
            {
                "reason_code": reason_code,
                "reason": reason,
                "where": where,
                "raw": raw,
                "at_ms": int(time.time() * 1000),
                **(extra or {}),
            }
        )
        self.flush()
        log.warning(
            "local dead letter reason_code=%s where=%s reason=%r", reason_code, where, reason
        )

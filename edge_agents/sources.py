"""A node's own events: its log file (replayed at a rate or flat out) or a local topic.

Both yield ``Item(position, record_type, record, raw, where)`` in order, and
``None`` on idle ticks so the agent can do its periodic work. ``position`` is
what a restart resumes after (the log's record number, or next offsets per
partition): the agent saves it with its state. ``raw`` and ``where`` are the
record's bytes as consumed and its own location (topic, partition, offset),
for a dead letter the agent writes after decoding (a log's records have no
bytes of their own: the agent re-encodes those).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from schemas import Codec
from schemas.eventlog import BadRecord, RecordChecker, read_events

log = logging.getLogger(__name__)

__all__ = ["FileSource", "Item", "TopicSource", "millis", "wait_for_start"]


def wait_for_start(path: Path, poll_s: float = 0.05) -> float:
    """The epoch seconds written in ``path``, once it exists (the launcher writes it whole)."""
    logged = False
    while True:
        try:
            return float(path.read_text())
        except FileNotFoundError:
            if not logged:
                log.info("waiting for the shared time zero in %s", path)
                logged = True
            time.sleep(poll_s)
        except ValueError as e:
            raise ValueError(f"{path}: not an epoch time in seconds ({e})") from e


EVENT_TYPES = ("Transaction", "SensorReading")


class Item(NamedTuple):
    """One record the agent handles (a tuple: made per event, it must be cheap to make)."""

    position: Any
    record_type: str
    record: dict[str, Any]
    raw: bytes | None = None
    where: Any = None  # None: the position says where it is (a log's record number)
    timestamp_ms: int | None = None  # a topic record's Kafka timestamp (a log line has none)


OnBad = Callable[[str, str, Any, str | bytes], None]  # reason_code, reason, where, raw


def millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class FileSource:
    """The node's log: records after ``after`` (a record number), of its sites only."""

    def __init__(
        self,
        path: Path,
        *,
        on_bad: OnBad,
        sites: frozenset[str] | None = None,
        rate: float | None = None,
        speedup: float | None = None,
        after: int = 0,
        start_at: float | None = None,
        start_at_file: Path | None = None,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"--rate must be > 0 events/s, got {rate}")
        if speedup is not None and not speedup > 0:
            raise ValueError(f"--speedup must be > 0, got {speedup}")
        self.path, self.on_bad, self.sites, self.rate, self.after = path, on_bad, sites, rate, after
        self.speedup = speedup
        self.start_at = start_at  # wall-clock epoch seconds of the log's first record
        self.start_at_file = start_at_file  # ... written here by a launcher, waited for

    def _bad(self, bad: BadRecord) -> None:
        if bad.line_no > self.after:
            self.on_bad("invalid-record", bad.reason, {"line": bad.line_no}, bad.text)

    def __iter__(self) -> Iterator[Item | None]:
        """Records in order; ``rate`` paces by count, ``speedup`` by the log's own clock.

        With ``speedup`` every agent reading the same log keeps the same event
        time at the same moment (time zero = the log's first record), so a
        fleet replays the sites side by side as they happened, only faster.
        Time zero is when the agent starts, or ``start_at`` (epoch seconds): agents
        given the same ``start_at`` share one clock whenever each process got going.
        ``start_at_file`` holds it instead, written once every agent is up (a
        launcher cannot know beforehand how long a busy machine takes to start them).
        """
        start_at = self.start_at
        if self.start_at_file is not None:
            start_at = wait_for_start(self.start_at_file)
        if self.speedup is None and self.rate is None:  # flat out: the loop without pacing
            yield from self._unpaced()
            return
        start, sent, t0 = time.monotonic(), 0, None
        if start_at is not None:
            start += start_at - time.time()
        for event in read_events(self.path, on_error=self._bad):
            if self.speedup is not None:
                ts = millis(event.record["ts"])
                t0 = ts if t0 is None else t0
            if event.line_no <= self.after:
                continue
            site = event.record.get("site_id")
            if self.sites is not None and site is not None and site not in self.sites:
                continue
            if t0 is not None and self.speedup is not None:
                due = start + (millis(event.record["ts"]) - t0) / 1000 / self.speedup
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            if self.rate is not None:
                ahead = start + sent / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                sent += 1
            yield Item(event.line_no, event.record_type, event.record)

    def _unpaced(self) -> Iterator[Item]:
        """:meth:`__iter__`'s records when nothing paces them (the same records, in order)."""
        after, sites = self.after, self.sites
        for line_no, record_type, record in read_events(self.path, on_error=self._bad):
            if line_no <= after:
                continue
            if sites is not None:
                site = record.get("site_id")
                if site is not None and site not in sites:
                    continue
            yield Item(line_no, record_type, record)


class TopicSource:
    """A local topic of events and labels; positions are next offsets per partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        node_id: str,
        codec: Codec,
        on_bad: OnBad,
        after: dict[str, int] | None = None,
        idle_exit_s: float | None = None,
        security: Mapping[str, str] | None = None,
    ) -> None:
        self.topic, self.codec, self.on_bad, self.idle_exit_s = topic, codec, on_bad, idle_exit_s
        self.next: dict[int, int] = {int(p): int(o) for p, o in (after or {}).items()}
        self.consumer = Consumer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap,
                "group.id": f"prism-edge-source-{node_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in self.next:
                tp.offset = self.next[tp.partition]
        consumer.assign(partitions)

    def __iter__(self) -> Iterator[Item | None]:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign)
        last = time.monotonic()
        try:
            while True:
                messages = self.consumer.consume(500, timeout=0.2)
                if not messages:
                    if self.idle_exit_s is not None and time.monotonic() - last > self.idle_exit_s:
                        return
                    yield None
                    continue
                last = time.monotonic()
                for m in messages:
                    if m.error() is not None:
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("source topic error: %s", m.error())
                        continue
                    item = self._decode(m)
                    self.next[m.partition()] = m.offset() + 1
                    if item is not None:
                        yield item
        finally:
            self.consumer.close()

    def _decode(self, m: Any) -> Item | None:
        where = {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()}
        raw = m.value() or b""
        try:
            rtype, record = self.codec.decode_any(raw)
            if rtype not in (*EVENT_TYPES, "Label"):
                raise ValueError(f"a {rtype} record is not an event or a label")
            problem = RecordChecker.semantic_problem(rtype, record)
            if problem:
                raise ValueError(problem)
        except Exception as e:  # noqa: BLE001 - every bad record is a dead letter, never a crash
            self.on_bad("undecodable", str(e), where, raw)
            return None
        position = dict(self.next) | {m.partition(): m.offset() + 1}
        kind, ts = m.timestamp()
        ts = None if kind == TIMESTAMP_NOT_AVAILABLE else ts
        return Item(position, rtype, record, raw, where, ts)

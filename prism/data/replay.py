"""Replay an event log into Kafka (``prism replay FILE``).

Messages are keyed by ``site_id`` (a Label without a site by its
``event_id``), so one site's events land on one partition in log order; the
producer is idempotent with ``acks=all``, so retries neither duplicate nor
reorder them. Each record type goes to its DESIGN.md topic
(``transactions``, ``sensor-readings``, ``labels``) unless one topic is named.

The hot path is a plain loop over pre-encoded batches: ``produce`` with one
shared delivery callback, ``poll(0)`` once per batch, ``flush`` at the end.
Every message is either delivered or counted as failed; any failure makes
the exit code non-zero. Bad input records are written to a report (JSON
Lines: line, reason, text) and skipped, or stop the replay with ``strict``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaException, Producer
from tqdm import tqdm

from prism.data import paused_gc
from prism.data.errors import DataError
from prism.data.replay_source import Encoder, Source
from runtime.errors import NotFoundError, StackError
from runtime.kafka_config import replay_producer_config
from schemas.eventlog import BadRecord, EventLogError, count_records

log = logging.getLogger(__name__)

TOPIC_OF_TYPE = {
    "Transaction": "transactions",
    "SensorReading": "sensor-readings",
    "Label": "labels",
}


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """What ``prism replay`` was asked to do; see ``prism replay --help``."""

    path: Path
    topic: str = "auto"
    rate: float | None = None
    speedup: float | None = None
    limit: int | None = None
    label_delay: int | None = None
    strict: bool = False
    decode: bool = False
    report: Path | None = None
    progress: bool | None = None
    producer: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("rate", "speedup"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be > 0")
        if (self.limit is not None and self.limit < 0) or (self.label_delay or 0) < 0:
            raise ValueError("--limit and --label-delay must be >= 0")

    @property
    def report_path(self) -> Path:
        return self.report or self.path.with_name(self.path.name + ".errors.jsonl")


@dataclass
class ReplaySummary:
    """What happened: the numbers printed at the end and used for the exit code."""

    events: int = 0
    bytes: int = 0
    failed: int = 0
    bad_records: int = 0
    seconds: float = 0.0
    raw_path: bool = False

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered(self) -> int:
        return self.events - self.failed

    def line(self) -> str:
        return (
            f"replay: events={self.events} delivered={self.delivered} bytes={self.bytes} "
            f"errors={self.failed + self.bad_records} delivery_failures={self.failed} "
            f"bad_records={self.bad_records} seconds={self.seconds:.2f} "
            f"events_per_s={self.events_per_s:,.0f}"
        )


def resolve_topics(topic: str, topic_of: Any) -> dict[str, str]:
    """Record type -> topic: ``auto`` routes by type through ``topic_of`` (settings.topic)."""
    if topic == "auto":
        return {rtype: topic_of(name) for rtype, name in TOPIC_OF_TYPE.items()}
    return dict.fromkeys(TOPIC_OF_TYPE, topic)


class BadRecordReport:
    """Collects bad input records into a JSON Lines report, or stops at the first."""

    def __init__(self, path: Path, *, strict: bool) -> None:
        self.path, self.strict, self.count = path, strict, 0
        self._fo: IO[str] | None = None

    def __call__(self, bad: BadRecord) -> None:
        if self.strict:
            raise DataError(f"line {bad.line_no}: {bad.reason} (--strict stops at the first)")
        self.count += 1
        if self._fo is None:
            self._fo = self.path.open("w", encoding="utf-8")
        row = {"line": bad.line_no, "reason": bad.reason, "text": bad.text}
        self._fo.write(json.dumps(row) + "\n")
        if self.count <= 3:
            log.warning("event=bad_record line=%d reason=%r", bad.line_no, bad.reason)

    def close(self) -> None:
        if self._fo is not None:
            self._fo.close()


class Pacer:
    """Holds the sender back to ``rate`` events/s and/or ``speedup`` x event time."""

    def __init__(self, rate: float | None, speedup: float | None) -> None:
        self.rate, self.speedup = rate, speedup
        self.active = rate is not None or speedup is not None
        self._start = time.monotonic()
        self._first_ts: int | None = None

    def wait(self, sent: int, ts: int) -> None:
        target = sent / self.rate if self.rate else 0.0
        if self.speedup:
            if self._first_ts is None:
                self._first_ts = ts
            target = max(target, (ts - self._first_ts) / 1000.0 / self.speedup)
        delay = self._start + target - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class Sender:
    """An idempotent producer that counts what failed to be delivered."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.failed = 0
        self.config = config
        self._producer = Producer(config, logger=log)
        self._flush_s = int(config.get("message.timeout.ms", 120_000)) / 1000 + 10

    def check(self, topics: set[str], timeout_s: float = 15.0) -> None:
        """Fail fast when the broker is unreachable; warn about topics it does not have."""
        try:
            meta = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as e:
            raise StackError(
                f"cannot reach Kafka ({e.args[0]}); run `prism stack up` or set "
                "PRISM_KAFKA_BOOTSTRAP"
                + (
                    ""
                    if "sasl.username" in self.config
                    else "; if the broker requires "
                    "authentication, set PRISM_KAFKA_SECURITY_PROTOCOL and PRISM_KAFKA_SASL_*"
                )
            ) from e
        for topic in sorted(topics - set(meta.topics)):
            log.warning("event=topic_missing topic=%s hint='prism topics create'", topic)

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.failed <= 5:
                log.error("event=delivery_failed topic=%s error=%s", msg.topic(), err)

    def send(self, batch: list, pacer: Pacer | None, sent: int) -> int:
        """Produce one batch; returns its payload bytes. Blocks while the queue is full."""
        produce, callback = self._producer.produce, self.on_delivery
        size = 0
        for topic, key, value, ts in batch:
            if pacer is not None:
                pacer.wait(sent, ts)
                sent += 1
            try:
                produce(topic, value, key, on_delivery=callback)
            except (BufferError, KafkaException):
                self._produce_slowly(topic, key, value)
            size += len(value) + len(key)
        self._producer.poll(0)
        return size

    def _produce_slowly(self, topic: str, key: bytes, value: bytes) -> None:
        """Wait while the local queue is full; count a message Kafka refuses outright."""
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self.on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as e:  # e.g. an invalid topic name or a huge message
                self.on_delivery(e.args[0], _Named(topic))
                return

    def flush(self) -> None:
        left = self._producer.flush(self._flush_s)
        self.failed += left

    def close(self) -> None:
        """Flush, then shut the producer's threads down now (not at garbage collection)."""
        self.flush()
        self._producer.close()


class _Named:
    """Stands in for a message in a synchronous produce error."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def replay(
    options: ReplayOptions,
    *,
    bootstrap: str,
    topics: dict[str, str],
    codec: Encoder,
    security: dict[str, str] | None = None,
) -> ReplaySummary:
    """Send every record of ``options.path``; return the numbers, never raise on bad data.

    ``security``: the SASL properties of :func:`runtime.kafka_security.kafka_security`
    (``--producer`` pairs still win).
    """
    if not options.path.is_file():
        raise NotFoundError(f"{options.path}: no such event log")
    report = BadRecordReport(options.report_path, strict=options.strict)
    source = Source(
        options.path,
        codec=codec,
        topics=topics,
        on_bad=report,
        limit=options.limit,
        label_delay=options.label_delay,
        need_ts=options.speedup is not None,
        decode=options.decode,
    )
    sender = Sender(replay_producer_config(bootstrap, (security or {}) | options.producer))
    summary = ReplaySummary(raw_path=source.raw)
    try:
        sender.check(set(topics.values()))
        with paused_gc():
            _run(options, source, sender, summary)
    except EventLogError as e:
        raise DataError(str(e)) from e
    finally:
        sender.close()
        report.close()
        summary.failed = sender.failed
        summary.bad_records = report.count
    if report.count:
        log.warning("event=bad_records count=%d report=%s", report.count, report.path)
    return summary


def _run(options: ReplayOptions, source: Source, sender: Sender, summary: ReplaySummary) -> None:
    pacer = Pacer(options.rate, options.speedup)
    show = sys.stderr.isatty() if options.progress is None else options.progress
    total = _total(options) if show else None
    start = time.perf_counter()
    with tqdm(total=total, unit="ev", disable=not show, mininterval=0.5, smoothing=0.1) as bar:
        seen = 0
        for batch in source.batches(200 if pacer.active else 2000):
            summary.bytes += sender.send(batch, pacer if pacer.active else None, summary.events)
            summary.events += len(batch)
            bar.update(source.consumed - seen)
            seen = source.consumed
        summary.seconds = time.perf_counter() - start  # before flush: rate of sending
        sender.flush()
        summary.seconds = time.perf_counter() - start


def _total(options: ReplayOptions) -> int | None:
    try:
        total = count_records(options.path)
    except (OSError, EventLogError):
        return None
    return min(total, options.limit) if options.limit is not None else total

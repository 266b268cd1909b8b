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
    wait_broker: float = 300.0
    producer: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("rate", "speedup"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be > 0")
        if (self.limit is not None and self.limit < 0) or (self.label_delay or 0) < 0:
            raise ValueError("--limit and --label-delay must be >= 0")
        if self.wait_broker <= 0:
            raise ValueError("--wait-broker must be > 0 seconds")

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
    gave_up_after: float | None = None  # --wait-broker, when Kafka stopped acknowledging

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

    def failure(self) -> str | None:
        """The error line for a replay that did not deliver everything, else None."""
        if not self.failed:
            return None
        if self.gave_up_after is None:
            return (
                f"replay: {self.failed} of {self.events} records not delivered "
                "(see the delivery errors above)"
            )
        return (
            f"replay: {self.failed} of {self.events} records sent not delivered: Kafka "
            f"acknowledged nothing for {self.gave_up_after:g} s (--wait-broker); the rest "
            "of the log was not sent (an in-flight record may still have landed)"
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


#: How long a broker that accepts connections and closes them is given before it is named.
PROBE_S = 15.0


class Sender:
    """An idempotent producer that waits out broker outages and counts what it gave up on.

    librdkafka never expires a record (``message.timeout.ms`` 0): across a
    broker kill and restart the idempotent producer retries each one in order,
    and the broker drops a retry it already holds, so a record lands once. A
    replay still ends: when Kafka has acknowledged nothing for ``wait_s``
    seconds while records are outstanding, the rest are purged and counted as
    not delivered (an in-flight one may have landed: "not confirmed").
    """

    def __init__(self, config: dict[str, Any], *, wait_s: float = 300.0) -> None:
        self.failed = 0
        self.produced = 0
        self.acked = 0
        self.gave_up = False
        self.config = config
        self.wait_s = wait_s
        self._dropped = False  # the last transport error: a connection made, then closed
        self._producer = Producer(config, logger=_Watched(self))
        self._progress = time.monotonic()
        self._reported = 0  # delivery reports seen at the last look
        self._waiting = False

    @property
    def outstanding(self) -> int:
        return self.produced - self.acked - self.failed

    def saw(self, text: str) -> None:
        """A librdkafka log line: was the last failed connection made, then closed?"""
        if "Disconnected" in text:
            self._dropped = True
        elif "Connect to" in text or "Failed to resolve" in text:
            self._dropped = False

    def check(self, topics: set[str]) -> None:
        """Wait up to ``wait_s`` for the broker; warn about topics it does not have.

        Only an absent broker is waited for (connection refused, no address):
        one that accepts the connection and closes it (a SASL or TLS listener
        spoken to in plain text) is named after ``PROBE_S``: waiting would not help.
        """
        start = time.monotonic()
        deadline = start + self.wait_s
        told = False
        while True:
            left = deadline - time.monotonic()
            try:
                meta = self._producer.list_topics(timeout=max(0.5, min(5.0, left)))
                break
            except KafkaException as e:
                self._producer.poll(0.1)  # serves the client's log lines (see saw)
                if not told:
                    told = True
                    log.warning(
                        "event=waiting_for_kafka bootstrap=%s wait_s=%g error=%s",
                        self.config.get("bootstrap.servers"), self.wait_s, e.args[0],
                    )  # fmt: skip
                    print(
                        f"replay: waiting up to {self.wait_s:g} s for Kafka at "
                        f"{self.config.get('bootstrap.servers')} (--wait-broker)",
                        file=sys.stderr,
                        flush=True,
                    )
                now = time.monotonic()
                if now >= deadline or (self._dropped and now - start >= PROBE_S):
                    raise StackError(self._unreachable(e.args[0])) from e
        if told:
            log.info("event=kafka_reachable")
        for topic in sorted(topics - set(meta.topics)):
            log.warning("event=topic_missing topic=%s hint='prism topics create'", topic)
        self._progress = time.monotonic()

    def _unreachable(self, error: Any) -> str:
        why = (
            "it closes the connection"
            if self._dropped
            else f"after waiting {self.wait_s:g} s (--wait-broker)"
        )
        return (
            f"cannot reach Kafka: {why} ({error}); "
            "run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP"
            + (
                ""
                if "sasl.username" in self.config
                else "; if the broker requires "
                "authentication, set PRISM_KAFKA_SECURITY_PROTOCOL and PRISM_KAFKA_SASL_*"
            )
        )

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked += 1
            return
        self.failed += 1
        if self.failed <= 5:
            log.error("event=delivery_failed topic=%s error=%s", msg.topic(), err)

    def send(self, batch: list, pacer: Pacer | None, sent: int) -> int:
        """Produce one batch; returns its payload bytes. Blocks while the queue is full."""
        produce, callback = self._producer.produce, self.on_delivery
        size = 0
        for i, (topic, key, value, ts) in enumerate(batch):
            if pacer is not None:
                pacer.wait(sent, ts)
                sent += 1
            try:
                produce(topic, value, key, on_delivery=callback)
            except (BufferError, KafkaException):
                try:
                    self._produce_slowly(topic, key, value)
                except GaveUp:
                    self.produced += i  # this one was never queued
                    raise
            size += len(value) + len(key)
        self.produced += len(batch)
        self._producer.poll(0)
        self._watch()
        return size

    def _produce_slowly(self, topic: str, key: bytes, value: bytes) -> None:
        """Wait while the local queue is full; count a message Kafka refuses outright."""
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self.on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)
                self._watch()
            except KafkaException as e:  # e.g. an invalid topic name or a huge message
                self.on_delivery(e.args[0], _Named(topic))
                return

    def _watch(self) -> None:
        """Raise :class:`GaveUp` once nothing was acknowledged for ``wait_s`` with records out."""
        now, reported = time.monotonic(), self.acked + self.failed
        if reported != self._reported or self.outstanding <= 0:
            if self._waiting:
                self._waiting = False
                log.info("event=kafka_acknowledging_again outstanding=%d", self.outstanding)
            self._reported, self._progress = reported, now
            return
        quiet = now - self._progress
        if quiet > 5.0 and not self._waiting:
            self._waiting = True
            log.warning(
                "event=kafka_not_acknowledging outstanding=%d quiet_s=%.0f wait_s=%g",
                self.outstanding, quiet, self.wait_s,
            )  # fmt: skip
        if quiet > self.wait_s:
            raise GaveUp(self.outstanding)

    def flush(self) -> None:
        """Wait until every record is acknowledged, or give up after ``wait_s`` without one."""
        while self.outstanding > 0:
            self._producer.flush(1.0)
            self._watch()

    def abandon(self) -> None:
        """Purge what is still queued or in flight; each purged record is counted as failed."""
        self.gave_up = True
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 10.0
        while self.outstanding > 0 and time.monotonic() < deadline:
            self._producer.poll(0.1)
        self.failed += max(0, self.outstanding)  # reports that never came: still not delivered

    def close(self) -> None:
        """Shut the producer's threads down now (not at garbage collection)."""
        self._producer.close()


class _Watched:
    """The producer's logger: logs as before, and shows each line to its :class:`Sender`."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.log(level, msg, *args)
        self._sender.saw(msg % args if args else msg)


class GaveUp(Exception):
    """Kafka acknowledged nothing for ``--wait-broker`` seconds while records were out."""

    def __init__(self, outstanding: int) -> None:
        super().__init__(f"{outstanding} records unacknowledged")
        self.outstanding = outstanding


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
    sender = Sender(
        replay_producer_config(bootstrap, (security or {}) | options.producer),
        wait_s=options.wait_broker,
    )
    summary = ReplaySummary(raw_path=source.raw)
    try:
        sender.check(set(topics.values()))
        with paused_gc():
            _run(options, source, sender, summary)
    except GaveUp:
        sender.abandon()
    except EventLogError as e:
        raise DataError(str(e)) from e
    finally:
        _settle(sender)
        sender.close()
        report.close()
        summary.events = sender.produced  # with a batch cut short by giving up
        summary.failed = sender.failed
        summary.bad_records = report.count
        if sender.gave_up:
            summary.gave_up_after = sender.wait_s
    if report.count:
        log.warning("event=bad_records count=%d report=%s", report.count, report.path)
    return summary


def _settle(sender: Sender) -> None:
    """Deliver what was sent before stopping (also on a bad record under ``--strict``)."""
    if sender.gave_up:
        return
    try:
        sender.flush()
    except GaveUp:
        sender.abandon()


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

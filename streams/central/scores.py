"""Score publishing of the central worker: a partition's scored events, encoded as one batch.

The latency histogram measures what a user waits for: the event's Kafka
timestamp (its producer's clock, or the broker's with LogAppendTime) to its
score *delivered* -- acknowledged by the broker (``acks=all``), not merely
handed to librdkafka. One delivery callback per batch object counts the
batch's acks down; at the last one the whole batch is binned against that
moment, an upper bound for each event by the spread of one batch's acks
(usually a single produce request). Reports are served on ``producer.poll``,
which the Kafka loop calls every millisecond while acks are due.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.metrics import BatchHistogram
from schemas import Codec
from schemas.hotpath import ScoreEncoder
from streams.central.partition import ScoredEvent

__all__ = ["BatchAcked", "ScorePublisher", "produce_waiting"]


def produce_waiting(
    producer: Any, topic: str, value: bytes, key: bytes, on_delivery: Any = None
) -> None:
    """Produce; if librdkafka's local queue is full, serve deliveries until it is not."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key=key)
            else:
                producer.produce(topic, value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


class ScorePublisher:
    """Encodes scores by hand (byte-equal to the codec) and produces them keyed by event id.

    Every score names the model that made it: this worker's partition model
    (``source=central``, version 0: a shard, never a published global).
    ``latency`` (if given) gets every event's Kafka timestamp -> its score
    delivered, binned once per batch when the batch's last ack comes (one numpy
    pass; per event only the delivery callback's countdown). The record's own
    ``latency_ms`` stays Kafka timestamp -> scored: a record cannot know its ack.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        *,
        codec: Codec,
        node_id: str,
        model_name: str,
        latency: BatchHistogram | None = None,
    ) -> None:
        self.producer, self.topic = producer, topic
        self.node_id, self.model_name = node_id, model_name
        self.encoder = ScoreEncoder(codec)
        self.latency = latency

    def publish(self, scored: Sequence[ScoredEvent]) -> int:
        """Produce one batch of scores; returns how many."""
        now = time.time() * 1000
        values = self.encoder.encode(
            [
                (
                    s.event_id,
                    s.ts,
                    s.score,
                    s.label,
                    max(now - s.timestamp_ms, 0.0) if s.timestamp_ms else 0.0,
                )
                for s in scored
            ],
            scored_at=int(now),
            node_id=self.node_id,
            model_name=self.model_name,
            model_version=0,
            source="central",
        )
        topic, producer = self.topic, self.producer
        acked = self._acked(scored)
        produce = producer.produce
        for s, value in zip(scored, values, strict=True):
            key = s.event_id.encode()
            try:  # inline: a call per score was a measurable share of publishing
                if acked is None:
                    produce(topic, value, key=key)
                else:
                    produce(topic, value, key=key, on_delivery=acked)
            except BufferError:  # librdkafka's queue is full: wait for room, as before
                produce_waiting(producer, topic, value, key, acked)
        return len(scored)

    def _acked(self, scored: Sequence[ScoredEvent]) -> BatchAcked | None:
        if self.latency is None or not scored:
            return None
        ts = np.fromiter((s.timestamp_ms for s in scored), np.float64, len(scored))
        known = ts[ts > 0]  # 0: the record had no timestamp (none to measure from)
        return BatchAcked(self.latency, known, len(scored)) if known.size else None


class BatchAcked:
    """The delivery callback of one batch's scores: bins their latency at the last ack.

    A failed delivery (only a fatal producer error: ``message.timeout.ms`` is 0)
    leaves the batch unmeasured rather than measure a score nobody got.
    """

    __slots__ = ("failed", "histogram", "left", "timestamps_ms")

    def __init__(self, histogram: BatchHistogram, timestamps_ms: np.ndarray, count: int) -> None:
        self.histogram, self.timestamps_ms = histogram, timestamps_ms
        self.left, self.failed = count, False

    def __call__(self, err: Any, _msg: Any) -> None:
        self.left -= 1
        if err is not None:
            self.failed = True
        if self.left == 0 and not self.failed:
            now = time.time() * 1000
            self.histogram.observe_many(np.maximum(now - self.timestamps_ms, 0.0) / 1000)

"""The checkpoint cadence of the central worker: when to checkpoint, and in what order.

Order that makes the guarantees hold: the producer is *flushed* first (every
score and dead letter of the covered records is on the broker), then every
given partition's state and next offsets go to Redis in one transaction
(:class:`~streams.central.checkpoint.CheckpointStore`); only after that do the
engines acknowledge or commit the records, so Kafka never runs ahead of Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from streams.central.checkpoint import CheckpointStore
from streams.central.partition import PartitionLearner

__all__ = ["Checkpointer", "Undelivered"]


class Undelivered(RuntimeError):
    """Produced records are not acknowledged yet (the broker is away): no checkpoint now."""


class Checkpointer:
    """Every N records or T seconds: flush the producer, then one Redis transaction."""

    def __init__(
        self, store: CheckpointStore, producer: Any, *, every_records: int, every_s: float
    ) -> None:
        self.store, self.producer = store, producer
        self.every_records, self.every_s = every_records, every_s
        self.since = 0  # records processed since the last checkpoint
        self.last = time.monotonic()

    def processed(self, records: int) -> None:
        """Count a batch's records towards the next checkpoint."""
        self.since += records

    def owe(self) -> None:
        """State changed outside a batch (a lost learner taken back): checkpoint it soon."""
        self.since = max(self.since, 1)

    def due(self) -> bool:
        return self.since > 0 and (
            self.since >= self.every_records or time.monotonic() - self.last >= self.every_s
        )

    def save(self, learners: Sequence[PartitionLearner]) -> None:
        """Flush what was produced, then store state + offsets in one Redis transaction."""
        remaining = self.producer.flush(30)
        if remaining:
            raise Undelivered(f"{remaining} scores/dead letters not delivered; not checkpointing")
        self.store.save(learners)
        self.since = 0
        self.last = time.monotonic()

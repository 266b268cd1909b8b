"""The checkpoint cadence of the central worker: when to checkpoint, and in what order.

Order that makes the guarantees hold: the producer is *flushed* first (every
score and dead letter of the covered records is on the broker), then every
given partition's state and next offsets go to Redis in one transaction
(:class:`~streams.central.checkpoint.CheckpointStore`); only after that do the
engines acknowledge or commit the records, so Kafka never runs ahead of Redis.

The Kafka loop writes its cadence's checkpoints in the background
(:meth:`Checkpointer.start`, :meth:`Checkpointer.finished`): flushing and
encoding stay on the loop, between batches, but the Redis round trip (an
fsync per transaction with ``appendfsync always``: 6-430 ms measured on a
loaded machine, every 2 s) runs on a writer thread while the loop scores the
next records; only a write that succeeded lets the loop commit its offsets.
A checkpoint that cannot wait for its turn (a revocation, leaving) first
waits for the one in flight, then writes synchronously (:meth:`save`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from streams.central.checkpoint import CheckpointStore, Snapshot
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
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: tuple[Snapshot, Future[None], float] | None = None

    def processed(self, records: int) -> None:
        """Count a batch's records towards the next checkpoint.

        The time cadence runs from the first record no checkpoint covers, not
        from the last checkpoint: after an idle spell the first batch would
        otherwise be due at once, and its flush (waiting for that batch's
        acks) held the next records back -- measured at the start of every
        latency run (bench/latency_trace.py). No record waits longer
        uncovered than before: ``every_s`` from the first one on.
        """
        if not self.since and records:
            self.last = time.monotonic()
        self.since += records

    def owe(self) -> None:
        """State changed outside a batch (a lost learner taken back): checkpoint it soon."""
        self.since = max(self.since, 1)

    def due(self) -> bool:
        return (
            self._in_flight is None
            and self.since > 0
            and (self.since >= self.every_records or time.monotonic() - self.last >= self.every_s)
        )

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def save(self, learners: Sequence[PartitionLearner]) -> None:
        """Flush what was produced, then store state + offsets in one Redis transaction.

        Waits for a background write in flight first (its outcome is the
        caller's of :meth:`finished`; here only its order matters)."""
        self.settle()  # a failed one's changes are back: this checkpoint holds them
        self._flush()
        self.store.save(learners)
        self._restart()

    def start(self, learners: Sequence[PartitionLearner]) -> None:
        """Flush and encode now; write to Redis on the writer thread (see :meth:`finished`)."""
        if self._in_flight is not None:
            raise RuntimeError("a checkpoint is being written already")
        self._flush()
        snapshot = self.store.prepare(learners)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        future = self._writer.submit(self.store.write, snapshot)
        self._in_flight = (snapshot, future, time.perf_counter())
        self._restart()

    def finished(self, *, wait: bool = False) -> tuple[Snapshot, float] | None:
        """The background checkpoint once written (and its seconds); None while it runs.

        A failed write gives its changes back to the learners and raises its
        error (Redis away: the caller backs off), owing a checkpoint again."""
        if self._in_flight is None:
            return None
        snapshot, future, started = self._in_flight
        if not wait and not future.done():
            return None
        self._in_flight = None
        error = future.exception()
        if error is not None:
            snapshot.give_back()
            self.owe()
            raise error
        return snapshot, time.perf_counter() - started

    def settle(self) -> None:
        """Wait for a background write in flight, whatever its outcome (a failed one's
        changes are back with the learners, and a checkpoint is owed)."""
        with contextlib.suppress(Exception):
            self.finished(wait=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _flush(self) -> None:
        remaining = self.producer.flush(30)
        if remaining:
            raise Undelivered(f"{remaining} scores/dead letters not delivered; not checkpointing")

    def _restart(self) -> None:
        self.since = 0
        self.last = time.monotonic()

"""The central learner's default engine: librdkafka batches straight into the worker.

Why not Faust's stream here: measured on this project's bench, a Faust agent
(``stream.noack_take``) tops out near 3,000 events/s on a 2-core machine,
almost all of it in Faust's per-message machinery (an asyncio task and a
``wait_first`` per message), while ``Consumer.consume(n)`` hands over a
thousand records in one C call. The worker core
(:class:`~streams.central.worker.CentralWorker`) is the same for both
engines; ``--engine faust`` still runs the Faust agent (streams/central/app.py).

Group protocol, the same guarantees as the Faust engine:

- ``partition.assignment.strategy=range`` gives partition p of the events
  topic and of ``labels`` (same partition count) to the same member -- the
  co-partitioning the per-partition learners need;
- on assignment each partition starts *at its Redis checkpoint's offsets*
  (``assign`` with explicit offsets in the rebalance callback), so what the
  checkpoint covers is never re-read, and nothing after it is skipped;
- Kafka offsets are committed only from checkpoints (auto-commit off), and a
  revocation checkpoints and commits before the partitions go;
- a *lost* assignment (session timeout) is let go without a checkpoint: the
  partitions' new owner may already be writing theirs. The learners are kept,
  and a partition that comes back with its checkpoint untouched goes on from
  memory (:meth:`CentralWorker.assign`), so its uncheckpointed tail is not
  scored twice.

Batches are adaptive (:class:`~streams.central.batching.BatchPolicy`): what
is ready, then more only within the latency budget (``--max-delay-ms``).

Callbacks run inside ``consume()`` on this thread, between batches, so the
worker is never entered twice at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from runtime.redis_outage import REDIS_AWAY, RedisBackoff, RedisUnavailable
from runtime.stopping import GracefulStop
from streams.central.checkpointing import Undelivered
from streams.central.intake import RecordIn
from streams.central.worker import CentralWorker
from streams.idle import IdleClock

log = logging.getLogger(__name__)

TICK_S = 0.5
IDLE_WAIT_S = 0.05  # the longest one step blocks with nothing to do: cadences stay on time
ACK_SLICE_S = 0.001  # while scores await their acks, wait in slices that serve them
ACK_WATCH_S = 0.5  # ... for this long after a batch (longer: the broker is slow or away)


class KafkaLoop(GracefulStop):
    """Consume mini-batches with confluent-kafka and drive a :class:`CentralWorker`."""

    stop_reason = "finishing the batch, checkpointing and leaving the group"

    def __init__(
        self,
        worker: CentralWorker,
        consumer: Consumer,
        *,
        idle_exit_s: float | None = None,
    ) -> None:
        self.worker = worker
        self.consumer = consumer
        self.idle_exit_s = idle_exit_s
        self._stopping = False
        self.idle = IdleClock(idle_exit_s, look_every_s=TICK_S)
        self.redis = RedisBackoff("the checkpoint (state and offsets)")
        self._last_tick = 0.0
        self._last_batch = 0.0
        self.policy = worker.config.batching
        self._paused: set[int] = set()  # partitions whose labels are paused

    @property
    def topics(self) -> tuple[str, str]:
        return self.worker.topics.events, self.worker.topics.labels

    # -- lifecycle -------------------------------------------------------------
    def subscribe(self) -> None:
        """Join the group with this loop's rebalance callbacks (``run`` does; tests step)."""
        self.consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def run(self) -> int:
        self.subscribe()
        try:
            while not self._stopping:
                self.step()
        except RedisUnavailable:  # waited long enough: leave without a last checkpoint
            self.worker.learners.clear()
            raise
        finally:
            self._shutdown()
        return 0

    def step(self) -> int:
        """One mini-batch (possibly empty) and whatever cadence is due; returns records seen."""
        records = self._records(self._take())
        if records:
            self.worker.process(records)
            self._last_batch = time.monotonic()
            self.idle.activity()
            self._balance_labels()
        if self.worker.checkpoint_due() and self.redis.ready():
            try:
                self.worker.checkpoint_start()
            except Undelivered as e:  # keep going; the next step tries again
                log.warning("checkpoint postponed: %s", e)
        self._checkpoint_written()
        if self.worker.summary_due():
            self.worker.publish_summaries()
        self._tick()
        return len(records)

    def _take(self) -> list[Any]:
        """One adaptive batch: what is ready, then more until full or its fill deadline."""
        policy, consume = self.policy, self.consumer.consume
        messages = consume(policy.max_size, timeout=0) or self._wait_first()
        if messages:
            wait = policy.fill_wait_s(oldest_ts_ms=_timestamp(messages[0]), now_ms=_now_ms())
            if policy.wants_more(len(messages), wait):
                messages.extend(consume(policy.max_size - len(messages), timeout=wait))
        return messages

    def _wait_first(self) -> list[Any]:
        """Block up to IDLE_WAIT_S for a first record (``consume(1, ...)`` returns on it).

        Just after a batch, its scores' delivery reports come within a few ms;
        they are served on ``producer.poll``, so the wait goes in 1 ms slices
        that poll the producer too: the latency histogram counts a score
        delivered when it is, not when the next record happens to come.
        """
        producer, deadline = self.worker.producer, time.monotonic() + IDLE_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            if not len(producer) or time.monotonic() - self._last_batch > ACK_WATCH_S:
                return self.consumer.consume(1, timeout=left)
            producer.poll(min(left, ACK_SLICE_S))
            messages = self.consumer.consume(self.policy.max_size, timeout=0)
            if messages:
                return messages
        return []

    def _balance_labels(self) -> None:
        """Back-pressure: stop reading a partition's labels while too many wait for events.

        Labels are small, so a catch-up (or a preloaded topic) fetches them far
        ahead of their events; each waits in memory and in the checkpoint.
        Pausing is lossless: librdkafka resumes after the last record handed
        over. Resumed at half the bound, so it does not flap.
        """
        labels = self.worker.topics.labels
        for p, learner in self.worker.learners.items():
            waiting, bound = len(learner.waiting), learner.config.max_waiting
            if p not in self._paused and waiting > bound:
                self.consumer.pause([TopicPartition(labels, p)])
                self._paused.add(p)
                log.info("labels[%s] paused: %d labels wait for their events", p, waiting)
            elif p in self._paused and waiting <= bound // 2:
                self.consumer.resume([TopicPartition(labels, p)])
                self._paused.discard(p)
                log.info("labels[%s] resumed: %d labels wait", p, waiting)

    def _records(self, messages: Iterable[Any]) -> list[RecordIn]:
        out = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error (librdkafka retries): %s", err)
                continue
            ts_type, ts = m.timestamp()
            out.append(
                RecordIn(
                    m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts_type else 0
                )
            )
        return out

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < TICK_S:
            return
        self._last_tick = now
        self.worker.report_lag(self._cached_highwater)
        if self.idle.due(self._owns_and_caught_up):
            log.info("caught up with nothing new for %.1f s: stopping", self.idle_exit_s)
            self._stopping = True

    def _caught_up(self) -> bool:
        """At every fresh end offset; an end the broker did not tell (away?) is not caught up."""
        ends: list[int | None] = []

        def end_offset(topic: str, partition: int) -> int | None:
            if None in ends:  # one unknown end settles it: no more waiting on the broker
                return None
            ends.append(self._watermark(topic, partition, cached=False, timeout=1.0))
            return ends[-1]

        return self.worker.caught_up(end_offset) and None not in ends

    def _owns_and_caught_up(self) -> bool:
        return bool(self.worker.learners and self.consumer.assignment() and self._caught_up())

    def _shutdown(self) -> None:
        """Final checkpoint + summary, then leave the group (which revokes: a no-op by then)."""
        try:
            self._checkpoint_written(wait=True)
            self.worker.checkpointer.close()
            if self.worker.learners:
                self.worker.checkpoint_waiting()
                self._commit(None, asynchronous=True)
                self.worker.publish_summaries()
                self.worker.producer.flush(10)
        finally:
            self.consumer.close()

    # -- checkpoints and commits -------------------------------------------------
    def _checkpoint_written(self, *, wait: bool = False) -> None:
        """Once the background checkpoint is stored, commit its offsets (never before)."""
        try:
            written = self.worker.checkpoint_written(wait=wait)
        except REDIS_AWAY as e:  # keep scoring and learning; the state waits in memory
            self.redis.failed(e)
            return
        if written is not None:
            self.redis.succeeded()
            owned = self.worker.learners  # a partition revoked meanwhile committed its own
            self._commit_offsets({p: o for p, o in written.items() if p in owned}, True)

    def _commit(self, partitions: Iterable[int] | None, *, asynchronous: bool) -> None:
        """Commit the checkpoint's resume offsets (Kafka never runs ahead of Redis).

        For labels that is the oldest label waiting for its event: the waiting
        labels rest in Kafka, not in the checkpoint."""
        owned = self.worker.learners
        chosen = owned if partitions is None else {p: owned[p] for p in partitions if p in owned}
        self._commit_offsets({p: lr.resume_offsets() for p, lr in chosen.items()}, asynchronous)

    def _commit_offsets(self, resume: dict[int, dict[str, int]], asynchronous: bool) -> None:
        offsets = [
            TopicPartition(topic, p, at[topic])
            for p, at in resume.items()
            for topic in self.topics
            if topic in at
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as e:  # Redis holds the truth; a failed commit only delays lag
            log.warning("offset commit failed (the Redis checkpoint stands): %s", e)

    # -- rebalance callbacks (run inside consume()) ----------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ours = [tp for tp in partitions if tp.topic in self.topics]
        self.worker.assign({tp.partition for tp in ours})
        for tp in ours:
            learner = self.worker.learners[tp.partition]
            if tp.topic in learner.offsets:  # restored: start right after the checkpoint
                tp.offset = learner.offsets[tp.topic]
        consumer.assign(partitions)
        consumer.resume(partitions)  # a pause may outlive a rebalance in librdkafka
        self._paused -= {tp.partition for tp in ours}
        self.idle.activity()
        log.info(
            "assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{_show(tp.offset)}" for tp in partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions if tp.topic in self.topics}
        gone &= set(self.worker.learners)
        if gone:
            self.worker.checkpoint_waiting([self.worker.learners[p] for p in gone])
            self._commit(gone, asynchronous=False)
            self.worker.revoke(gone)
        self._paused -= gone
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost (not revoked): another member may own them already; do not checkpoint.

        The worker keeps the learners aside; ``_on_assign`` then starts a partition
        taken back from memory at the learner's own offsets."""
        gone = {tp.partition for tp in partitions if tp.topic in self.topics}
        self.worker.drop(gone)
        self._paused -= gone
        log.warning("partitions lost without a checkpoint (learners kept): %s", sorted(gone))
        consumer.unassign()

    # -- lag -------------------------------------------------------------------
    def _cached_highwater(self, topic: str, partition: int) -> int | None:
        return self._watermark(topic, partition, cached=True)

    def _highwater(self, topic: str, partition: int) -> int | None:
        return self._watermark(topic, partition, cached=False)

    def _watermark(
        self, topic: str, partition: int, *, cached: bool, timeout: float = 2.0
    ) -> int | None:
        try:
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout, cached=cached
            )
        except KafkaException:
            return None
        return None if high == OFFSET_INVALID else high  # -1001: not known yet


def _timestamp(message: Any) -> int:
    """A consumed message's Kafka timestamp in ms; 0 if it has none (or is an error)."""
    ts_type, ts = message.timestamp()
    return ts if ts_type and message.error() is None else 0


def _now_ms() -> float:
    return time.time() * 1000


def _show(offset: int) -> str:
    return str(offset) if offset >= 0 else "committed"

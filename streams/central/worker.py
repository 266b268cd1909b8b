"""The central worker's core: the partition learners of one process and their publishers.

No Faust here (the app module wires this into an agent, kafka_loop.py into a
confluent-kafka loop), so the whole flow runs the same under both engines and
in tests that hand it records directly. The worker composes one part per job:

- :class:`~streams.central.intake.Intake` decodes and routes a batch by
  partition and dead-letters what cannot be used;
- :class:`~streams.central.partition.PartitionLearner` (one per owned
  partition) scores, joins labels and learns;
- :class:`~streams.central.scores.ScorePublisher` produces the scores;
- :class:`~streams.central.checkpointing.Checkpointer` runs the checkpoint
  cadence (flush, then one Redis transaction);
- :class:`~streams.central.summaries.SummaryPublisher` sends each partition's
  model to the merger, the one writer of the registry.

Ordering that makes the guarantees hold:

1. scores and dead letters of a batch are handed to the producer;
2. a checkpoint first *flushes* the producer, then writes every owned
   partition's state and next offsets to Redis in one transaction;
3. only then are the batch's Kafka messages acknowledged (the app module), so
   the group's committed offsets never run ahead of a checkpoint.

A crash anywhere replays from the checkpoint: records before its offsets are
skipped by the learners, later ones are scored again (scores are at-least-once,
keyed by event id) and learned exactly once into the restored model. A lost
assignment is not a crash: the learners are kept, and a partition that comes
back with its checkpoint untouched goes on from memory (nothing scored twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from models.metrics import BinaryMetrics
from models.specs import get_spec
from runtime.redis_outage import wait_for
from schemas import Codec
from schemas.signing import Signer
from streams.central.checkpoint import CheckpointStore
from streams.central.checkpointing import Checkpointer, Undelivered
from streams.central.config import CentralConfig
from streams.central.intake import Intake, RecordIn
from streams.central.partition import PartitionLearner
from streams.central.scores import ScorePublisher
from streams.central.summaries import SummaryPublisher
from streams.dead_letters import DeadLetters
from streams.telemetry import Telemetry

__all__ = ["CentralWorker", "RecordIn", "Topics", "Undelivered"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    events: str
    labels: str
    scores: str
    model_updates: str
    dead_letter: str


class CentralWorker:
    """Owns the partition learners of one process and composes what they publish."""

    def __init__(
        self,
        config: CentralConfig,
        topics: Topics,
        *,
        producer: Any,
        store: CheckpointStore,
        codec: Codec,
        telemetry: Telemetry,
        signer: Signer | None = None,
    ) -> None:
        self.config, self.topics = config, topics
        self.spec = get_spec(config.spec_name)
        if self.spec.task != config.task:
            raise ValueError(
                f"model {self.spec.name!r} is a {self.spec.task} model, not {config.task}"
            )
        self.producer, self.store = producer, store
        self.codec, self.telemetry = codec, telemetry
        self.service = f"central-{config.task}"
        self.dead = DeadLetters(
            producer, topics.dead_letter, service=self.service, codec=codec, telemetry=telemetry
        )
        self.intake = Intake(
            codec, events_topic=topics.events, event_schema=config.event_schema, dead=self.dead
        )
        self.scores = ScorePublisher(
            producer,
            topics.scores,
            codec=codec,
            node_id=config.worker,
            model_name=self.spec.name,
            latency=telemetry.score_latency,
        )
        self.checkpointer = Checkpointer(
            store,
            producer,
            every_records=config.checkpoint_every_events,
            every_s=config.checkpoint_every_s,
        )
        self.summaries = SummaryPublisher(
            self.spec,
            producer,
            topics.model_updates,
            codec=codec,
            group=config.group_id,
            worker=config.worker,
            every_s=config.summary_every_s,
            signer=signer,
        )
        #: bound once: a label lookup per batch was a measurable share of a small batch
        self._events_counted = telemetry.events.labels(self.service, "events")
        self.learners: dict[int, PartitionLearner] = {}
        #: learners of partitions lost without a checkpoint, until they come back
        self.lost: dict[int, PartitionLearner] = {}
        self.spec.warm_up()

    # -- assignment ----------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """Take over partitions, restoring each from its checkpoint if there is one.

        A partition this worker lost (:meth:`drop`) comes back as the learner it
        still holds if nobody checkpointed the partition since: that learner is
        ahead of Redis by what it scored after its last checkpoint, and
        restoring the checkpoint instead would score that tail a second time.
        """
        self.checkpointer.settle()  # a write in flight decides what "unchanged" means
        for p in sorted(set(partitions) - set(self.learners)):
            held = self.lost.pop(p, None)
            if held is not None and wait_for(
                lambda p=p: self.store.unchanged(p),
                what=f"comparing the checkpoint of lost partition {p}",
                limit_s=self.config.redis_wait_s,
            ):
                self.learners[p] = held
                self.checkpointer.owe()  # its tail is in no checkpoint yet
                log.info(
                    "partition taken back worker=%s partition=%s from=memory offsets=%s",
                    self.config.worker,
                    p,
                    held.offsets,
                )
                continue
            learner = PartitionLearner(
                self.spec,
                p,
                events_topic=self.topics.events,
                labels_topic=self.topics.labels,
                config=self.config.learner,
            )
            restored = wait_for(
                lambda learner=learner: self.store.load(learner),
                what=f"restoring the checkpoint of partition {p}",
                limit_s=self.config.redis_wait_s,
            )
            self.learners[p] = learner
            log.info(
                "partition assigned worker=%s partition=%s restored=%s offsets=%s",
                self.config.worker,
                p,
                restored,
                learner.offsets,
            )

    def revoke(self, partitions: Iterable[int]) -> None:
        """Checkpoint, then let go of partitions: their next owner resumes from here."""
        gone = [p for p in partitions if p in self.learners]
        if gone:
            self.checkpoint_waiting([self.learners[p] for p in gone])
            for p in gone:
                del self.learners[p]
            log.info("partitions revoked worker=%s partitions=%s", self.config.worker, gone)

    def drop(self, partitions: Iterable[int]) -> None:
        """Let go of lost partitions without a checkpoint (another worker may own them).

        The learners are kept aside, not forgotten: if a partition comes back
        with its checkpoint untouched, :meth:`assign` goes on from the learner.
        """
        for p in partitions:
            learner = self.learners.pop(p, None)
            if learner is not None:
                self.lost[p] = learner

    # -- the hot path --------------------------------------------------------
    def process(self, records: Sequence[RecordIn]) -> int:
        """Decode, score, learn one mini-batch; returns the number of events scored.

        Never raises on data: an unexpected failure dead-letters the batch's
        records (Faust would otherwise restart the agent and stop committing).
        """
        try:
            return self._process(records)
        except Exception as e:
            log.exception("batch failed worker=%s records=%d", self.config.worker, len(records))
            self.intake.dead_records(records, e)
            return 0

    def _process(self, records: Sequence[RecordIn]) -> int:
        """Every partition's scores go to the producer first, then each partition learns.

        Per partition the order is the per-event one (score the events with the
        model as it was, learn them, then the labels); partitions share nothing,
        so scoring all before learning any changes no score and no model, and a
        score no longer waits for other partitions' learning (score latency).
        """
        events, labels = self.intake.route(records, self.learners)
        scored, failed = 0, set()
        for p in sorted(events):
            try:
                scored += self.scores.publish(self.learners[p].score_events(events[p]))
            except Exception as e:  # the per-event boundary's last line: never die on a batch
                self._failed(p, records, e)
                failed.add(p)
        self.producer.poll(0)
        for p in sorted(set(events) | set(labels)):
            learner = self.learners[p]
            if p not in failed:
                try:
                    learner.learn_scored(labels.get(p, ()))
                except Exception as e:
                    self._failed(p, records, e)
            self.intake.dead_letter(p, learner.take_rejected())
        self.checkpointer.processed(len(records))
        self._events_counted.inc(scored)
        return scored

    def _failed(self, p: int, records: Sequence[RecordIn], e: Exception) -> None:
        log.exception("learner failed worker=%s partition=%s", self.config.worker, p)
        self.intake.dead_records([r for r in records if r.partition == p], e)

    # -- cadences ------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        return self.checkpointer.due()

    def checkpoint(self, learners: Sequence[PartitionLearner] | None = None) -> None:
        """Flush what was produced, then store state + offsets in one Redis transaction."""
        learners = list(self.learners.values()) if learners is None else list(learners)
        started = time.perf_counter()
        self.checkpointer.save(learners)  # raises while Redis is away: not a checkpoint
        self.telemetry.checkpoint_seconds.labels(self.service).observe(
            time.perf_counter() - started
        )
        self.telemetry.checkpoints.labels(self.service).inc()
        self._update_gauges()

    def checkpoint_start(self) -> None:
        """Flush and encode every owned partition's checkpoint; Redis gets it in the background.

        :meth:`checkpoint_written` tells when it is stored (raises
        :class:`Undelivered` if the producer cannot flush: nothing started)."""
        self.checkpointer.start(list(self.learners.values()))

    def checkpoint_written(self, *, wait: bool = False) -> dict[int, dict[str, int]] | None:
        """The resume offsets of the background checkpoint once stored (to commit), else None.

        Raises the write's error (Redis away); the learners got their changes back."""
        done = self.checkpointer.finished(wait=wait)
        if done is None:
            return None
        snapshot, seconds = done
        self.telemetry.checkpoint_seconds.labels(self.service).observe(seconds)
        self.telemetry.checkpoints.labels(self.service).inc()
        self._update_gauges()
        return snapshot.offsets

    def checkpoint_waiting(self, learners: Sequence[PartitionLearner] | None = None) -> None:
        """A checkpoint that cannot be postponed (partitions handed over, the worker leaving):
        waits up to ``redis_wait_s`` for Redis, then raises :class:`RedisUnavailable`."""
        owned = sorted(lr.partition for lr in learners) if learners else sorted(self.learners)
        wait_for(
            lambda: self.checkpoint(learners),
            what=f"checkpointing partitions {owned} before letting them go",
            limit_s=self.config.redis_wait_s,
        )

    def summary_due(self) -> bool:
        return self.summaries.due()

    def publish_summaries(self) -> int:
        """Each owned partition's WeightSummary (tier=central) to ``model-updates``."""
        sent = self.summaries.publish(self.learners.values())
        if sent:
            self.telemetry.summaries.labels(self.service).inc(sent)
        return sent

    # -- metrics -------------------------------------------------------------
    def window(self) -> BinaryMetrics:
        """The sliding-window prequential metrics of every owned partition, merged."""
        total = BinaryMetrics()
        for lr in self.learners.values():
            total = total + lr.metrics.total()
        return total

    def _update_gauges(self) -> None:
        window = self.window().to_dict()
        for key in ("roc_auc", "f1", "precision", "recall"):
            if key in window:
                self.telemetry.metric.labels(self.service, self.spec.name, key).set(window[key])
        self.telemetry.pending.labels(self.service).set(
            sum(len(lr.pending) for lr in self.learners.values())
        )

    # -- lag -----------------------------------------------------------------
    def _lags(self, highwater: Any) -> list[tuple[str, int, int | None]]:
        out = []
        for p, lr in self.learners.items():
            for topic in (self.topics.events, self.topics.labels):
                hw = highwater(topic, p)
                out.append((topic, p, None if hw is None else hw - lr.offsets.get(topic, 0)))
        return out

    def report_lag(self, highwater: Any) -> None:
        """``highwater(topic, partition)`` -> end offset or None (not fetched yet)."""
        for topic, p, lag in self._lags(highwater):
            if lag is not None:
                self.telemetry.lag.labels(self.service, topic, str(p)).set(max(lag, 0))

    def caught_up(self, highwater: Any) -> bool:
        return all(lag is None or lag <= 0 for _, _, lag in self._lags(highwater))

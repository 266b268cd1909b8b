"""The central worker's core: decode a batch, drive the partition learners, produce.

No Faust here (the app module wires this into an agent), so the whole flow --
decode with an error boundary, score, join labels, checkpoint, publish -- runs
the same in a Faust worker and in tests that hand it records directly.

Ordering that makes the guarantees hold:

1. scores and dead letters of a batch are handed to the producer;
2. a checkpoint first *flushes* the producer, then writes every owned
   partition's state and next offsets to Redis in one transaction;
3. only then are the batch's Kafka messages acknowledged (the app module), so
   the group's committed offsets never run ahead of a checkpoint.

A crash anywhere replays from the checkpoint: records before its offsets are
skipped by the learners, later ones are scored again (scores are at-least-once,
keyed by event id) and learned exactly once into the restored model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from models.merge import Contributor, merge
from models.metrics import BinaryMetrics
from models.serialization import global_model_record, weight_summary_record
from models.specs import get_spec
from runtime.redis_outage import REDIS_AWAY, RedisBackoff, wait_for
from schemas import Codec, SchemaError
from schemas.hotpath import LabelDecoder, ScoreEncoder
from schemas.signing import Signer
from streams.central.checkpoint import CheckpointStore
from streams.central.config import CentralConfig
from streams.central.partition import EventIn, LabelIn, PartitionLearner, Undecodable
from streams.dead_letters import DeadLetters
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)


class Undelivered(RuntimeError):
    """Produced records are not acknowledged yet (the broker is away): no checkpoint now."""


def produce_waiting(producer: Any, topic: str, value: bytes, key: bytes) -> None:
    """Produce; if librdkafka's local queue is full, serve deliveries until it is not."""
    while True:
        try:
            producer.produce(topic, value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


@dataclass(slots=True)  # not frozen: one per consumed record, frozen costs 4x
class RecordIn:
    """A consumed Kafka record, whatever the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass(frozen=True)
class Topics:
    events: str
    labels: str
    scores: str
    model_updates: str
    dead_letter: str


class CentralWorker:
    """Owns the partition learners of one process and everything they publish."""

    def __init__(
        self,
        config: CentralConfig,
        topics: Topics,
        *,
        producer: Any,
        store: CheckpointStore,
        registry: Any,
        codec: Codec,
        telemetry: Telemetry,
        signer: Signer | None = None,
    ) -> None:
        self.config, self.topics = config, topics
        self.signer = signer  # signs the shard summaries for the merger
        self.spec = get_spec(config.spec_name)
        if self.spec.task != config.task:
            raise ValueError(
                f"model {self.spec.name!r} is a {self.spec.task} model, not {config.task}"
            )
        self.producer, self.store, self.registry = producer, store, registry
        self.codec, self.telemetry = codec, telemetry
        # the hot path: Avro by hand for Labels and Scores, byte-equal to the codec
        self.label_decoder = LabelDecoder(codec)
        self.score_encoder = ScoreEncoder(codec)
        self.service = f"central-{config.task}"
        self.dead = DeadLetters(
            producer, topics.dead_letter, service=self.service, codec=codec, telemetry=telemetry
        )
        self.learners: dict[int, PartitionLearner] = {}
        self.spec.warm_up()
        self._since_checkpoint = 0
        self._last_checkpoint = self._last_summary = self._last_rate = time.monotonic()
        self._events_since_rate = 0
        self._sequence = 0
        self._version = 0
        self.registry_outage = RedisBackoff("the registry record")

    # -- assignment ----------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """Take over partitions, restoring each from its checkpoint if there is one."""
        for p in sorted(set(partitions) - set(self.learners)):
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
        """Forget partitions without a checkpoint (lost: another worker may own them)."""
        for p in partitions:
            self.learners.pop(p, None)

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
            self._dead_records(records, e)
            return 0

    def _process(self, records: Sequence[RecordIn]) -> int:
        events: dict[int, list[EventIn]] = {}
        labels: dict[int, list[LabelIn]] = {}
        owned, events_topic = self.learners, self.topics.events
        event_schema, decode, decode_label = (
            self.config.event_schema,
            self.codec.decode,
            self.label_decoder.decode,
        )
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
                    if is_event:
                        record = decode(rec.value, expected=event_schema)
                    else:
                        record = decode_label(rec.value)
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
        scored = 0
        for p in sorted(set(events) | set(labels)):
            learner = self.learners[p]
            try:
                if p in events:
                    scored += self._emit_scores(learner.take_events(events[p]))
                if p in labels:
                    learner.take_labels(labels[p])
            except Exception as e:  # the per-event boundary's last line: never die on a batch
                log.exception("learner failed worker=%s partition=%s", self.config.worker, p)
                self._dead_records([r for r in records if r.partition == p], e)
            for rej in learner.take_rejected():
                value = rej.value
                if value is None and rej.record is not None:
                    value = self.codec.encode("Label", dict(rej.record))
                self.dead.send(
                    topic=rej.topic,
                    partition=p,
                    offset=rej.offset,
                    key=rej.key,
                    value=value,
                    reason_code=rej.reason_code,
                    reason=rej.reason,
                )
        self.producer.poll(0)
        self._since_checkpoint += len(records)
        self._events_since_rate += scored
        self.telemetry.events.labels(self.service, "events").inc(scored)
        return scored

    def _emit_scores(self, scored: list) -> int:
        now = time.time() * 1000
        values = self.score_encoder.encode(
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
            node_id=self.config.worker,
            model_name=self.spec.name,
            model_version=0,
            source="central",
        )
        topic, producer = self.topics.scores, self.producer
        for s, value in zip(scored, values, strict=True):
            produce_waiting(producer, topic, value, s.event_id.encode())
        return len(scored)

    def _dead_records(self, records: Sequence[RecordIn], e: Exception) -> None:
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

    # -- cadences ------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        elapsed = time.monotonic() - self._last_checkpoint
        return self._since_checkpoint > 0 and (
            self._since_checkpoint >= self.config.checkpoint_every_events
            or elapsed >= self.config.checkpoint_every_s
        )

    def checkpoint(self, learners: Sequence[PartitionLearner] | None = None) -> None:
        """Flush what was produced, then store state + offsets in one Redis transaction."""
        learners = list(self.learners.values()) if learners is None else list(learners)
        remaining = self.producer.flush(30)
        if remaining:
            raise Undelivered(f"{remaining} scores/dead letters not delivered; not checkpointing")
        self.store.save(learners)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.telemetry.checkpoints.labels(self.service).inc()
        self._update_gauges()

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
        return time.monotonic() - self._last_summary >= self.config.summary_every_s

    def publish_summaries(self) -> int:
        """Each owned partition's WeightSummary (tier=central) + this worker's model in Redis."""
        self._last_summary = time.monotonic()
        live = [lr for lr in self.learners.values() if lr.counters["learned"] > 0]
        if not live:
            return 0
        now_ms = int(time.time() * 1000)
        self._sequence = max(self._sequence + 1, now_ms)  # increasing across restarts
        summaries = []
        for lr in live:
            s = self.spec.summarize(lr.model).with_provenance(
                node_id=f"{self.config.group_id}/p{lr.partition}",
                sequence=self._sequence,
                base_version=0,
            )
            summaries.append(s)
            record = weight_summary_record(
                s,
                tier="central",
                created_at_ms=now_ms,
                metrics=lr.metrics.total().to_dict(),
                meta={
                    "worker": self.config.worker,
                    "partition": str(lr.partition),
                    "stats": "cumulative",  # the whole partition model: the merger diffs it
                },
            )
            if self.signer is not None:
                record = self.signer.sign(record)
            self.producer.produce(
                self.topics.model_updates,
                self.codec.encode("WeightSummary", record),
                key=s.node_id.encode(),
            )
        self.telemetry.summaries.labels(self.service).inc(len(summaries))
        if self.registry_outage.ready():  # the summaries are on the topic; the registry
            try:  # record is this worker's view of them, refreshed at the next interval
                self._publish_registry(summaries, now_ms)
            except REDIS_AWAY as e:
                self.registry_outage.failed(e)
            else:
                self.registry_outage.succeeded()
        self.producer.poll(0)
        return len(summaries)

    def _publish_registry(self, summaries: list, now_ms: int) -> None:
        strategy = "fedavg" if self.spec.algebra.learned_vector(summaries[0]).size else "exact"
        result = merge(summaries, strategy)
        if self._version == 0:  # a restart continues the registry's numbering
            self._version = self.registry.current_version(self.registry_name)
        version = self._version + 1
        record = global_model_record(
            result.summary,
            version=version,
            parent_version=version - 1,
            strategy=f"central-shard:{strategy}",
            created_at_ms=now_ms,
            contributors=[Contributor(s.node_id, s.sequence, s.n_samples) for s in summaries],
            metrics=self.metrics(),
        )
        self.registry.publish_model(record, name=self.registry_name)
        self._version = version

    @property
    def registry_name(self) -> str:
        """Where ``prism models show`` finds this worker's model."""
        return f"{self.spec.name}@{self.config.worker}"

    # -- metrics -------------------------------------------------------------
    def window(self) -> BinaryMetrics:
        total = BinaryMetrics()
        for lr in self.learners.values():
            total = total + lr.metrics.total()
        return total

    def metrics(self) -> dict[str, float]:
        """Sliding-window prequential metrics + counters, for Redis and Prometheus."""
        out = {f"window_{k}": v for k, v in self.window().to_dict().items()}
        counters: dict[str, float] = {}
        for lr in self.learners.values():
            for k, v in lr.counters.items():
                counters[k] = counters.get(k, 0.0) + float(v)
        out |= {k.replace("-", "_"): v for k, v in counters.items()}
        out["pending"] = float(sum(len(lr.pending) for lr in self.learners.values()))
        out["events_per_s"] = self._rate()
        return out

    def _rate(self) -> float:
        now = time.monotonic()
        elapsed = max(now - self._last_rate, 1e-9)
        rate = self._events_since_rate / elapsed
        if elapsed >= 1.0:
            self._last_rate, self._events_since_rate = now, 0
            self.telemetry.events_per_s.labels(self.service).set(rate)
        return rate

    def _update_gauges(self) -> None:
        window = self.window().to_dict()
        for key in ("roc_auc", "f1", "precision", "recall"):
            if key in window:
                self.telemetry.metric.labels(self.service, key).set(window[key])
        self.telemetry.pending.labels(self.service).set(
            sum(len(lr.pending) for lr in self.learners.values())
        )
        self._rate()

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

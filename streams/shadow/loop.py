"""`prism shadow run`'s loop: scores in, pairs counted, totals and offsets to Redis together.

Why a job of its own: it reads the whole ``scores`` topic (every edge score),
which neither the central hot path nor the merger should carry. Scores are
keyed by event id, so an edge's score and the central worker's of the same
event share a partition: each partition has its own
:class:`streams.shadow.join.ShadowJoin`, and the group can be scaled out.

Restarts. Each partition's totals and the offset they cover are written to
one Redis hash field in one transaction (every ``flush_every_s`` and on
revoke/exit); an assigned partition resumes from that offset with those
totals, so nothing is counted twice. What a restart loses: the records that
were waiting in the window (their partners then wait alone and expire as
unpaired), so a pair split across a restart is not counted. Kafka offsets
are not committed (Redis holds them); the group only shares partitions out.
Undecodable records go to ``dead-letter``, never stop the loop.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from runtime.redis_outage import REDIS_AWAY, RedisBackoff
from runtime.stopping import GracefulStop
from schemas import Codec, SchemaError
from streams.dead_letters import DeadLetters
from streams.idle import IdleClock
from streams.shadow.join import ShadowJoin, ShadowStats
from streams.shadow.telemetry import ShadowTelemetry

log = logging.getLogger(__name__)

SERVICE = "shadow"


class ShadowLoop(GracefulStop):
    stop_reason = "flushing the shadow totals and leaving the group"

    def __init__(  # noqa: PLR0913 - the composition root's parts
        self,
        *,
        consumer: Any,
        producer: Any,
        redis: Any,
        key: str,
        codec: Codec,
        topics: dict[str, str],
        telemetry: ShadowTelemetry,
        new_join: Any,
        idle_exit_s: float | None = None,
        flush_every_s: float = 2.0,
        batch_size: int = 500,
    ) -> None:
        self.consumer, self.producer, self.redis, self.key = consumer, producer, redis, key
        self.codec, self.topics, self.telemetry = codec, topics, telemetry
        self.new_join = new_join  # () -> ShadowJoin: one per partition
        self.dead = DeadLetters(
            producer, topics["dead-letter"], service=SERVICE, codec=codec, telemetry=telemetry.base
        )
        self.flush_every_s, self.batch_size = flush_every_s, batch_size
        self.joins: dict[int, ShadowJoin] = {}
        self.base: dict[int, tuple[dict[str, ShadowStats], dict[str, int]]] = {}  # restored
        self.position: dict[int, int] = {}
        self.idle = IdleClock(idle_exit_s)
        self.backoff = RedisBackoff("the shadow totals")
        self._stopping = False
        self._last_flush = time.monotonic()

    def run(self) -> int:
        self.consumer.subscribe(
            [self.topics["scores"]], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not self._stopping:
                self.step()
        finally:
            try:
                self.flush()
            finally:
                self.consumer.close()
                self.producer.flush(10)
        return 0

    # -- partitions ------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        stored = self.redis.hgetall(self.key)
        for tp in partitions:
            state = stored.get(f"p{tp.partition}".encode())
            stats: dict[str, ShadowStats] = {}
            counts: dict[str, int] = {}
            if state is not None:
                saved = json.loads(state)
                tp.offset = int(saved["offset"])
                stats = {m: ShadowStats.from_dict(d) for m, d in saved["stats"].items()}
                counts = dict(saved["counts"])
                self.position[tp.partition] = tp.offset
            self.base[tp.partition] = (stats, counts)
            self.joins[tp.partition] = self.new_join()
        consumer.assign(partitions)
        self.idle.activity()
        self._export()

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.flush()
        for tp in partitions:
            self.joins.pop(tp.partition, None)
            self.base.pop(tp.partition, None)
            self.position.pop(tp.partition, None)

    # -- records -----------------------------------------------------------------------
    def step(self) -> int:
        n = 0
        now_ms = int(time.time() * 1000)
        for m in self.consumer.consume(self.batch_size, timeout=0.2):
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error (librdkafka retries): %s", err)
                continue
            n += 1
            self._take(m, now_ms)
            self.position[m.partition()] = m.offset() + 1
        for join in self.joins.values():
            join.expire(now_ms)
        if n:
            self.idle.activity()
            self.telemetry.base.events.labels(SERVICE, "scores").inc(n)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()
        self.producer.poll(0)
        if self.idle.due(self._caught_up):
            log.info("idle: caught up on scores, stopping")
            self._stopping = True
        return n

    def _take(self, m: Any, now_ms: int) -> None:
        join = self.joins.get(m.partition())
        if join is None:  # revoked while the batch was in flight
            return
        value = m.value()
        if value is None:
            self._dead(m, "empty", "a record without a value (tombstone)")
            return
        try:
            r = self.codec.decode(value, expected="Score")
            pair = join.offer(
                r["event_id"], r["source"], r["model_name"], float(r["score"]), now_ms=now_ms
            )
        except SchemaError as e:
            self._dead(m, e.reason_code, str(e))
            return
        except ValueError as e:  # decoded, but a score no sum can take (NaN, inf)
            self._dead(m, "invalid-score", str(e))
            return
        if pair is not None:
            self.telemetry.paired(pair)

    def _dead(self, m: Any, reason_code: str, reason: str) -> None:
        self.dead.send_message(m, reason_code, reason)

    def _caught_up(self) -> bool:
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            if self.position.get(tp.partition, 0) < high:
                return False
        return True

    # -- totals ------------------------------------------------------------------------
    def totals(self, partition: int) -> tuple[dict[str, ShadowStats], dict[str, int]]:
        stats, counts = self.base.get(partition, ({}, {}))
        join = self.joins.get(partition)
        if join is None:
            return stats, counts
        out = dict(stats)
        for model, s in join.stats.items():
            out[model] = out.get(model, ShadowStats()) + s
        merged = dict(counts)
        for k, v in join.counts.items():
            merged[k] = merged.get(k, 0) + v
        return out, merged

    def flush(self) -> None:
        """Each partition's totals with the offset they cover, in one transaction."""
        self._last_flush = time.monotonic()
        if not self.position or not self.backoff.ready():
            return
        fields = {}
        for p, offset in self.position.items():
            stats, counts = self.totals(p)
            state = {
                "offset": offset,
                "stats": {m: s.as_dict() for m, s in stats.items()},
                "counts": counts,
                "at": int(time.time() * 1000),
            }
            fields[f"p{p}"] = json.dumps(state)
        try:
            with self.redis.pipeline(transaction=True) as tx:
                tx.hset(self.key, mapping=fields)
                tx.execute()
        except REDIS_AWAY as e:  # kept in memory; the next flush writes it all
            self.backoff.failed(e)
            return
        self.backoff.succeeded()
        self._export()

    def _export(self) -> None:
        models: dict[str, ShadowStats] = {}
        for p in self.joins:
            for m, s in self.totals(p)[0].items():
                models[m] = models.get(m, ShadowStats()) + s
        self.telemetry.export(models)

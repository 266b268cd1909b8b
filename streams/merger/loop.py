"""The merge job's consumer loop: model-updates in batches -> rounds -> global-model + Redis.

Like the central learner's default engine (streams/central/kafka_loop.py, where
the measurement is), it consumes with confluent-kafka in batches instead of a
Faust agent: the merger's goal is thousands of summaries a second, and Faust's
per-message stream machinery tops out near 3,000 records/s on the reference
machine before any work is done.

Publishing a round: once the producer is flushed (dead letters and earlier
records delivered), one Redis transaction stores the registry entries, the
node records, the merger's state and the round's GlobalModel and lifecycle
records (:mod:`streams.merger.outbox`); only then do those go to the compacted
``global-model`` topic (key = model name) and ``lifecycle``. A version number
thus names one content: what a kill -9 loses was never published, and a
restart first produces what the outbox still holds (identical bytes, at worst
a second copy). While Redis is away, closed rounds wait in memory, unpublished.
One merger per group: a second one would split the partitions and publish
rival versions.

Event time (``event_time=True``, ``prism merger run --event-time``): an update's
time is the event time it carries (``metrics["event_ts"]``, the edge agents'
last event) instead of its arrival: its round opens then, and a round it fills
closes then. Rounds time out on an event clock: the newest event time seen,
running on at ``speedup`` times the wall clock until the next update moves it
on. A replay then merges where the events say, not where the processes'
scheduling and the broker's latency put the summaries (``prism compare
--stack``); live, with ``speedup`` 1, it is the wall clock started at the
updates' own time. Default: arrival time and the wall clock.

Holdout and quality gate (``--holdout-topic``, ``--quality-gate``): the
holdout is read to its end before the first batch (:mod:`streams.merger.holdout`)
and between batches after that; the merger's judge scores each global on it.
A held-back version goes to the registry history only (unsigned: no reader
that checks keys can be handed it) and as a ``LifecycleEvent`` to
``lifecycle``, produced and flushed with the round's globals.

Operator controls (``prism models rollback | quarantine``): between batches,
at most once a second and only when Redis holds everything published, the
loop reads each global model's rollback request and quarantine set from the
registry; :func:`streams.merger.lifecycle.decide` says what to republish.
A rollback goes out like a round's version (whole, signed, next number,
``restored_from`` and ``reason`` set) with a ``rolled-back`` event on
``lifecycle``; the request is deleted in the same Redis transaction.

Staged rollout (``--canary``): the core marks each new version for the
canary share and pauses that model's rounds; summaries' canary reports feed
:class:`streams.merger.canary.CanaryTracker`, whose verdict the loop carries
out between batches: the same version republished for everyone, or the
previous one restored (docs/merger.md).
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from models.errors import ModelError, UnknownLayoutError
from models.packing import LayoutBook, layout_of
from models.serialization import summary_from_weight_record
from runtime.redis_outage import REDIS_AWAY, RedisBackoff, RedisUnavailable, wait_for
from runtime.stopping import GracefulStop
from schemas import Codec, SchemaError
from schemas.identity import KeySigner, KeyVerifier
from schemas.signing import SignatureError, Verifier
from streams.dead_letters import DeadLetters
from streams.idle import IdleClock
from streams.merger.canary import CanaryTracker
from streams.merger.holdout import HoldoutFeed
from streams.merger.outbox import Outgoing
from streams.merger.rounds import Closed, Merger, Update, describe
from streams.merger.secure_loop import SecureFeed
from streams.merger.steering import Steering
from streams.merger.store import MergerStore
from streams.merger.wire import WHOLE, registry_record, topic_records
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)

SERVICE = "merger"


class MergerLoop(Steering, GracefulStop):
    stop_reason = "committing what was merged and leaving the group"

    def __init__(
        self,
        merger: Merger,
        store: MergerStore,
        *,
        consumer: Consumer,
        producer: Any,
        codec: Codec,
        topics: dict[str, str],
        telemetry: Telemetry,
        batch_size: int = 2000,
        commit_every_s: float = 2.0,
        idle_exit_s: float | None = None,
        redis_wait_s: float = 120.0,
        verifier: Verifier | KeyVerifier | None = None,
        signer: KeySigner | None = None,
        event_time: bool = False,
        speedup: float = 1.0,
        holdout: HoldoutFeed | None = None,
        source_verifier: KeyVerifier | None = None,
        controls_every_s: float = 1.0,
        canary: CanaryTracker | None = None,
        secure: SecureFeed | None = None,
    ) -> None:
        if not speedup > 0:
            raise ValueError(f"the event clock's speedup must be > 0, got {speedup}")
        self.merger, self.store = merger, store
        self.event_time, self.speedup = event_time, speedup
        self._anchor: tuple[float, float] | None = None  # (event ms, wall ms) of the newest time
        self._due_before: list[Closed] = []  # rounds timed out before an update's event time
        self.holdout = holdout
        if holdout is not None:  # its bad records are this loop's dead letters
            holdout.on_bad = self._dead
        self.verifier = verifier  # signed summaries: refused before they touch a ledger
        self.signer = signer  # the merger's key: every GlobalModel it writes carries a signature
        # a rollback's source must verify as a merger's: a registry writer cannot get a model
        # of its own making signed by asking for a rollback to it
        self.source_verifier = source_verifier
        self.controls_every_s, self._controls_due = controls_every_s, 0.0
        self._handled: set[str] = set()  # models whose rollback request is done or refused
        self._told: set[tuple[str, int, str]] = set()  # refusals announced (said once)
        self.canary = canary  # staged rollout: the canaries' reports and the verdicts
        self.secure = secure  # --secure-agg: SecAgg+ rounds over their own topics
        self.consumer, self.producer, self.codec = consumer, producer, codec
        self.topics, self.telemetry = topics, telemetry
        self.dead = DeadLetters(
            producer, topics["dead-letter"], service=SERVICE, codec=codec, telemetry=telemetry
        )
        self.batch_size = batch_size
        self.commit_every_s = commit_every_s
        self.idle_exit_s = idle_exit_s
        self.stored: dict[int, int] = {}
        self.position: dict[int, int] = {}  # partition -> next offset after what was read
        self.touched: set[str] = set()
        self._stopping = False
        self._assigned = False
        self._unpublished: list[tuple[str, dict]] = []  # registry records, not yet in Redis
        self._outgoing: list[Outgoing] = []  # topic records: to Redis's outbox, then produced
        # layouts this merger holds (its globals', whole summaries'): nodes send theirs by id
        self.book = LayoutBook()
        self._announced: dict[str, int] = {}  # model -> layout id published under <model>@whole
        self._partitions: int | None = None  # of the global-model topic
        self._last_commit = time.monotonic()
        self.idle = IdleClock(idle_exit_s)
        self.redis = RedisBackoff("the merger's models and state")
        self.redis_wait_s = redis_wait_s

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> int:
        self.stored = wait_for(
            lambda: self.store.load(self.merger, _now_ms()),
            what="loading the merger's state",
            limit_s=self.redis_wait_s,
        )
        for tier in self.merger.tiers.values():  # nodes adopted these: they send by id
            if tier.current is not None:
                self.book.learn(layout_of(tier.current))
        self._republish()
        self._resume_canaries()
        if self.holdout is not None:  # the whole sample before any round is judged
            self.holdout.start()
        if self.secure is not None:
            self.secure.start()
        self.consumer.subscribe(
            [self.topics["model-updates"]], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        redis_gone = False
        try:
            while not self._stopping:
                self.step()
        except RedisUnavailable:  # waited long enough: leave without a last write
            redis_gone = True
            raise
        finally:
            try:
                if not redis_gone:
                    self._commit([], wait=True)
            finally:
                self.consumer.close()
                if self.secure is not None:
                    self.secure.close()
                if self.holdout is not None:
                    self.holdout.close()
        return 0

    def now_ms(self) -> int:
        """The rounds' clock: the wall clock, or the event clock (see the module doc)."""
        wall = _now_ms()
        if not self.event_time or self._anchor is None:
            return wall
        event, at = self._anchor
        return int(event + (wall - at) * self.speedup)

    def _saw(self, event_ms: int) -> None:
        """An update's event time moves the event clock on (never back)."""
        if self._anchor is None or event_ms > self.now_ms():
            self._anchor = (float(event_ms), float(_now_ms()))

    def _wait_s(self) -> float:
        """How long a consume may wait: the next round deadline, at most 0.2 s."""
        timeout_ms = self.merger.config.round_timeout_s * 1000
        opened = [
            t.round.opened_ms
            for t in self.merger.tiers.values()
            if len(t.round) and t.name not in self.merger.paused
        ]
        if not opened:
            return 0.2
        ahead_ms = min(opened) + timeout_ms - self.now_ms()
        if self.event_time:
            ahead_ms /= self.speedup
        return min(max(ahead_ms / 1000, 0.001), 0.2)

    def step(self) -> int:
        if self.holdout is not None:
            self.holdout.poll()
        n, closed = 0, self._operator_controls() + self._canary_verdicts()
        messages = self.consumer.consume(self.batch_size, timeout=self._wait_s())
        now = self.now_ms()
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error (librdkafka retries): %s", err)
                continue
            n += 1
            self.position[m.partition()] = m.offset() + 1
            taken = self._take(m, now)
            closed += self._due_before
            self._due_before = []
            if taken is not None:  # a round may fill up: close it before the next update
                closed += self.merger.close_due(taken)
        if n:
            self.idle.activity()
            self.telemetry.events.labels(SERVICE, "updates").inc(n)
        closed += self.merger.close_due(self.now_ms())
        if self.secure is not None:
            closed += self.secure.step(self.merger, self.now_ms())
        due = closed or self._handled or self._outgoing
        if due or time.monotonic() - self._last_commit >= self.commit_every_s:
            self._commit(closed)
        if self.secure is not None and not self._outgoing:
            # the versions are in Redis's outbox (a restart publishes them): nodes may count them
            self.secure.announce_done()
        self.producer.poll(0)
        self._maybe_idle_exit()
        return n

    # -- intake -------------------------------------------------------------------------
    def _take(self, m: Any, now_ms: int) -> int | None:
        """Decode and offer one record; its time if it joined a round, else None."""
        value = m.value()
        if value is None:  # "empty" is no codec reason: SchemaError("empty") raised ValueError
            self._dead(m, "empty", "a record without a value (tombstone)")
            return None
        try:
            record = self.codec.decode(value, expected="WeightSummary")
            signature = self.verifier.check(record) if self.verifier is not None else None
            event_ts = record["metrics"].get("event_ts") if self.event_time else None
            if event_ts is not None:  # event time: the update happened at its last event
                now_ms = int(event_ts)
                self._saw(now_ms)
                self._due_before += self.merger.close_due(now_ms)  # timed out before it
            update = Update(
                summary_from_weight_record(record, self.book),
                tier=record["tier"],
                region=record["region"],
                created_at_ms=now_ms if event_ts is not None else int(record["created_at"]),
                metrics=dict(record["metrics"]),
                meta=dict(record["meta"]),
                partition=m.partition(),
                offset=m.offset(),
                signature=signature,
            )
        except (SchemaError, SignatureError) as e:
            self._dead(m, e.reason_code, str(e))
            return None
        except UnknownLayoutError as e:  # sent by id for a layout this merger never held
            self._dead(m, "unknown-layout", str(e))
            return None
        except ModelError as e:
            self._dead(m, "invalid-summary", str(e))
            return None
        if self.canary is not None:  # a canary's report rides its summary
            self.canary.report(update.summary.model_name, update.node_id, update.metrics)
        refused = self.merger.offer(update, now_ms)
        self.touched.add(update.node_id)
        if refused is not None and refused.reason_code != "duplicate":
            self._dead(m, refused.reason_code, refused.reason)
        return now_ms if refused is None else None

    def _dead(self, m: Any, reason_code: str, reason: str) -> None:
        self.dead.send_message(m, reason_code, reason)

    # -- publishing ---------------------------------------------------------------------
    def _commit(self, closed: list[Closed], *, wait: bool = False) -> None:
        """Produce closed rounds, flush, then one Redis transaction.

        Postponed while the broker has not taken the records, and while Redis
        is away (tried again after a growing pause; ``wait``: retried up to
        ``redis_wait_s``, then :class:`RedisUnavailable`).
        """
        config = self.merger.config
        for c in closed:
            if c.held is not None:
                self._hold(c)
                continue
            if c.canary is not None and self.canary is not None:
                self.canary.start(c.name, c.version, c.parent_version, self.merger.edges_of(c.name))
                self._event(c.name, c.version, c.parent_version, "canary", "canary",
                            f"version {c.version} goes to a {c.canary:g} share of the edges "
                            f"first; the others keep {c.parent_version}")  # fmt: skip
            self._unpublished.append((c.name, self._signed(registry_record(c, config.quantize))))
            layout = self.book.learn(layout_of(c.result.summary))
            for key, record in topic_records(
                c, layout, self._announced, quantize=config.quantize, deltas=bool(config.deltas)
            ):
                self._produce_global(key, self._signed(record))
            self.touched.update(c.nodes)
            self.touched.update(x.node_id for x in c.result.contributors)
            self.telemetry.model_version.labels(SERVICE, c.name).set(c.version)
            if c.restored_from is not None:  # a rollback: no round behind it
                continue
            self.telemetry.merge_rounds.labels(SERVICE, c.name).inc()
            self.telemetry.merge_seconds.labels(SERVICE, c.name).observe(c.merge_s)
            round_s = max(c.created_at_ms - c.opened_ms, 0) / 1000
            self.telemetry.round_seconds.labels(SERVICE, c.name).observe(round_s)
            self.telemetry.excluded.labels(SERVICE, c.name).inc(len(c.result.excluded))
            if "holdout_roc_auc" in c.metrics:
                metric = self.telemetry.metric.labels(SERVICE, c.name, "holdout_roc_auc")
                metric.set(c.metrics["holdout_roc_auc"])
            log.info("round closed %s", describe(c))
        # dead letters and the last outbox delivered before Redis moves offsets and empties it
        remaining = self.producer.flush(30)
        if remaining:  # the broker is away: Redis must not run ahead of the topic
            log.warning("publish postponed: %d records not delivered yet (broker away?)", remaining)
            return
        if wait:  # leaving or handing partitions over: the next owner starts from this
            what = "writing the merger's state before letting its partitions go"
            sent = wait_for(self._write_redis, what=what, limit_s=self.redis_wait_s)
        elif self.redis.ready():  # else Redis is away: models and state wait in memory
            try:
                sent = self._write_redis()
            except REDIS_AWAY as e:
                self.redis.failed(e)
                return
            self.redis.succeeded()
        else:
            return
        if sent and self.producer.flush(30) == 0:  # delivered: a restart need not repeat them
            try:
                self.store.clear_outbox()
            except REDIS_AWAY as e:  # the next transaction empties it
                log.info("outbox kept until the next write (Redis away: %s)", e)

    def _hold(self, c: Closed) -> None:
        """A held-back version: its record (unsigned) for the history, an event on lifecycle."""
        self._unpublished.append((c.name, registry_record(c, self.merger.config.quantize)))
        self.touched.update(c.nodes)
        event = {
            "model_name": c.name,
            "version": c.version,
            "published_version": c.parent_version,
            "action": "held-back",
            "reason_code": "quality-gate",
            "reason": c.held,
            "metrics": dict(c.metrics),
            "service": SERVICE,
            "at": c.created_at_ms,
        }
        value = self.codec.encode("LifecycleEvent", event)
        self._outgoing.append(Outgoing(self.topics["lifecycle"], c.name.encode(), value))
        self.telemetry.held_back.labels(SERVICE, c.name).inc()
        log.warning("version held back %s", describe(c))

    def _signed(self, record: dict[str, Any]) -> dict[str, Any]:
        """Every record written (whole, delta, registry) is signed: a reader checks what it has."""
        return record if self.signer is None else self.signer.sign(record, "GlobalModel")

    def _produce_global(self, key: str, record: dict[str, Any]) -> None:
        """Every record of one model on one partition: a node reads its chain in order.

        While the broker cannot say how many partitions the topic has, the
        record goes by its key (a node may then skip to the next whole version)."""
        name = key.split(WHOLE)[0]
        count = self._global_partitions()
        partition = -1 if count is None else zlib.crc32(name.encode()) % count
        value = self.codec.encode("GlobalModel", record)
        self._outgoing.append(Outgoing(self.topics["global-model"], key.encode(), value, partition))

    def _send(self, records: list[Outgoing]) -> None:
        """Produce records Redis's outbox holds (see the module doc)."""
        for r in records:
            where = {} if r.partition < 0 else {"partition": r.partition}
            self.producer.produce(r.topic, r.value, key=r.key, **where)

    def _republish(self) -> None:
        """What the last run wrote to the outbox and may not have delivered, before anything
        new: the same bytes, so a version number still names one content."""
        left = wait_for(self.store.outbox, what="reading the outbox", limit_s=self.redis_wait_s)
        if left:
            log.info("republishing %d records the last run's outbox still held", len(left))
            self._send(left)

    def _global_partitions(self) -> int | None:
        if self._partitions is None:
            topic = self.topics["global-model"]
            try:
                meta = self.producer.list_topics(topic, timeout=5.0).topics[topic]
            except KafkaException as e:
                log.warning("global-model partitions unknown (broker away?): %s", e)
                return None
            if meta.error is not None or not meta.partitions:
                log.warning("global-model partitions unknown: %s", meta.error)
                return None
            self._partitions = len(meta.partitions)
        return self._partitions

    def _write_redis(self) -> int:
        """New models, touched ledgers, state, offsets and outbox in one transaction, then
        the outbox's records and the offsets to Kafka; how many records were produced."""
        models, offsets = self._unpublished, self._offsets()
        started = time.perf_counter()
        handled, outgoing = self._handled, self._outgoing
        self.store.commit(
            self.merger,
            models=models,
            nodes=self.touched,
            offsets=offsets,
            handled=handled,
            outbox=outgoing,
        )
        self._send(outgoing)
        self._outgoing = []
        self._handled = set()
        self.telemetry.checkpoint_seconds.labels(SERVICE).observe(time.perf_counter() - started)
        self._unpublished = []
        self.telemetry.summaries.labels(SERVICE).inc(len(models))
        self.telemetry.checkpoints.labels(SERVICE).inc()
        self.touched = set()
        self._last_commit = time.monotonic()
        self._commit_kafka(offsets)
        return len(outgoing)

    def _offsets(self) -> dict[int, int]:
        """Per partition read: the earliest offset an open round still holds, else the position."""
        held = self.merger.resume_offsets()
        out = dict(self.position)
        for p, offset in held.items():
            out[p] = min(offset, out.get(p, offset))
        return out

    def _commit_kafka(self, offsets: dict[int, int]) -> None:
        tps = [TopicPartition(self.topics["model-updates"], p, o) for p, o in offsets.items()]
        if tps:
            try:
                self.consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as e:
                log.warning("offset commit failed (Redis holds the truth): %s", e)

    # -- group -----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in self.stored:
                tp.offset = self.stored[tp.partition]
        consumer.assign(partitions)
        self._assigned = True
        self.idle.activity()
        where = [f"[{tp.partition}]@{_show(tp.offset)}" for tp in partitions]
        log.info("assigned %s %s", self.topics["model-updates"], ", ".join(where))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(self.merger.close_due(self.now_ms()), wait=True)
        consumer.unassign()

    def _maybe_idle_exit(self) -> None:
        if not self.idle.due(lambda: self._assigned and self._caught_up()):
            return
        # open rounds stay open: the stored offsets hold them, a restart reads them again
        log.info(
            "idle for %.1f s: stopping (%d updates in open rounds)",
            self.idle_exit_s,
            self.merger.pending_count(),
        )
        self._stopping = True

    def _caught_up(self) -> bool:
        """Read to the end of every assigned partition (a fresh look; False if unreachable)."""
        assignment = self.consumer.assignment()
        if not assignment:  # revoked (e.g. a session timeout while the broker was away)
            return False
        try:
            for tp in self.consumer.position(assignment):
                low, high = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                if high < 0:  # -1001: the broker did not tell (shutting down, no leader)
                    return False
                known = [self.position.get(tp.partition), self.stored.get(tp.partition)]
                at = max([o for o in known if o is not None] + [tp.offset, low])
                if at < high:
                    return False
        except KafkaException as e:
            log.info("idle, but the broker does not answer (%s): waiting", e)
            return False
        return True


def _show(offset: int) -> str:
    return "start" if offset == OFFSET_INVALID else str(offset)


def _now_ms() -> int:
    return int(time.time() * 1000)

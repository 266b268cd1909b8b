"""Faust wiring of the central learner: one agent, mini-batches, manual acks.

The agent reads the events topic and the labels topic together
(co-partitioned: Faust's assignor gives partition p of both to one worker),
in mini-batches from ``stream.noack_take``, and hands them to
:class:`~streams.central.worker.CentralWorker`. Nothing here keeps state:
River models never live in Faust tables (recovery can hang, in-place
mutations are lost -- faust-streaming #74/#597/#651); they live in the
worker and rest in Redis checkpoints.

Acks are manual: a batch's messages are acknowledged only after a
checkpoint covering them is stored, so the offsets Faust commits to Kafka
(up to the first message not acknowledged) never run ahead of the Redis
checkpoint. Labels still waiting for their events are not covered: a
restart reads them again from Kafka, so they are acknowledged at a later
checkpoint, once every label before them is resolved. A rebalance waits for every
message to be acknowledged (Faust's ``wait_empty``) unless told not to; we
tell it not to, and checkpoint in the revoke handler instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from runtime.redis_outage import REDIS_AWAY, RedisBackoff
from streams.central.checkpointing import Undelivered
from streams.central.intake import RecordIn
from streams.central.worker import CentralWorker
from streams.idle import IdleClock

log = logging.getLogger(__name__)

TICK_S = 0.2


@dataclass
class _Acks:
    """Messages processed but not yet acknowledged."""

    stream: Any = None
    #: processed since the last checkpoint
    events: list = field(default_factory=list)
    #: checkpointed, but at or after their partition's resume offset (waiting labels)
    held: list = field(default_factory=list)

    def covered(self, worker: CentralWorker) -> list:
        """After a checkpoint: the messages it covers, to acknowledge; the rest are held."""
        resume = {p: lr.resume_offsets() for p, lr in worker.learners.items()}
        covered, held = [], []
        for event in self.held + self.events:
            m = event.message
            at = resume.get(m.partition, {}).get(m.topic)
            (held if at is not None and m.offset >= at else covered).append(event)
        self.events, self.held = [], held
        return covered

    def forget(self, partitions: set[int]) -> None:
        """Partitions handed over: their next owner reads from the checkpoint's offsets."""
        self.held = [e for e in self.held if e.message.partition not in partitions]


def build_app(
    worker: CentralWorker,
    *,
    bootstrap: str,
    datadir: str,
    idle_exit_s: float | None = None,
    credentials: Any = None,
) -> faust.App:
    """``credentials``: Faust ``broker_credentials`` (SASL), see runtime/kafka_security.py."""
    config = worker.config
    app = faust.App(
        config.group_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=credentials,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        datadir=datadir,
        broker_commit_interval=1.0,
        # Faust would wait for every message to be acked before a rebalance or a stop;
        # ours are acked only by checkpoints, so the revoke handler and the agent's
        # finally checkpoint instead (a stop under load otherwise hangs).
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4 * config.batch_size, 4096),
        broker_max_poll_records=max(config.batch_size, 500),
    )
    source = app.topic(
        worker.topics.events,
        worker.topics.labels,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    lock = asyncio.Lock()
    acks = _Acks()
    idle = IdleClock(idle_exit_s, look_every_s=TICK_S)
    redis = RedisBackoff("the checkpoint (state and offsets)")

    def checkpointed(force: bool) -> bool:
        """Checkpoint if due (or forced); False when postponed (broker or Redis away)."""
        if force:  # a hand-over or the last checkpoint: waits for Redis (bounded)
            worker.checkpoint_waiting()
            return True
        if not (worker.checkpoint_due() and redis.ready()):
            return False
        try:
            worker.checkpoint()
        except Undelivered as e:  # broker away: keep going, acknowledge nothing yet
            log.warning("checkpoint postponed: %s", e)
            return False
        except REDIS_AWAY as e:  # Redis away: keep going, the state waits in memory
            redis.failed(e)
            return False
        redis.succeeded()
        return True

    async def settle(force: bool = False) -> None:
        """Checkpoint if due (or forced) and acknowledge what the checkpoint covers."""
        async with lock:
            if checkpointed(force):
                for event in acks.covered(worker):
                    await acks.stream.ack(event)
            if worker.summary_due():
                worker.publish_summaries()

    @app.agent(source, name="central-learn")
    async def learn(stream: faust.Stream) -> None:
        acks.stream = stream
        try:
            async for batch in stream.noack_take(config.batch_size, within=config.batching.fill_s):
                records = [_record_in(event) for event in batch]
                async with lock:
                    worker.process(records)
                    acks.events.extend(batch)
                idle.activity()
                await settle()
        finally:  # graceful stop (SIGTERM): keep what was learned since the last checkpoint
            if acks.events:
                worker.checkpoint_waiting()
            worker.publish_summaries()
            worker.producer.flush(10)

    def highwater(topic: str, partition: int) -> int | None:
        return app.consumer.highwater(TP(topic, partition))

    @app.timer(TICK_S)
    async def tick() -> None:
        flow_stopped = not app.consumer.flow_active
        await settle(force=bool(acks.events) and flow_stopped)
        worker.report_lag(highwater)
        if idle.due(lambda: bool(worker.learners) and worker.caught_up(highwater)):
            await settle(force=bool(acks.events))
            async with lock:
                worker.publish_summaries()
            log.info("caught up with nothing new for %.1f s: stopping", idle_exit_s)
            os.kill(os.getpid(), signal.SIGTERM)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set, **kwargs: Any) -> None:
        await settle(force=bool(acks.events))
        async with lock:
            gone = {tp.partition for tp in revoked if tp.topic in _topics(worker)}
            worker.revoke(gone)
            acks.forget(gone)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set, **kwargs: Any) -> None:
        async with lock:
            worker.assign({tp.partition for tp in assigned if tp.topic in _topics(worker)})
        idle.activity()

    return app


def _topics(worker: CentralWorker) -> tuple[str, str]:
    return worker.topics.events, worker.topics.labels


def _record_in(event: Any) -> RecordIn:
    m = event.message
    ts = int(m.timestamp * 1000) if m.timestamp else 0
    return RecordIn(m.topic, m.partition, m.offset, m.key, m.value, ts)

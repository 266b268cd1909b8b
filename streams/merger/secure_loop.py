"""``prism merger run --secure-agg``: the secure rounds' Kafka side, beside the merge loop.

Reads the four step topics (assigned from their ends at start: a round only
takes records written after it opened), checks each record's signature
against the trust file, hands it to :class:`streams.merger.secure.SecureRounds`
and produces the SecAggRound records it announces. Whatever a round cannot
take -- undecodable, unsigned, forged, signed by another node's key, replayed,
late, a confirmation of another survivor set -- goes to ``dead-letter`` with
its reason (and ``prism_secagg_refused_steps_total``), and the round goes on.
Every SecAggRound it produces is signed with the merger's key (the one that
signs its GlobalModels): nodes act on no phase record that does not verify.
Round-wide records go to ``secagg-rounds``; a record addressed to one node
(phase ``input``: the ciphertexts routed to it) goes to that node's partition
of ``secagg-routed`` (:func:`runtime.secagg.routed_partition`), which the
node alone assigns.

A finished round's global is published by the merge loop like any other
version (:meth:`streams.merger.rounds.Merger.close_secure`); only after that
flush is ``done`` announced, so a node never counts an increment delivered
that is not on the global-model topic. A merger restart loses an open round
(its state is in memory): the next round opens with a new id, and nodes
that were in the old one offer their increments again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from models.secagg.aggregate import global_from_total
from models.secagg.compat import SECURE_STRATEGIES
from runtime.secagg import (
    ROUNDS_TOPIC,
    ROUTED_TOPIC,
    STEP_TOPICS,
    StepRefused,
    routed_partition,
    routed_to,
)
from schemas import Codec, SchemaError
from schemas.identity import KeySigner, KeyVerifier
from schemas.signing import SignatureError
from streams.dead_letters import DeadLetters
from streams.merger.rounds import Closed, Merger
from streams.merger.secure import Finished, SecureRounds
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = ["SecureFeed"]


class SecureFeed:
    """One merger's secure rounds: step records in, round records and globals out."""

    def __init__(  # noqa: PLR0913 - the adapters, injected by streams/merger/run.py
        self,
        rounds: SecureRounds,
        *,
        consumer: Consumer,
        producer: Any,
        codec: Codec,
        topics: Mapping[str, str],
        verifiers: Mapping[str, KeyVerifier | None],
        dead: DeadLetters,
        signer: KeySigner | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.rounds, self.consumer, self.producer, self.codec = rounds, consumer, producer, codec
        self.topics = dict(topics)  # logical -> full name
        self.contract_of = {self.topics[t]: c for c, t in STEP_TOPICS.items()}
        self.verifiers, self.dead = verifiers, dead
        self._done: list[tuple[Finished, int]] = []
        self.signer, self.telemetry = signer, telemetry
        self.refused: dict[str, int] = {}
        self.routed_partitions = 0  # read at start

    def start(self) -> None:
        """Assign every step topic's partitions at their current end; learn how many
        partitions the routed topic has (a node's partition is a function of that count)."""
        routed = self.topics[ROUTED_TOPIC]
        meta = self.consumer.list_topics(routed, timeout=10.0).topics[routed]
        if meta.error is not None or not meta.partitions:
            raise KafkaException(meta.error)
        self.routed_partitions = len(meta.partitions)
        log.info("secure aggregation routes to %s (%d partitions)", routed,
                 self.routed_partitions)  # fmt: skip
        tps = []
        for contract, logical in STEP_TOPICS.items():
            topic = self.topics[logical]
            meta = self.consumer.list_topics(topic, timeout=10.0).topics[topic]
            if meta.error is not None:
                raise KafkaException(meta.error)
            for p in sorted(meta.partitions):
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10.0
                )
                tps.append(TopicPartition(topic, p, high))
            log.info("secure aggregation reads %s (%s)", topic, contract)
        self.consumer.assign(tps)

    def close(self) -> None:
        self.consumer.close()

    # -- one pass ---------------------------------------------------------------------
    def step(self, merger: Merger, now_ms: int) -> list[Closed]:
        """Take what arrived, move the round on; closed versions for the loop to publish."""
        for m in self.consumer.consume(500, timeout=0):
            if m.error() is None:
                self._take(m, now_ms)
        if self.rounds.round is None:
            rid = self.rounds.open(now_ms)
            log.info("secure round opened round=%s", rid)
            if self.telemetry is not None:
                self.telemetry.secagg_rounds.labels(
                    self.telemetry.service, self.rounds.config.model_name, "opened"
                ).inc()
        closed = []
        finished = self.rounds.advance(now_ms)
        if finished is not None:
            closed.append(self._publishable(merger, finished, now_ms))
        self._produce()
        self._observe()
        return closed

    def _take(self, m: Any, now_ms: int) -> None:
        contract = self.contract_of.get(m.topic(), "")
        value = m.value()
        try:
            if value is None:
                raise StepRefused("empty", "a record without a value (tombstone)")
            record = self.codec.decode(value, expected=contract)
            verifier = self.verifiers.get(contract)
            signature = verifier.check(record) if verifier is not None else None
            self.rounds.take(contract, record, signature, len(value), now_ms)
        except (SchemaError, SignatureError, StepRefused) as e:
            log.info("secure step refused topic=%s reason=%s: %s", m.topic(), e.reason_code, e)
            self.refused[e.reason_code] = self.refused.get(e.reason_code, 0) + 1
            if self.telemetry is not None:
                self.telemetry.secagg_refused.labels(self.telemetry.service, e.reason_code).inc()
            self.dead.send_message(m, e.reason_code, str(e))

    def _publishable(self, merger: Merger, f: Finished, now_ms: int) -> Closed:
        started = time.perf_counter()
        tier_current = merger.tiers.get(f.model_name)
        current = tier_current.current if tier_current is not None else None
        # FedAvgM / FedAdam step on the unmasked mean; with async (for the clear nodes
        # only) a secure round is plain FedAvg
        secure = merger.strategy.name in SECURE_STRATEGIES
        strategy = merger.strategy_for(f.model_name) if secure else "fedavg"
        result = global_from_total(f.model_name, f.features, f.total, f.included, current, strategy)
        closed = merger.close_secure(
            f.model_name,
            result,
            opened_ms=f.opened_ms,
            now_ms=now_ms,
            merge_s=time.perf_counter() - started,
            metrics=f.metrics,
            strategy=merger.strategy.name if secure else "fedavg",
        )
        self._done.append((f, closed.version))
        log.info(
            "secure round unmasked round=%s version=%s included=%s bytes_up=%d bytes_down=%d "
            "bytes_down_node=%d",
            f.round_id,
            closed.version,
            ",".join(f"{v}#{s}" for v, s in f.included),
            f.metrics["secagg_bytes_up"],
            f.metrics["secagg_bytes_down"],
            f.metrics["secagg_bytes_down_node"],
        )
        return closed

    def announce_done(self) -> None:
        """After the loop published (and flushed) the versions: tell the nodes."""
        for f, version in self._done:
            self.rounds.done(f, version, int(time.time() * 1000))
        self._done = []
        self._produce()

    def _produce(self) -> None:
        for record in self.rounds.out:
            record = dict(record, key_id=None, signature=None)
            if self.signer is not None:
                record = self.signer.sign(record, "SecAggRound")
            value = self.codec.encode("SecAggRound", record)
            receiver = routed_to(record)
            if receiver is not None:
                partition = routed_partition(receiver, self.routed_partitions)
                self.rounds.count_down(len(value), partition)
                self.producer.produce(self.topics[ROUTED_TOPIC], value,
                                      key=receiver.encode(), partition=partition)  # fmt: skip
                continue
            self.rounds.count_down(len(value))
            if record["phase"] == "abandoned":
                log.warning(
                    "secure round abandoned round=%s reoffered=%s: %s",
                    record["round_id"],
                    ",".join(record["nodes"]),
                    record["reason"],
                )
            self.producer.produce(
                self.topics[ROUNDS_TOPIC], value, key=record["model_name"].encode()
            )
        self.rounds.out = []
        self.producer.poll(0)

    def _observe(self) -> None:
        """Rounds that ended since the last pass, into the metrics."""
        outcomes, self.rounds.outcomes = self.rounds.outcomes, []
        t = self.telemetry
        if t is None:
            return
        for o in outcomes:
            t.secagg_rounds.labels(t.service, o.model_name, o.outcome).inc()
            if o.reason is not None:
                t.secagg_abandoned.labels(t.service, o.model_name, o.reason).inc()
            t.secagg_round_seconds.labels(t.service, o.model_name).observe(o.seconds)
            for step, n in o.dropouts.items():
                if n:
                    t.secagg_dropouts.labels(t.service, o.model_name, step).inc(n)

"""``prism edge run --secure-agg``: the node's side of SecAgg+ rounds over Kafka.

Takes the place of the summary sender: the increments the agent cuts still
go to the durable outbox, but none is ever sent in the clear. Instead the
oldest unsent one is offered to the merger's next secure round, and the
node follows the round's phases from ``secagg-rounds`` (keys -> shares ->
masked input -> unmask), each step a signed record on its own topic
(:mod:`runtime.secagg`); the ciphertexts addressed to it come in a record of
its own on ``secagg-routed``, from the one partition that is this node's
(assigned at its end when the node starts): it downloads those, not every
receiver's. The row is marked sent only when the round's
``done`` record lists this node -- the global holding it is published by
then. A round abandoned, or left (a late step, not in the roster), leaves
the row unsent: it is offered to the next round. Nothing is lost, nothing
counted twice.

A restart mid-round counts as a **dropout**: the round's secrets live in
memory only, so the node cannot resume its steps. Before it sends its masked
input it writes ``secagg-round.json`` (round id, sequence) to its state dir:
from then on it may be in the sum. On restart it reads ``secagg-rounds`` from
the beginning and settles that round by its outcome (``done`` listing it:
the row is sent; otherwise it is offered again).

The marker is not the only record of what was merged: every round's
``shares`` record names the sequence each node offered (the roster) and its
``done`` the nodes in the sum, both signed by the merger. A node reading
the rounds topic therefore marks sent any unsent row a ``done`` held, even
with its marker lost (a crash between the merge and its own bookkeeping, a
state dir restored from a backup); else it would offer the row again and the
merger would refuse it (``duplicate``) at every round, forever unsent.

The node acts on no phase record the merger did not sign (its global key,
checked against the trust file: a forged ``done`` would otherwise mark a row
sent that no global holds). Before revealing shares it confirms, signed, the
one survivor set it was given, and reveals only when the ``unmask`` record
names that very set and carries enough valid confirmations of it; a merger
that names two different sets, or two different records for one phase, is
refused. Every refusal is logged, counted (``refused``) and written to the
node's local dead letters; the node leaves the round, its row stays unsent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from edge_agents.link import Link
from edge_agents.outbox import Outbox
from models.errors import ModelError
from models.packing import LayoutBook
from models.secagg.aggregate import node_vector
from models.secagg.messages import Advertise, Inconsistent, RoundSpec
from models.secagg.node import Node, NodeKeys
from models.serialization import summary_from_weight_record
from models.summary import Summary
from runtime.secagg import (
    ROUNDS_TOPIC,
    ROUTED_TOPIC,
    STEP_TOPICS,
    StepRefused,
    confirm_record,
    keys_record,
    masked_record,
    require_confirmed,
    routed_partition,
    routed_to,
    shares_record,
    unmask_record,
)
from schemas import Codec, SchemaError
from schemas.identity import KeySigner, KeyVerifier
from schemas.signing import SignatureError

log = logging.getLogger(__name__)

__all__ = ["SecureSender"]

MARKER = "secagg-round.json"
#: a round's phases in order (the outcome last): the newest record a node acts on
_ORDER = {p: i for i, p in enumerate(("keys", "shares", "input", "confirm", "unmask", "done",
                                      "abandoned"))}  # fmt: skip
#: a local dead letter: (reason code, reason, where, raw bytes)
OnBad = Callable[[str, str, Any, bytes], None]


@dataclass
class _Mine:
    """This node's part in one round (memory only: a restart is a dropout)."""

    round_id: str
    sequence: int
    summary: Summary
    keys: NodeKeys
    step: str = "keys"
    node: Node | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the merger said


class SecureSender:
    """Offers outbox rows to secure rounds; ``pump``, ``idle`` and ``delivered`` as the
    summary sender has them, so the agent drives it the same way."""

    def __init__(  # noqa: PLR0913 - the adapters, injected by edge_agents/run.py
        self,
        link: Link,
        outbox: Outbox,
        *,
        node_id: str,
        model_name: str,
        codec: Codec,
        topics: Mapping[str, str],
        consumer: Consumer,
        state_dir: Path,
        signer: KeySigner | None = None,
        book: Callable[[], LayoutBook | None] = lambda: None,
        verifier: KeyVerifier | None = None,
        confirm_verifier: KeyVerifier | None = None,
        on_bad: OnBad | None = None,
    ) -> None:
        self.link, self.outbox, self.node_id, self.model_name = link, outbox, node_id, model_name
        self.codec, self.topics, self.consumer, self.signer = codec, dict(topics), consumer, signer
        self.book = book
        self.verifier, self.confirm_verifier = verifier, confirm_verifier  # SecAggRound, -Confirm
        self.on_bad = on_bad
        self.refused: dict[str, int] = {}  # phase records this node would not act on, by reason
        self.rounds: dict[str, int] = {}  # joined, delivered, abandoned, left
        self.set_aside: dict[str, int] = {}  # outbox rows no round can take, by reason
        self.marker_path = state_dir / MARKER
        self.marker = self._load_marker()
        self.mine: _Mine | None = None
        self.latest: Mapping[str, Any] | None = None  # the merger's newest phase record
        self.tried: set[str] = set()
        self.offered_in: dict[str, int] = {}  # round id -> the sequence its roster names for us
        self.delivered = self.failures = 0
        self.in_flight: set[int] = set()
        self._attached = False
        self.downloaded = 0  # bytes of secure round records fetched (both topics)
        self.routed_seen: set[str] = set()  # receivers of the input records fetched

    # -- the agent's interface -------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.mine is None and self.outbox.counts()["unsent"] == 0

    def pump(self) -> None:
        if not self.link.up:
            return
        if not self._attached:
            self._attach()
        for record, raw in self._poll():
            self.receive(record, raw)
        latest = self.latest
        if latest is not None and latest["phase"] not in ("done", "abandoned"):
            try:
                self._act(latest)
            except (StepRefused, Inconsistent) as e:  # the merger's word does not hold
                code = getattr(e, "reason_code", "secagg-inconsistent")
                self._refuse(code, f"secure round left: {e}", latest, b"")
                self._leave()
            except (ModelError, ValueError) as e:  # RoundAbandoned too: this node drops out
                log.warning("secure round left node=%s round=%s: %s", self.node_id,
                            latest["round_id"], e)  # fmt: skip
                self._leave()

    def receive(self, record: Mapping[str, Any], raw: bytes = b"") -> bool:
        """One phase record of this node's model: verified, checked against what the merger
        said before in the round, then settled; False when refused (never acted on)."""
        if self.verifier is not None:
            try:
                self.verifier.check(record)
            except SignatureError as e:
                self._refuse(e.reason_code, f"secure round record not acted on: {e}", record, raw)
                return False
        mine = self.mine
        if mine is not None and record["round_id"] == mine.round_id:
            said = {k: v for k, v in record.items() if k not in ("signature", "created_at")}
            before = mine.phases.setdefault(record["phase"], said)
            if before != said:
                self._refuse("secagg-equivocation", f"two different {record['phase']} records "
                             f"for round {mine.round_id!r}", record, raw)  # fmt: skip
                self._leave()
                return False
        self._settle(record)
        latest = self.latest
        if (latest is None or latest["round_id"] != record["round_id"]
                or _ORDER[record["phase"]] >= _ORDER[latest["phase"]]):  # fmt: skip
            # two topics: a slow routed record must not take a later phase's place
            self.latest = record  # acted on now, or at a later pump (a row cut meanwhile)
        return True

    def _refuse(self, code: str, why: str, record: Mapping[str, Any], raw: bytes) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        log.error("secure round record refused node=%s round=%s phase=%s reason=%s: %s",
                  self.node_id, record.get("round_id"), record.get("phase"), code,
                  why)  # fmt: skip
        if self.on_bad is not None:
            where = {"round_id": record.get("round_id"), "phase": record.get("phase")}
            self.on_bad(code, why, where, raw)

    def _leave(self) -> None:
        if self.mine is not None:
            self._count("left")
        self.mine = None

    def _count(self, what: str) -> None:
        self.rounds[what] = self.rounds.get(what, 0) + 1

    def close(self) -> None:
        log.info("secure rounds read node=%s downloaded_bytes=%d routed_to=%s", self.node_id,
                 self.downloaded, ",".join(sorted(self.routed_seen)))  # fmt: skip
        self.consumer.close()

    # -- reading the merger's phases ----------------------------------------------------------
    def _attach(self) -> None:
        """Every partition of the rounds topic from its start; of the routed topic only this
        node's partition, from its end (a round's routed record comes after the node joined)."""
        topic, routed = self.topics[ROUNDS_TOPIC], self.topics[ROUTED_TOPIC]
        try:
            parts = {}
            for t in (topic, routed):
                meta = self.consumer.list_topics(t, timeout=5.0).topics[t]
                if meta.error is not None or not meta.partitions:
                    raise KafkaException(meta.error)
                parts[t] = sorted(meta.partitions)
            mine = routed_partition(self.node_id, len(parts[routed]))
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(routed, mine), timeout=5.0
            )
        except KafkaException as e:
            log.warning("secure rounds topics %s, %s not reachable yet: %s", topic, routed, e)
            return
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts[topic]]
            + [TopicPartition(routed, mine, high)]
        )
        log.info("secure rounds: reading %s and partition %d of %s (%d partitions)",
                 topic, mine, routed, len(parts[routed]))  # fmt: skip
        self._attached = True

    def _poll(self) -> list[tuple[dict[str, Any], bytes]]:
        out = []
        for _ in range(20):  # catch up, in bounded bites
            batch = self.consumer.consume(500, timeout=0)
            for m in batch:
                if m.error() is not None or m.value() is None:
                    if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("secure rounds consumer: %s", m.error())
                    continue
                self.downloaded += len(m.value())
                try:
                    record = self.codec.decode(m.value(), expected="SecAggRound")
                    receiver = routed_to(record)
                except (SchemaError, ValueError) as e:
                    log.warning("undecodable secure round record offset=%s: %s", m.offset(), e)
                    continue
                if receiver is not None:
                    self.routed_seen.add(receiver)
                    if receiver != self.node_id:
                        continue  # another node of this partition's: not ours to act on
                if record["model_name"] == self.model_name:
                    out.append((record, m.value()))
            if not batch:
                break
        return out

    def _settle(self, record: Mapping[str, Any]) -> None:
        """A round's outcome (or a new round: the old one is over) for this node's rows."""
        rid, phase, me = record["round_id"], record["phase"], self.node_id
        if phase == "keys":  # one round at a time: a new one means the others are over
            self.offered_in.clear()
        elif phase == "shares":
            mine_in = [int(p["sequence"]) for p in record["roster"] if p["node_id"] == me]
            if mine_in:
                self.offered_in[rid] = mine_in[0]
        offered = self.offered_in.pop(rid, None) if phase in ("done", "abandoned") else None
        settled = False
        marker = self.marker
        if marker is not None and rid == marker["round_id"] and phase in ("done", "abandoned"):
            if phase == "done" and me in record["nodes"]:
                self._delivered(int(marker["sequence"]), rid, record["version"])
            self._clear_marker()
            settled = True
        elif marker is not None and phase == "keys" and rid != marker["round_id"]:
            log.info("secure round %s ended without an outcome: sequence %s offered again",
                     marker["round_id"], marker["sequence"])  # fmt: skip
            self._clear_marker()  # the merger restarted: that round's sum was never published
        mine = self.mine
        if mine is not None and rid == mine.round_id:
            if phase == "done":
                self.mine = None
                if not settled and me in record["nodes"]:
                    self._delivered(mine.sequence, rid, record["version"])
            elif phase == "abandoned":
                self._count("abandoned")
                log.info("secure round abandoned node=%s round=%s sequence=%s (offered again): "
                         "%s", me, rid, mine.sequence, record["reason"])  # fmt: skip
                self.mine = None
        elif mine is not None and phase == "keys":
            self.mine = None  # a new round opened: ours is over without us
        elif phase == "done" and not settled and offered is not None and me in record["nodes"]:
            self._held_before(offered, rid, record["version"])

    def _held_before(self, sequence: int, rid: str, version: int) -> None:
        """A published round held this row, though neither marker nor memory says so."""
        if self.outbox.mark_sent(sequence):  # False: marked already, nothing to count
            log.warning("secure round done node=%s round=%s sequence=%s version=%s: merged "
                        "before, marked sent from the round's records",
                        self.node_id, rid, sequence, version)  # fmt: skip
            self.delivered += 1
            self._count("delivered")

    def _delivered(self, sequence: int, rid: str, version: int) -> None:
        self.outbox.mark_sent(sequence)
        self.delivered += 1
        self._count("delivered")
        log.info("secure round done node=%s round=%s sequence=%s version=%s",
                 self.node_id, rid, sequence, version)  # fmt: skip

    # -- this node's steps --------------------------------------------------------------------
    def _act(self, record: Mapping[str, Any]) -> None:
        phase, rid = record["phase"], record["round_id"]
        mine = self.mine
        if phase == "keys":
            if mine is None and rid not in self.tried and self.marker is None:
                self._join(rid)
            return
        if mine is None or rid != mine.round_id:
            return
        if phase == "shares" and mine.step == "keys":
            self._share(mine, record)
        elif phase == "input" and mine.step == "shares":
            self._masked(mine, record)
        elif phase == "confirm" and mine.step == "input":
            self._confirm(mine, record)
        elif phase == "unmask" and mine.step == "confirm":
            self._unmask(mine, record)

    def _join(self, rid: str) -> None:
        rows = self.outbox.unsent(1)
        if not rows:
            return
        row = rows[0]
        wire = self.codec.decode(row.payload, expected="WeightSummary")
        summary = summary_from_weight_record(wire, self.book())
        try:  # the round's layout only adds zeros for features the node lacks
            node_vector(summary, summary.features)
        except ModelError as e:
            self._set_aside(row.sequence, row.payload, str(e))
            return  # the next row is offered at the next pass, to this very round
        self.tried.add(rid)
        keys = NodeKeys.generate()
        ad = Advertise(self.node_id, keys.cipher.public, keys.mask.public)
        self.mine = _Mine(rid, row.sequence, summary, keys)
        self._count("joined")
        self._send("SecAggKeys", keys_record(
            rid, ad, model_name=self.model_name, sequence=row.sequence,
            base_version=summary.base_version, features=summary.features, now_ms=_now_ms(),
        ))  # fmt: skip
        log.info("secure round joined node=%s round=%s sequence=%s", self.node_id, rid,
                 row.sequence)  # fmt: skip

    def _set_aside(self, sequence: int, payload: bytes, why: str) -> None:
        """A row no secure round can take (out of the fixed-point range: the same at every
        offer): out of the queue, so the rows after it go on, and into the node's dead
        letters with its payload and reason, counted; never merged, never silently lost."""
        code = "secagg-out-of-range"
        if not self.outbox.set_aside(sequence, code):
            return
        self.set_aside[code] = self.set_aside.get(code, 0) + 1
        log.error("secure round cannot take node=%s sequence=%s: %s (set aside, in the dead "
                  "letters; rescale the feature and replay it)", self.node_id, sequence,
                  why)  # fmt: skip
        if self.on_bad is not None:
            self.on_bad(code, why, {"sequence": sequence, "model_name": self.model_name}, payload)

    def _share(self, mine: _Mine, record: Mapping[str, Any]) -> None:
        roster = {p["node_id"]: p for p in record["roster"]}
        if self.node_id not in roster:
            self.mine = None  # too late for this round: the row waits for the next
            return
        spec = RoundSpec.create(
            mine.round_id, list(roster), record["length"], max_dropout=record["max_dropout"]
        )
        mine.node = Node(self.node_id, spec, keys=mine.keys)
        mine.extra["features"] = tuple(record["features"])
        ads = {
            v: Advertise(v, bytes(p["cipher_public"]), bytes(p["mask_public"]))
            for v, p in roster.items()
        }
        bundle = mine.node.share(ads)
        mine.step = "shares"
        self._send("SecAggShares", shares_record(mine.round_id, bundle, _now_ms()))

    def _masked(self, mine: _Mine, record: Mapping[str, Any]) -> None:
        if self.node_id not in record["nodes"] or mine.node is None:
            self.mine = None
            return
        vector = node_vector(mine.summary, mine.extra["features"])
        incoming = {s: bytes(c) for s, c in record["routed"].get(self.node_id, {}).items()}
        masked = mine.node.masked_input(vector, incoming)
        self._write_marker(mine)  # from here on the node may be in the sum
        mine.step = "input"
        self._send("SecAggMasked", masked_record(mine.round_id, masked, _now_ms()))

    def _confirm(self, mine: _Mine, record: Mapping[str, Any]) -> None:
        """Vouch, signed, for the one survivor set named to this node (never another)."""
        if self.node_id not in record["nodes"] or mine.node is None:
            return  # not a survivor: the round's outcome still settles the row
        survivors = mine.node.confirm(record["nodes"])
        mine.step = "confirm"
        self._send("SecAggConfirm", confirm_record(mine.round_id, self.node_id, sorted(survivors),
                                                   _now_ms()))  # fmt: skip

    def _unmask(self, mine: _Mine, record: Mapping[str, Any]) -> None:
        if self.node_id not in record["nodes"] or mine.node is None:
            return  # not a survivor: the round's outcome still settles the row
        require_confirmed(record, mine.node.spec, self.confirm_verifier)
        reply = mine.node.unmask(record["nodes"])  # only the set it confirmed
        mine.step = "unmask"
        self._send("SecAggUnmask", unmask_record(mine.round_id, reply, _now_ms()))

    def _send(self, contract: str, record: dict[str, Any]) -> None:
        record = dict(record, key_id=None, signature=None)
        if self.signer is not None:
            record = self.signer.sign(record, contract)
        value = self.codec.encode(contract, record)
        topic = self.topics[STEP_TOPICS[contract]]
        self.link.producer.produce(topic, value, key=self.node_id.encode(), on_delivery=self._done)
        self.link.producer.poll(0)

    def _done(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failures += 1
            self.link.mark_down(err.str())

    # -- the restart marker -----------------------------------------------------------------
    def _load_marker(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.marker_path.read_text()))
        except (OSError, ValueError):
            return None

    def _write_marker(self, mine: _Mine) -> None:
        tmp = self.marker_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"round_id": mine.round_id, "sequence": mine.sequence}))
        os.replace(tmp, self.marker_path)
        self.marker = {"round_id": mine.round_id, "sequence": mine.sequence}

    def _clear_marker(self) -> None:
        self.marker = None
        self.marker_path.unlink(missing_ok=True)


def _now_ms() -> int:
    return int(time.time() * 1000)

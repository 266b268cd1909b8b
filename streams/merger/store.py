"""Where the merge job's state rests: the registry plus a few keys of its own, in Redis.

One MULTI/EXEC per commit holds everything a restart needs to go on exactly:

=======================================  ======  ===========================================
key (``{g}`` = the merger's group id)    type    value
=======================================  ======  ===========================================
``prism:model:{name}:current|history``   --      the registry entries of the new models
``prism:node:{id}`` / ``prism:nodes``    --      node records of every node the commit touched
``prism:merger:{g}:offsets``             hash    partition -> next offset to read on restart
``prism:merger:{g}:seen``                hash    node -> its dedup window (int64 sequences)
``prism:merger:{g}:macs``                hash    node -> (int64 sequence, 32-byte signature)
                                                 pairs of signed updates in that window
``prism:merger:{g}:snapshots``           hash    node -> last merged cumulative snapshot
                                                 (an encoded ``WeightSummary``)
``prism:merger:{g}:forwarded``           hash    regional results waiting for a global round
``prism:merger:{g}:optimizer``           hash    model -> its server optimizer's state
                                                 (fedavgm / fedadam; JSON, :mod:`.optimizer`)
``prism:merger:{g}:outbox``              list    records to produce (:mod:`.outbox`): written
                                                 before they go out, emptied once delivered
=======================================  ======  ===========================================

The offsets are the earliest position still held by an open round, so what
a crash loses (open rounds) is read again; the dedup windows make what is read
twice count once. The current global models themselves are the registry's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Any

import redis

from models.errors import InvalidSummaryError
from models.serialization import (
    global_model_from_record,
    summary_from_weight_record,
    weight_summary_record,
)
from models.specs import SPEC_NAMES
from runtime.model_registry import NodeRecord, RegistryKeys, RegistryWriter
from runtime.model_registry.lifecycle import LifecycleControls
from schemas import Codec
from streams.merger.optimizer import decode_state, encode_state
from streams.merger.outbox import Outgoing, decode, encode
from streams.merger.rounds import Merger, NodeLedger, Update

log = logging.getLogger(__name__)


class MergerStore:
    def __init__(
        self,
        client: redis.Redis,
        writer: RegistryWriter,
        *,
        group: str,
        codec: Codec,
        keys: RegistryKeys | None = None,
    ) -> None:
        self.client, self.writer, self.codec = client, writer, codec
        self.keys = keys or RegistryKeys()
        self.offsets_key = self.keys.merger(group, "offsets")
        self.seen_key = self.keys.merger(group, "seen")
        self.macs_key = self.keys.merger(group, "macs")
        self.snapshots_key = self.keys.merger(group, "snapshots")  # read by prism.client too
        self.forwarded_key = self.keys.merger(group, "forwarded")
        self.outbox_key = self.keys.merger(group, "outbox")
        self.optimizer_key = self.keys.merger(group, "optimizer")
        self._optimizers: dict[str, bytes] = {}  # model -> the state Redis holds (as written)
        self.controls = LifecycleControls(client, self.keys)  # operators' rollbacks, quarantine

    def history(self, name: str) -> list[dict[str, Any]]:
        """``name``'s registry history, newest first (whole records: a rollback's source)."""
        items = self.client.lrange(self.keys.history(name), 0, -1)
        return [self.codec.decode(item, expected="GlobalModel") for item in items]

    # -- restore ------------------------------------------------------------------
    def load(self, merger: Merger, now_ms: int) -> dict[int, int]:
        """Fill ``merger`` with the registry's models and the node ledgers; the offsets."""
        for raw in self.client.smembers(self.keys.models):
            name = raw.decode()
            if not _merged_name(name):
                continue  # spec@worker: a central worker's own model, written by older versions
            data = self.client.get(self.keys.current(name))
            if data is not None:
                info = global_model_from_record(self.codec.decode(data, expected="GlobalModel"))
                merger.restore_model(name, info.summary, info.version, issued=self._issued(name))
        for node, packed in self.client.hgetall(self.seen_key).items():
            ledger = merger.ledger(node.decode())
            ledger.seen = list(struct.unpack(f"<{len(packed) // 8}q", packed))
            ledger.last_sequence = max(ledger.seen, default=0)
        for node, packed in self.client.hgetall(self.macs_key).items():
            pairs = struct.iter_unpack(_MAC_PAIR, packed)
            merger.ledger(node.decode()).macs = {seq: mac for seq, mac in pairs}
        for node, data in self.client.hgetall(self.snapshots_key).items():
            update = self._update(data)
            merger.ledger(node.decode()).snapshot = update.summary
        for data in self.client.hvals(self.forwarded_key):
            merger.restore_forwarded(self._update(data), now_ms)
        self._load_optimizers(merger)
        return {int(p): int(o) for p, o in self.client.hgetall(self.offsets_key).items()}

    def _load_optimizers(self, merger: Merger) -> None:
        """Each model's server optimizer state, if the merger runs the strategy that wrote it."""
        self._optimizers = {}
        for raw, data in self.client.hgetall(self.optimizer_key).items():
            name = raw.decode()
            try:
                strategy, state = decode_state(data)
                if strategy != merger.strategy.name:
                    raise InvalidSummaryError(f"it is {strategy}'s, not {merger.strategy.name}'s")
                merger.restore_optimizer(name, state)
            except InvalidSummaryError as e:
                log.warning("optimizer state of %s not restored (starts at zero): %s", name, e)
                continue
            self._optimizers[name] = data

    def outbox(self) -> list[Outgoing]:
        """Records a previous run wrote but may not have delivered, in the order written."""
        return [decode(item) for item in self.client.lrange(self.outbox_key, 0, -1)]

    def clear_outbox(self) -> None:
        self.client.delete(self.outbox_key)

    def _issued(self, name: str) -> int:
        """The newest version number used (the history's head): held-back versions are only
        there, and a restart must not give their numbers to other versions."""
        head = self.client.lindex(self.keys.history(name), 0)
        return (
            0 if head is None else int(self.codec.decode(head, expected="GlobalModel")["version"])
        )

    def _update(self, data: bytes) -> Update:
        record = self.codec.decode(data, expected="WeightSummary")
        return Update(
            summary_from_weight_record(record),
            tier=record["tier"],
            region=record["region"],
            created_at_ms=int(record["created_at"]),
            meta=dict(record["meta"]),
        )

    # -- commit -------------------------------------------------------------------
    def commit(
        self,
        merger: Merger,
        *,
        models: Iterable[tuple[str, dict[str, Any]]],
        nodes: Iterable[str],
        offsets: dict[int, int],
        handled: Iterable[str] = (),
        outbox: Iterable[Outgoing] = (),
    ) -> None:
        """New models (held-back ones to the history only), touched nodes' records and
        ledgers, offsets, the end of the rollback requests of ``handled`` models (done
        or refused) and the records to produce next (``outbox``, replacing the previous
        ones: the caller has seen those delivered): one transaction."""
        with self.client.pipeline(transaction=True) as tx:
            tx.delete(self.outbox_key)
            entries = [encode(e) for e in outbox]
            if entries:
                tx.rpush(self.outbox_key, *entries)
            for name in handled:
                tx.delete(self.keys.rollback(name))
            for name, record in models:
                if record.get("held_back") is None:
                    self.writer.queue_model(tx, record, name=name)
                else:
                    self.writer.queue_held(tx, record, name=name)
            ledgers = [merger.nodes[n] for n in sorted(set(nodes)) if n in merger.nodes]
            self.writer.queue_nodes(tx, [_node_record(lg) for lg in ledgers])
            for lg in ledgers:
                if lg.seen:
                    tx.hset(self.seen_key, lg.node_id, struct.pack(f"<{len(lg.seen)}q", *lg.seen))
                if lg.macs:
                    packed = b"".join(struct.pack(_MAC_PAIR, q, m) for q, m in lg.macs.items())
                    tx.hset(self.macs_key, lg.node_id, packed)
                if lg.snapshot is not None:
                    tx.hset(self.snapshots_key, lg.node_id, self._encode(lg.snapshot, lg))
            tx.delete(self.forwarded_key)
            for u in merger.forwarded():
                field = f"{u.summary.model_name}|{u.region}"
                tx.hset(self.forwarded_key, field, self._encode_update(u))
            optimizers = self._changed_optimizers(merger)
            if optimizers:
                tx.hset(self.optimizer_key, mapping=optimizers)
            if offsets:
                tx.hset(self.offsets_key, mapping={str(p): str(o) for p, o in offsets.items()})
            tx.execute()
        self._optimizers.update(optimizers)

    def _changed_optimizers(self, merger: Merger) -> dict[str, bytes]:
        """Server optimizer states that differ from what Redis holds: every commit carries
        the state behind the models it writes (a step without a version counts too)."""
        name = merger.strategy.name
        encoded = {m: encode_state(name, st) for m, st in merger.optimizer_states().items()}
        return {m: data for m, data in encoded.items() if self._optimizers.get(m) != data}

    def _encode(self, summary: Any, ledger: NodeLedger) -> bytes:
        record = weight_summary_record(
            summary,
            tier=ledger.tier,
            region=ledger.region,
            created_at_ms=ledger.last_seen_ms,
            meta={"stats": "cumulative"},
        )
        return self.codec.encode("WeightSummary", record)

    def _encode_update(self, u: Update) -> bytes:
        record = weight_summary_record(
            u.summary,
            tier=u.tier,
            region=u.region,
            created_at_ms=u.created_at_ms,
            meta=dict(u.meta),
        )
        return self.codec.encode("WeightSummary", record)

    def clear(self) -> None:
        self.client.delete(
            self.offsets_key,
            self.seen_key,
            self.macs_key,
            self.snapshots_key,
            self.forwarded_key,
            self.outbox_key,
            self.optimizer_key,
        )
        self._optimizers = {}


_MAC_PAIR = "<q32s"  # a sequence and its HMAC-SHA256


def _merged_name(name: str) -> bool:
    spec, _, rest = name.partition("@")
    return spec in SPEC_NAMES and (not rest or rest.startswith("region:"))


def _node_record(lg: NodeLedger) -> NodeRecord:
    return NodeRecord(
        node_id=lg.node_id,
        last_seen_ms=lg.last_seen_ms,
        last_sequence=lg.last_sequence,
        model_name=lg.model_name,
        tier=lg.tier,
        region=lg.region,
        excluded=lg.excluded,
        reason=lg.reason,
        metrics=lg.metrics,
        meta=lg.meta,
    )

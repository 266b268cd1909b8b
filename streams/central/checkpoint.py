"""Partition checkpoints in Redis: model + offsets + join state, written atomically.

Per partition ``p`` of consumer group ``g`` (prefix from the registry keys)::

    prism:checkpoint:{g}:{p}          CentralCheckpoint (codec encoding): model state,
                                      offsets to resume from per topic, watermarks,
                                      how far labels were read, counters
    prism:checkpoint:{g}:{p}:pending  hash event id -> score (f64) | offset (i64) | event bytes
    prism:checkpoint:{g}:{p}:recent   list of the latest event ids, newest first

One MULTI/EXEC writes every partition a worker owns. The pending hash and the
recent list are written incrementally (only what changed since the previous
checkpoint), so a checkpoint costs what the interval changed, not the size of
the stores; being in the same transaction, they never disagree with the
record. The hash takes HSET/HDEL, which repeat harmlessly when a transaction
whose reply was lost is written again. Pending events rest as the event bytes
exactly as consumed (already in the contract encoding): no re-encoding on the
hot path.

Labels waiting for their events (read ahead of them: up to ``max_waiting``
per partition on a catch-up) are not written at all: the record's labels
offset is the oldest waiting label's, so a restart reads them again from
Kafka (:meth:`PartitionLearner.resume_offsets`). Older layouts kept them in
the record (``waiting_labels``) or in a ``{p}:waiting`` hash; a load still
reads both, and the next save deletes the hash.

The store remembers a digest of the record it last wrote or read per
partition: :meth:`CheckpointStore.unchanged` tells a worker that got back a
partition it had *lost* (session timeout) whether anyone checkpointed it
since; if not, the learner it still holds is newer than Redis and goes on
(docs/reliability.md, "A lost assignment").
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from models.serialization import state_to_summary, summary_to_state
from runtime.model_registry.keys import RegistryKeys
from schemas import Codec
from streams.central.partition import Changes, PartitionLearner, Pending, WaitingLabel

_HEAD = struct.Struct("<dq")
_WAITING = struct.Struct("<qqBHi")  # ts, offset, label, id length, key length (-1: none)


def pack_pending(p: Pending) -> bytes:
    return _HEAD.pack(p.score, p.offset) + p.raw


def unpack_pending(data: bytes, codec: Codec, schema: str) -> Pending:
    score, offset = _HEAD.unpack_from(data)
    raw = bytes(data[_HEAD.size :])
    r = codec.decode(raw, expected=schema)
    x = r["features"]
    return Pending(r["event_id"], int(r["ts"]), offset, score, tuple(x), list(x.values()), raw)


def unpack_waiting(data: bytes) -> WaitingLabel:
    """A label of the older layout's waiting hash: ts (i64) | offset (i64) | label (u8)
    | id length (u16) | key length (i32, -1: none) | event id | key | label bytes."""
    ts, offset, label, id_len, key_len = _WAITING.unpack_from(data)
    at = _WAITING.size + id_len
    eid = bytes(data[_WAITING.size : at]).decode()
    key = None if key_len < 0 else bytes(data[at : at + key_len])
    raw = bytes(data[at + max(key_len, 0) :]) or None
    return WaitingLabel(eid, ts, bool(label), offset, raw, key)


CHECKPOINT_MAX_BYTES = 256 * 1024 * 1024
_PENDING = "hset pending"  # a Snapshot command whose events write() packs (off the loop)


@dataclass
class Snapshot:
    """A checkpoint encoded and not yet written: its Redis commands, and what it took.

    ``offsets`` (partition -> resume offsets) is what may be committed to Kafka
    once the write succeeded, never before."""

    commands: list[tuple[str, tuple, dict]] = field(default_factory=list)
    taken: list[tuple[PartitionLearner, Changes]] = field(default_factory=list)
    offsets: dict[int, dict[str, int]] = field(default_factory=dict)
    digests: dict[int, bytes] = field(default_factory=dict)

    def give_back(self) -> None:
        """The write failed: each learner gets its changes back, before its newer ones."""
        for learner, changes in self.taken:
            learner.give_back(changes)
        self.taken = []


@dataclass(frozen=True)
class CheckpointKeys:
    record: str
    pending: str
    recent: str
    waiting: str  # the older layout's waiting labels: read by a load, deleted by a save


class CheckpointStore:
    """Saves and loads :class:`PartitionLearner` state; one transaction per save."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        worker_id: str,
        event_schema: str,
        codec: Codec | None = None,
        keys: RegistryKeys | None = None,
    ) -> None:
        self.client = client
        self.group, self.worker_id, self.event_schema = group, worker_id, event_schema
        codec = codec or Codec()
        # a checkpoint is a Redis value, not a Kafka message: up to its waiting labels
        # (bounded by the engine's back-pressure), it may pass the message-size limit
        self.codec = Codec(codec.mode, max_bytes=max(codec.max_bytes, CHECKPOINT_MAX_BYTES))
        self.keys = keys or RegistryKeys()
        #: partition -> digest of the record this store last wrote or read (None: none)
        self._seen: dict[int, bytes | None] = {}

    def keys_for(self, partition: int) -> CheckpointKeys:
        base = self.keys.checkpoint(f"{self.group}:{partition}")
        return CheckpointKeys(base, f"{base}:pending", f"{base}:recent", f"{base}:waiting")

    def record(self, learner: PartitionLearner) -> dict:
        return {
            "group": self.group,
            "partition": learner.partition,
            "worker_id": self.worker_id,
            "created_at": int(time.time() * 1000),
            "offsets": learner.resume_offsets(),
            "state": summary_to_state(learner.spec.summarize(learner.model)),
            "event_watermark": learner.event_watermark,
            "label_watermark": learner.label_watermark,
            "labels_consumed_until": learner.labels_consumed_until(),
            "waiting_labels": [],  # read again from Kafka
            "counters": {k: int(v) for k, v in learner.counters.items()},
        }

    def save(self, learners: Iterable[PartitionLearner]) -> None:
        """Write every learner's checkpoint in one MULTI/EXEC (:meth:`prepare`, :meth:`write`)."""
        snapshot = self.prepare(learners)
        try:
            self.write(snapshot)
        except BaseException:
            snapshot.give_back()
            raise

    def prepare(self, learners: Iterable[PartitionLearner]) -> Snapshot:
        """Encode a checkpoint of ``learners`` as they are now, taking their changes.

        Nothing touches Redis here: :meth:`write` (which may run on another
        thread, while the learners go on) packs the pending events taken and
        sends it all; if it fails, the caller gives the changes back
        (:meth:`Snapshot.give_back`). The model's state is encoded here: it
        changes with the next batch.
        """
        snapshot = Snapshot()
        for learner in learners:
            p, k = learner.partition, self.keys_for(learner.partition)
            record = self.record(learner)
            changes = learner.take_changes()
            snapshot.taken.append((learner, changes))
            snapshot.offsets[p] = record["offsets"]
            data = self.codec.encode_many("CentralCheckpoint", [record])[0]
            snapshot.digests[p] = _digest(data)
            commands = snapshot.commands
            commands.append(("set", (k.record, data), {}))
            if changes.added:  # packed by write(): the taken changes are the snapshot's alone
                commands.append((_PENDING, (k.pending, changes.added), {}))
            if changes.removed:
                commands.append(("hdel", (k.pending, *changes.removed), {}))
            if changes.recent:  # only the newest recent_size survive the LTRIM
                size = learner.config.recent_size
                commands.append(("lpush", (k.recent, *changes.recent[-size:]), {}))
                commands.append(("ltrim", (k.recent, 0, size - 1), {}))
            commands.append(("delete", (k.waiting,), {}))  # an older layout's: offsets cover it
        return snapshot

    def write(self, snapshot: Snapshot) -> None:
        """Send a prepared checkpoint in one MULTI/EXEC (thread-safe: a pooled connection)."""
        if not snapshot.commands:
            return
        with self.client.pipeline(transaction=True) as tx:
            for name, args, kwargs in snapshot.commands:
                if name == _PENDING:
                    key, added = args
                    tx.hset(key, mapping={e: pack_pending(p) for e, p in added.items()})
                else:
                    getattr(tx, name)(*args, **kwargs)
            tx.execute()
        self._seen.update(snapshot.digests)

    def load(self, learner: PartitionLearner) -> bool:
        """Restore ``learner`` from its partition's checkpoint; False if there is none."""
        k = self.keys_for(learner.partition)
        with self.client.pipeline(transaction=True) as tx:
            tx.get(k.record)
            tx.hvals(k.pending)
            tx.lrange(k.recent, 0, -1)
            tx.hvals(k.waiting)
            data, pending, recent, waiting = tx.execute()
        self._seen[learner.partition] = None if data is None else _digest(data)
        if data is None:
            return False
        r = self.codec.decode(data, expected="CentralCheckpoint")
        spec = learner.spec
        learner.restore(
            model=spec.load(state_to_summary(r["state"])),
            offsets=r["offsets"],
            pending=[unpack_pending(v, self.codec, self.event_schema) for v in pending],
            # older layouts: waiting labels in the record, or in the waiting hash
            waiting=[WaitingLabel(**w) for w in r["waiting_labels"]]
            + sorted(map(unpack_waiting, waiting), key=lambda w: w.offset),
            labels_reread_until=r["labels_consumed_until"],
            recent=[e.decode() for e in reversed(recent)],
            event_watermark=r["event_watermark"],
            label_watermark=r["label_watermark"],
            counters=r["counters"],
        )
        return True

    def unchanged(self, partition: int) -> bool:
        """Whether the partition's record is still the one this store last wrote or read.

        Every save writes the record (with the pending hash and recent list, in
        one transaction), so an equal record means nobody checkpointed the
        partition since. False if this store never wrote or read it.
        """
        if partition not in self._seen:
            return False
        data = self.client.get(self.keys_for(partition).record)
        return (None if data is None else _digest(data)) == self._seen[partition]

    def partitions(self) -> list[int]:
        """The partitions this group has checkpoint keys for (SCAN, not KEYS: no stall).

        Matched exactly, so group ``g`` never picks up the keys of a group ``g:x``."""
        base = self.keys.checkpoint(f"{self.group}:")
        own = re.compile(re.escape(base) + r"(\d+)(?::(?:pending|recent|waiting))?")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", base) + "*"
        found = set()
        for key in self.client.scan_iter(match=pattern, count=1000):
            m = own.fullmatch(key.decode() if isinstance(key, bytes) else key)
            if m:
                found.add(int(m.group(1)))
        return sorted(found)

    def clear(self, partitions: Iterable[int]) -> int:
        """Forget the group's checkpoints (``prism central reset``); the keys deleted."""
        names = [n for p in partitions for n in vars(self.keys_for(p)).values()]
        return int(self.client.delete(*names)) if names else 0


def _digest(record: bytes) -> bytes:
    return hashlib.blake2b(record, digest_size=16).digest()

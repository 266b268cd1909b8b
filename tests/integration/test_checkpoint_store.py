"""Central checkpoints in the real Redis: a restore gives back the exact join state.

Labels read before their events (up to ``max_waiting`` per partition) are
not written: the checkpoint's labels offset is the oldest waiting one's, and
the labels from there are read again, as the consumer does after a restart
(here: handed to the restored learner again). These tests pin that the
restored learner then goes on exactly like the original, that labels read a
second time are not counted or dead-lettered twice, that a checkpoint writes
no label, and that checkpoints of the older layouts (waiting labels in the
record, or in a waiting hash) still restore.
"""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest
import redis

from models.specs import get_spec
from runtime.model_registry.keys import RegistryKeys
from schemas import Codec
from streams.central.checkpoint import CheckpointStore
from streams.central.partition import EventIn, LabelIn, PartitionLearner, Undecodable

pytestmark = pytest.mark.integration

EV, LB = "tx", "labels"
T0 = 1_700_000_000_000


def learner() -> PartitionLearner:
    return PartitionLearner(get_spec("fraud-linear"), 0, events_topic=EV, labels_topic=LB)


def events(lo: int, hi: int) -> list[EventIn]:
    return [
        EventIn(i, {"event_id": f"e{i}", "ts": T0 + i, "features": {"a": i % 7 / 7.0}}, b"raw")
        for i in range(lo, hi)
    ]


def labels(lo: int, hi: int) -> list[LabelIn]:
    """Labels with their bytes and Kafka keys as consumed (no key, an empty one, a key)."""
    keys = (None, b"", b"store-7")
    return [
        LabelIn(
            i,
            {"event_id": f"e{i}", "ts": T0 + i, "label": i % 3 == 0, "site_id": None},
            raw=f"label-bytes-{i}".encode(),
            key=keys[i % 3],
        )
        for i in range(lo, hi)
    ]


@pytest.fixture
def store(redis_client: redis.Redis) -> CheckpointStore:
    keys = RegistryKeys(prefix=f"ckpt{uuid.uuid4().hex[:8]}")
    return CheckpointStore(
        redis_client, group="g", worker_id="w", event_schema="Transaction", keys=keys
    )


def restored(store: CheckpointStore) -> PartitionLearner:
    fresh = learner()
    assert store.load(fresh)
    return fresh


def waiting(lr: PartitionLearner) -> list[tuple]:
    return [(w.event_id, w.ts, w.label, w.offset, w.raw, w.key) for w in lr.waiting]


def same_model(a: PartitionLearner, b: PartitionLearner) -> None:
    ta, tb = a.spec.summarize(a.model).tensors, b.spec.summarize(b.model).tensors
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=0, atol=1e-12, err_msg=k)


def counted(lr: PartitionLearner) -> dict[str, int]:
    """The counters a restart must not change (re-read records skipped are counted apart)."""
    return {k: v for k, v in lr.counters.items() if k != "replayed-skipped" and v}


def test_waiting_labels_are_read_again_from_the_oldest_waiting_one(
    store: CheckpointStore,
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 500))  # labels ahead of their events: all wait
    lr.take_events(events(0, 120))  # resolves the 120 oldest
    assert len(lr.waiting) == 380
    store.save([lr])
    again = restored(store)
    assert lr.resume_offsets() == {EV: 120, LB: 120}
    assert again.offsets == {EV: 120, LB: 120} and not again.waiting
    assert again.labels_reread_until == 500 and again.labels_consumed_until() == 500
    again.take_labels(labels(90, 500))  # the consumer may start before the checkpoint's offset
    assert waiting(again) == waiting(lr)
    for lr_ in (lr, again):  # and then goes on exactly like the original
        lr_.take_labels(labels(500, 530))
        lr_.take_events(events(120, 530))
    assert not lr.waiting and not again.waiting and not lr.pending and not again.pending
    same_model(lr, again)
    assert counted(again) == counted(lr) and again.counters["replayed-skipped"] == 30


def test_a_label_read_again_is_not_counted_or_dead_lettered_twice(store: CheckpointStore) -> None:
    def stream(lo: int, hi: int) -> list[LabelIn]:  # offset 30 undecodable, 40 never written
        out = [lb for lb in labels(lo, hi) if lb.offset != 40]
        for i, lb in enumerate(out):
            if lb.offset == 30:
                out[i] = LabelIn(30, None, b"junk", Undecodable("bad-bytes", "not Avro"), b"k")
        return out

    lr = learner()
    lr.take_labels(stream(0, 60))
    lr.take_events(events(0, 10))
    assert [r.offset for r in lr.take_rejected()] == [30]  # dead-lettered when first read
    assert lr.counters["bad-bad-bytes"] == lr.counters["offset-gaps"] == 1
    store.save([lr])
    again = restored(store)
    again.take_labels(stream(10, 60))
    assert again.take_rejected() == [] and counted(again) == counted(lr)
    for lr_ in (lr, again):  # past where reading had got to, the usual rules again
        lr_.take_labels(stream(60, 70) + [LabelIn(71, None, b"x", Undecodable("bad", "x"))])
    assert [r.offset for r in again.take_rejected()] == [r.offset for r in lr.take_rejected()]
    assert again.counters["offset-gaps"] == lr.counters["offset-gaps"] == 2
    assert counted(again) == counted(lr)


def test_a_checkpoint_writes_no_waiting_label(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 2000))
    redis_client.config_resetstat()
    store.save([lr])
    stats = redis_client.info("commandstats")
    calls = {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("hset", "hdel")}
    assert calls == {"hset": 0, "hdel": 0}
    k = store.keys_for(0)
    assert not redis_client.exists(k.waiting)
    assert len(redis_client.get(k.record)) < 2000  # nor does the record carry them


def _older_layout(store: CheckpointStore, lr: PartitionLearner) -> dict:
    """``lr``'s record as layouts before this one wrote it: offsets where reading had got to."""
    record = store.record(lr)
    record["offsets"] = dict(lr.offsets)
    record["labels_consumed_until"] = -1  # the field's default when an older record is read
    return record


def test_a_checkpoint_with_waiting_labels_in_the_record_still_restores(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 40))
    record = _older_layout(store, lr)
    record["waiting_labels"] = [
        {"event_id": w.event_id, "ts": w.ts, "label": w.label, "offset": w.offset}
        for w in lr.waiting
    ]
    redis_client.set(store.keys_for(0).record, Codec().encode("CentralCheckpoint", record))
    old = restored(store)
    # that layout kept no bytes or keys: the fields are restored, those are None
    assert [w[:4] for w in waiting(old)] == [w[:4] for w in waiting(lr)]
    assert all(w.raw is w.key is None for w in old.waiting) and old.offsets[LB] == 40
    for lr_ in (lr, old):
        lr_.take_events(events(0, 40))
    same_model(lr, old)


def test_a_checkpoint_with_a_waiting_hash_still_restores_and_the_next_save_drops_it(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 40))
    lr.take_events(events(0, 5))
    k = store.keys_for(0)
    record = _older_layout(store, lr)
    redis_client.set(k.record, Codec().encode("CentralCheckpoint", record))
    redis_client.hset(k.waiting, mapping={w.offset: _packed(w) for w in lr.waiting})
    old = restored(store)
    assert waiting(old) == waiting(lr) and old.offsets[LB] == 40
    old.take_events(events(5, 10))
    store.save([old])
    assert not redis_client.exists(k.waiting)
    again = restored(store)
    assert again.offsets[LB] == 10 and again.labels_reread_until == 40
    again.take_labels(labels(10, 40))
    assert waiting(again) == waiting(old)
    for lr_ in (lr, again):
        lr_.take_events(events(5 if lr_ is lr else 10, 40))
    same_model(lr, again)


def _packed(w) -> bytes:
    """A label as the older layout's waiting hash held it."""
    eid, key = w.event_id.encode(), w.key
    head = struct.pack("<qqBHi", w.ts, w.offset, w.label, len(eid), -1 if key is None else len(key))
    return head + eid + (key or b"") + (w.raw or b"")


def _cadence(store: CheckpointStore, kafka_bootstrap: str):
    from confluent_kafka import Producer

    from streams.central.checkpointing import Checkpointer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})  # nothing produced: flushes at once
    return Checkpointer(store, producer, every_records=10**9, every_s=3_600.0)


def pending_ids(lr: PartitionLearner) -> set[str]:
    return set(lr.pending)


def stored(store: CheckpointStore) -> tuple[dict[str, int], set[str]]:
    """Partition 0's checkpoint as Redis holds it: resume offsets, pending event ids."""
    k = store.keys_for(0)
    record = store.codec.decode(store.client.get(k.record), expected="CentralCheckpoint")
    return record["offsets"], {e.decode() for e in store.client.hkeys(k.pending)}


def test_a_background_checkpoint_leaves_the_loop_free_while_redis_stalls(
    store: CheckpointStore, redis_client: redis.Redis, kafka_bootstrap: str
) -> None:
    """The Redis round trip runs on the writer thread: a stalled Redis (CLIENT PAUSE) does not
    stop the caller, which learns on; the checkpoint holds the state as it was at the start."""
    import time

    cadence = _cadence(store, kafka_bootstrap)
    lr = learner()
    lr.take_events(events(0, 100))  # no labels yet: all pending
    redis_client.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    began = time.monotonic()
    cadence.start([lr])
    assert time.monotonic() - began < 0.5  # the synchronous save waited the whole pause
    assert cadence.finished() is None and cadence.in_flight and not cadence.due()
    lr.take_events(events(100, 150))  # the learner goes on while the write waits
    lr.take_labels(labels(0, 30))  # ... and resolves some of what the checkpoint holds
    snapshot, seconds = cadence.finished(wait=True)
    assert seconds >= 0.5 and snapshot.offsets == {0: {EV: 100}}
    assert stored(store) == ({EV: 100}, {f"e{i}" for i in range(100)})
    cadence.save([lr])  # the changes made during the write are the next checkpoint's
    offsets, pending = stored(store)
    assert offsets == lr.resume_offsets() and pending == pending_ids(lr)
    assert pending == {f"e{i}" for i in range(30, 150)}
    cadence.close()


def test_a_failed_background_write_gives_its_changes_back(
    store: CheckpointStore, kafka_bootstrap: str
) -> None:
    """Redis away: the write fails, its changes go back in front of newer ones, and the next
    checkpoint writes all of them (an id the failed one added and a label removed since stays
    removed)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: the real connection error
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    away = CheckpointStore(
        redis.Redis(port=port, socket_connect_timeout=1),
        group="g", worker_id="w", event_schema="Transaction", keys=store.keys,
    )  # fmt: skip
    cadence = _cadence(away, kafka_bootstrap)
    lr = learner()
    lr.take_events(events(0, 100))
    cadence.start([lr])
    assert not lr.changes.added  # taken by the checkpoint in flight
    lr.take_labels(labels(0, 30))  # removes 30 of the taken ones
    lr.take_events(events(100, 120))
    with pytest.raises(redis.ConnectionError):
        cadence.finished(wait=True)
    assert cadence.due() or cadence.since > 0  # owed again
    assert set(lr.changes.added) == {f"e{i}" for i in range(30, 120)}
    store.save([lr])
    assert stored(store)[1] == pending_ids(lr) == {f"e{i}" for i in range(30, 120)}
    cadence.close()

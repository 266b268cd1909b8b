"""Central checkpoints in the real Redis: incremental writes restore the exact join state.

The waiting labels (labels read before their events, up to ``max_waiting``
per partition) are written as changes, not whole, at every checkpoint; these
tests pin that what a restore reads equals the learner's state after any
sequence of saves, that a repeated write (a transaction whose reply was lost)
changes nothing, and that a checkpoint of the older layout (waiting labels in
the record) still restores.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from models.specs import get_spec
from prism.registry.keys import RegistryKeys
from schemas import Codec
from streams.central.checkpoint import CheckpointStore
from streams.central.partition import EventIn, LabelIn, PartitionLearner

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


def test_waiting_labels_are_restored_after_incremental_saves(store: CheckpointStore) -> None:
    lr = learner()
    lr.take_labels(labels(0, 500))  # labels ahead of their events: all wait
    store.save([lr])
    assert waiting(restored(store)) == waiting(lr) and len(lr.waiting) == 500
    lr.take_events(events(0, 120))  # resolves the 120 oldest waiting labels
    lr.take_labels(labels(500, 530))  # and 30 more start waiting
    assert len(lr.waiting) == 410
    store.save([lr])
    again = restored(store)
    assert waiting(again) == waiting(lr)
    assert again.waiting_stored == len(again.waiting)
    # the restored learner goes on exactly like the original
    for lr_ in (lr, again):
        lr_.take_events(events(120, 530))
    assert not lr.waiting and not again.waiting
    a, b = lr.spec.summarize(lr.model).tensors, again.spec.summarize(again.model).tensors
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12, err_msg=k)


def test_a_checkpoint_writes_the_changes_not_every_waiting_label(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 2000))
    store.save([lr])
    lr.take_events(events(0, 10))
    redis_client.config_resetstat()
    store.save([lr])
    stats = redis_client.info("commandstats")
    calls = {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("hset", "hdel")}
    assert calls == {"hset": 0, "hdel": 1}  # nothing new waits; the 10 resolved labels go
    k = store.keys_for(0)
    assert redis_client.hlen(k.waiting) == 1990
    assert len(redis_client.get(k.record)) < 2000  # the record no longer carries them


def test_writing_the_same_changes_twice_changes_nothing(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 300))
    store.save([lr])
    lr.take_events(events(0, 50))
    lr.take_labels(labels(300, 320))
    changes, stored = lr.changes, lr.waiting_stored
    store.save([lr])
    k = store.keys_for(0)
    first = redis_client.hgetall(k.waiting)
    lr.changes, lr.waiting_stored = changes, stored  # as if EXEC ran but its reply was lost
    store.save([lr])
    assert redis_client.hgetall(k.waiting) == first
    assert waiting(restored(store)) == waiting(lr)


def test_a_checkpoint_with_waiting_labels_in_the_record_still_restores(
    store: CheckpointStore, redis_client: redis.Redis
) -> None:
    lr = learner()
    lr.take_labels(labels(0, 40))
    record = store.record(lr)
    record["waiting_labels"] = [  # the layout before the waiting hash
        {"event_id": w.event_id, "ts": w.ts, "label": w.label, "offset": w.offset}
        for w in lr.waiting
    ]
    redis_client.set(store.keys_for(0).record, Codec().encode("CentralCheckpoint", record))
    old = restored(store)
    # the older layout kept no bytes or keys: the fields are restored, those are None
    assert [w[:4] for w in waiting(old)] == [w[:4] for w in waiting(lr)]
    assert old.waiting_stored == 0 and all(w.raw is w.key is None for w in old.waiting)
    old.take_events(events(0, 5))
    store.save([old])  # moves them to the hash
    assert redis_client.hlen(store.keys_for(0).waiting) == 35
    assert waiting(restored(store)) == waiting(old)

"""The Faust engine acknowledges only what a checkpoint covers (its committed offsets
never pass a label still waiting for its event: a restart reads that label again)."""

from __future__ import annotations

from types import SimpleNamespace

from models.specs import get_spec
from streams.central.app import _Acks
from streams.central.partition import EventIn, LabelIn, PartitionLearner

EV, LB = "tx", "labels"
T0 = 1_700_000_000_000


def message(topic: str, partition: int, offset: int) -> SimpleNamespace:
    """What ``_Acks`` reads of a Faust event: ``event.message.topic/partition/offset``."""
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


def test_waiting_labels_are_held_until_a_checkpoint_covers_them() -> None:
    lr = PartitionLearner(get_spec("fraud-linear"), 0, events_topic=EV, labels_topic=LB)
    worker = SimpleNamespace(learners={0: lr})
    acks = _Acks()
    lr.take_labels(
        [LabelIn(i, {"event_id": f"e{i}", "ts": T0 + i, "label": True}) for i in range(4)]
    )
    features = {"a": 0.5}
    lr.take_events([EventIn(i, {"event_id": f"e{i}", "ts": T0 + i, "features": features}, b"")
                    for i in range(2)])  # fmt: skip
    acks.events = [message(LB, 0, i) for i in range(4)] + [message(EV, 0, i) for i in range(2)]
    acks.events.append(message(LB, 1, 7))  # a partition this worker no longer owns
    covered = acks.covered(worker)
    assert [(e.message.topic, e.message.offset) for e in covered] == [
        (LB, 0),
        (LB, 1),
        (EV, 0),
        (EV, 1),
        (LB, 7),
    ]
    assert [e.message.offset for e in acks.held] == [2, 3] and acks.events == []
    lr.take_events([EventIn(2, {"event_id": "e2", "ts": T0 + 2, "features": features}, b"")])
    acks.events = [message(EV, 0, 2)]
    assert [(e.message.topic, e.message.offset) for e in acks.covered(worker)] == [
        (LB, 2),
        (EV, 2),
    ]
    assert [e.message.offset for e in acks.held] == [3]
    acks.forget({0})  # handed over: the next owner reads label 3 again from the checkpoint
    assert acks.held == []

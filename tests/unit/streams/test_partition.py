"""The partition learner's join, order and bookkeeping -- pure, no Kafka or Redis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.specs import get_spec
from streams.central.partition import (
    EventIn,
    LabelIn,
    LearnerConfig,
    PartitionLearner,
    Undecodable,
)

EV, LB = "tx", "labels"
T0 = 1_700_000_000_000


def learner(spec: str = "fraud-linear", **config: int) -> PartitionLearner:
    return PartitionLearner(
        get_spec(spec), 0, events_topic=EV, labels_topic=LB, config=LearnerConfig(**config)
    )


def event(offset: int, eid: str, ts: int, x: float, label: bool | None = None) -> EventIn:
    record = {"event_id": eid, "ts": ts, "features": {"a": x, "b": 1.0 - x}, "label": label}
    return EventIn(offset, record, f"raw-{eid}".encode())


def label(offset: int, eid: str, ts: int, y: bool) -> LabelIn:
    return LabelIn(offset, {"event_id": eid, "ts": ts, "label": y, "site_id": None})


def tensors(lr: PartitionLearner) -> dict[str, np.ndarray]:
    s = lr.spec.summarize(lr.model)
    return {k: np.asarray(v, dtype=float) for k, v in s.tensors.items()} | {
        "n": np.array([s.n_samples], dtype=float)
    }


def assert_same_model(a: PartitionLearner, b: PartitionLearner) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=0, atol=1e-9, err_msg=k)


def test_scores_with_the_model_before_learning_the_event() -> None:
    lr = learner()
    first = lr.take_events([event(0, "e0", T0, 3.0, label=True)])
    assert first[0].score == pytest.approx(0.5)  # untrained logistic model
    assert lr.counters["learned"] == 1 and lr.counters["labelled"] == 1
    second = lr.take_events([event(1, "e1", T0 + 1, 3.0, label=True)])
    assert second[0].score > 0.5  # learned from e0 before scoring e1


def test_late_label_learns_the_held_event_then_forgets_it() -> None:
    lr = learner()
    lr.take_events([event(0, "e0", T0, 1.0)])
    assert "e0" in lr.pending and lr.counters["learned"] == 0
    assert "e0" in lr.changes.added
    lr.take_labels([label(0, "e0", T0 + 5, True)])
    assert lr.counters["learned"] == 1 and not lr.pending
    assert "e0" not in lr.changes.added and lr.metrics.total().n == 1


def test_a_label_before_its_event_waits_and_later_labels_wait_behind_it() -> None:
    lr = learner()
    lr.take_events([event(0, "e1", T0, 0.2)])
    lr.take_labels([label(0, "e0", T0 + 10, True), label(1, "e1", T0 + 11, False)])
    assert lr.counters["learned"] == 0 and len(lr.waiting) == 2
    lr.take_events([event(1, "e0", T0 + 1, 0.9)])
    assert lr.counters["learned"] == 2 and not lr.waiting and not lr.pending


def test_label_for_an_unknown_event_is_rejected_once_events_pass_its_time() -> None:
    lr = learner()
    lr.take_labels([label(0, "ghost", T0 + 10, True)])
    assert lr.waiting and not lr.take_rejected()
    lr.take_events([event(0, "e1", T0 + 11, 0.5)])
    (rej,) = lr.take_rejected()
    assert (rej.topic, rej.offset, rej.reason_code) == (LB, 0, "label-unknown-event")
    assert lr.counters["label-unknown-event"] == 1 and not lr.waiting


def test_second_label_of_an_event_is_rejected_not_learned() -> None:
    lr = learner()
    lr.take_events([event(0, "e0", T0, 0.5)])
    lr.take_labels([label(0, "e0", T0 + 1, True), label(1, "e0", T0 + 2, False)])
    assert lr.counters["learned"] == 1 and lr.counters["label-not-pending"] == 1


def test_pending_events_expire_on_label_time_and_are_counted() -> None:
    lr = learner(ttl_ms=100)
    lr.take_events([event(0, "old", T0, 0.5), event(1, "new", T0 + 150, 0.5)])
    lr.take_labels([label(0, "new", T0 + 160, True)])  # horizon T0+60: "old" is past it
    assert lr.counters["expired"] == 1 and not lr.pending
    assert lr.changes.added == {} and lr.changes.removed == set()  # never checkpointed


def test_pending_store_is_bounded() -> None:
    lr = learner(max_pending=3)
    lr.take_events([event(i, f"e{i}", T0 + i, 0.5) for i in range(5)])
    assert list(lr.pending) == ["e2", "e3", "e4"] and lr.counters["evicted"] == 2


def test_duplicate_event_ids_are_rejected_within_and_across_batches() -> None:
    lr = learner()
    out = lr.take_events([event(0, "e0", T0, 0.5), event(1, "e0", T0, 0.5)])
    out += lr.take_events([event(2, "e0", T0, 0.5)])
    assert len(out) == 1 and lr.counters["duplicate-events"] == 2
    assert [r.reason_code for r in lr.take_rejected()] == ["duplicate-event"] * 2


def test_rejected_records_keep_their_kafka_key_and_bytes() -> None:
    """Dead letters lose nothing: a duplicate event and a label rejected batches after it
    was read carry the key and the bytes as consumed."""
    lr = learner()
    dup = event(1, "e0", T0, 0.5)
    dup.key = b"store-1"
    lr.take_events([event(0, "e0", T0, 0.5), dup])
    ghost = LabelIn(0, {"event_id": "ghost", "ts": T0 + 5, "label": True, "site_id": None},
                    raw=b"ghost-label-bytes", key=b"store-2")  # fmt: skip
    lr.take_labels([ghost])
    assert [(r.offset, r.key, r.value) for r in lr.take_rejected()] == [(1, b"store-1", b"raw-e0")]
    assert lr.waiting  # the label waits: its event may still come
    lr.take_events([event(2, "later", T0 + 10, 0.5)])  # the event watermark passes the label
    (rejected,) = lr.take_rejected()
    assert (rejected.reason_code, rejected.key, rejected.value) == (
        "label-unknown-event",
        b"store-2",
        b"ghost-label-bytes",
    )


def test_offsets_already_processed_are_skipped_not_relearned() -> None:
    lr = learner()
    lr.take_events([event(0, "e0", T0, 0.5, True), event(1, "e1", T0, 0.5, True)])
    out = lr.take_events([event(1, "e1", T0, 0.5, True), event(2, "e2", T0, 0.5, True)])
    assert [s.event_id for s in out] == ["e2"] and lr.counters["learned"] == 3
    assert lr.counters["replayed-skipped"] == 1 and lr.offsets[EV] == 3


def test_undecodable_records_keep_their_place_and_are_rejected_once() -> None:
    lr = learner()
    bad = EventIn(1, None, b"\x00junk", error=Undecodable("bad-marker", "not Avro"))
    lr.take_events([event(0, "e0", T0, 0.5, True), bad, event(2, "e2", T0, 0.5, True)])
    (rej,) = lr.take_rejected()
    assert (rej.offset, rej.value, rej.reason_code) == (1, b"\x00junk", "bad-marker")
    lr.take_events([bad])  # consumed again after a restart: already behind the position
    assert not lr.take_rejected() and lr.counters["learned"] == 2


def test_unsupervised_spec_learns_every_event_in_one_batch_call() -> None:
    lr = learner("iot-gauss")
    rng = np.random.default_rng(1)
    batch = [event(i, f"e{i}", T0 + i, float(v)) for i, v in enumerate(rng.normal(size=50))]
    lr.take_events(batch)
    ref = learner("iot-gauss")
    for e in batch:
        ref.spec.learn_one(ref.model, e.record["features"])
    assert lr.counters["learned"] == 50 and len(lr.pending) == 50  # held for the metric only
    assert_same_model(lr, ref)


def _log(n: int, seed: int) -> tuple[list[EventIn], list[LabelIn]]:
    """A partition's events (time order) and late labels (label-time order)."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(1, 50, size=n))
    due = ts + rng.integers(0, 400, size=n)
    events = [event(i, f"e{i}", int(ts[i]), float(rng.normal())) for i in range(n)]
    order = np.argsort(due, kind="stable")
    labels = [label(j, f"e{i}", int(due[i]), bool(rng.random() < 0.3)) for j, i in enumerate(order)]
    return events, labels


def _consume(
    lr: PartitionLearner, events: list, labels: list, choices: list[int], *, finish: bool = True
) -> None:
    """Feed the two topics in an interleaving and batch sizes drawn by ``choices``
    (then the rest of both, unless ``finish`` is False)."""
    ei = li = 0
    for c in choices + [10**6] * 2 * finish:
        size = 1 + c // 2
        if c % 2 == 0 and ei < len(events) or li >= len(labels):
            lr.take_events(events[ei : ei + size])
            ei += size
        else:
            lr.take_labels(labels[li : li + size])
            li += size
        if ei >= len(events) and li >= len(labels):
            return


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.lists(st.integers(0, 40), max_size=60))
def test_learn_order_does_not_depend_on_interleaving_or_batches(seed: int, choices: list) -> None:
    """The restart-exactness guarantee rests on this: same partition log, same model."""
    events, labels = _log(60, seed)
    canonical = learner(ttl_ms=300)
    canonical.take_events(events)
    canonical.take_labels(labels)
    other = learner(ttl_ms=300)
    _consume(other, events, labels, choices)
    assert_same_model(canonical, other)
    for key in ("learned", "expired", "label-not-pending", "label-unknown-event"):
        assert canonical.counters[key] == other.counters[key], key


def _restarted(lr: PartitionLearner) -> PartitionLearner:
    """A learner restored from what a checkpoint of ``lr`` keeps (no waiting label)."""
    again = learner(ttl_ms=300)
    again.restore(
        model=lr.spec.load(lr.spec.summarize(lr.model)),
        offsets=lr.resume_offsets(),
        pending=list(lr.pending.values()),
        labels_reread_until=lr.labels_consumed_until(),
        recent=list(lr.recent),
        event_watermark=lr.event_watermark,
        label_watermark=lr.label_watermark,
        counters=dict(lr.counters),
    )
    return again


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**16),
    st.lists(st.integers(0, 40), max_size=30),
    st.lists(st.integers(0, 40), max_size=30),
    st.integers(0, 5),
)
def test_a_restart_reads_the_waiting_labels_again_and_learns_the_same_model(
    seed: int, before: list, after: list, early: int
) -> None:
    """Checkpoint anywhere, restore, read from the resume offsets (the consumer may start
    ``early`` records before them): the same model and counters as without the restart."""
    events, labels = _log(60, seed)
    canonical = learner(ttl_ms=300)
    _consume(canonical, events, labels, before + after)
    first = learner(ttl_ms=300)
    _consume(first, events, labels, before, finish=False)
    again = _restarted(first)
    assert not again.waiting
    resume = first.resume_offsets()
    ev, lb = resume.get(EV, 0), resume.get(LB, 0)
    _consume(again, events[max(ev - early, 0) :], labels[max(lb - early, 0) :], after)
    assert_same_model(canonical, again)
    assert {k: v for k, v in again.counters.items() if k != "replayed-skipped" and v} == {
        k: v for k, v in canonical.counters.items() if v
    }


def test_resume_offsets_stop_at_the_oldest_waiting_label() -> None:
    lr = learner()
    assert lr.resume_offsets() == {} and lr.labels_consumed_until() == -1
    lr.take_events([event(0, "e0", T0, 0.1)])
    lr.take_labels([label(0, "e0", T0 + 1, True), label(1, "e9", T0 + 2, True)])
    assert lr.resume_offsets() == {EV: 1, LB: 1}  # e9's label waits: read again after a restart
    assert lr.offsets == {EV: 1, LB: 2} and lr.labels_consumed_until() == 2
    lr.take_events([event(1, "e9", T0 + 2, 0.1)])
    assert lr.resume_offsets() == {EV: 2, LB: 2}


def test_window_update_many_equals_row_by_row() -> None:
    from models.metrics import WindowedMetrics

    rng = np.random.default_rng(3)
    ts = (T0 + rng.integers(0, 10_000, size=300)).tolist()
    y, s = (rng.random(300) < 0.3).tolist(), rng.random(300).tolist()
    one, many = WindowedMetrics(1000, 4), WindowedMetrics(1000, 4)
    for row in zip(ts, y, s, strict=True):
        one.update(*row)
    many.update_many(ts, y, s)
    assert [(k, m.as_tuple()) for k, m in one.series()] == [
        (k, m.as_tuple()) for k, m in many.series()
    ]


def test_a_batch_learns_its_events_and_labels_in_one_learn_many_call(monkeypatch) -> None:
    """The worker's order (score, then learn with the batch's labels) pays learn_many's
    fixed cost once per partition and batch, not once for the events and again for labels."""
    lr = learner()
    lr.take_labels([label(0, "e0", T0 + 5, True)])  # waits for its event
    lr.take_events([event(0, "e1", T0, 0.2)])  # held for its late label
    calls: list[int] = []
    spec = type(lr.spec)
    learn_many = spec.learn_many
    monkeypatch.setattr(
        spec, "learn_many", lambda self, *a, **k: (calls.append(1), learn_many(self, *a, **k))
    )
    lr.score_events([event(1, "e0", T0 + 1, 0.3)])  # its waiting label resolves
    lr.learn_scored([label(1, "e1", T0 + 6, False)])  # and this one resolves e1
    assert len(calls) == 1 and lr.counters["learned"] == 2 and not lr.waiting


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**16), st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=40)
)
def test_learning_a_batchs_events_and_labels_together_changes_no_bit(seed: int, sizes) -> None:
    """score_events + learn_scored(labels) (the worker) == take_events + take_labels: the same
    scores, model (exactly), counters and rejections in the same order."""
    events, labels = _log(60, seed)
    apart, together = learner(ttl_ms=300), learner(ttl_ms=300)
    ei = li = 0
    for ne, nl in sizes + [(60, 60)]:
        ev, lb = events[ei : ei + ne], labels[li : li + nl]
        ei, li = ei + ne, li + nl
        scores_apart = [s.score for s in apart.take_events(ev)]
        apart.take_labels(lb)
        scores_together = [s.score for s in together.score_events(ev)]
        together.learn_scored(lb)
        assert scores_apart == scores_together
        assert apart.take_rejected() == together.take_rejected()
    a, b = tensors(apart), tensors(together)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # bit for bit
    assert apart.counters == together.counters
    assert apart.metrics.total().as_tuple() == together.metrics.total().as_tuple()

"""The central worker's parts on their own: intake routing, checkpoint cadence, shard summaries."""

from __future__ import annotations

import time

import pytest

from models.specs import get_spec
from runtime.metrics import BatchHistogram
from schemas import Codec
from streams.central.checkpointing import Checkpointer, Undelivered
from streams.central.intake import Intake, RecordIn
from streams.central.partition import EventIn, PartitionLearner
from streams.central.scores import ScorePublisher
from streams.central.summaries import SummaryPublisher

CODEC = Codec()
EV, LB = "tx", "labels"


def transaction(i: int, amount: float = 5.0) -> dict:
    return {"event_id": f"e{i}", "ts": 1_000 + i, "site_id": "s", "region": "r",
            "account_id": "a", "merchant_id": "m", "amount": amount, "currency": "EUR",
            "features": {"amount": float(i)}, "label": i % 2 == 0}  # fmt: skip


class Producer:
    def __init__(self, undelivered: int = 0) -> None:
        self.produced: list[tuple[str, bytes, bytes]] = []
        self.undelivered = undelivered
        self.callbacks: list = []  # the on_delivery of each produced record (None: not asked)

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery=None) -> None:
        self.produced.append((topic, value, key))
        self.callbacks.append(on_delivery)

    def ack(self, count: int, err: object = None) -> None:
        """The broker acknowledges the oldest ``count`` records not yet acknowledged."""
        for callback in self.callbacks[:count]:
            if callback is not None:
                callback(err, None)
        del self.callbacks[:count]

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.undelivered


def test_intake_routes_by_partition_and_keeps_bad_records_in_offset_order() -> None:
    intake = Intake(CODEC, events_topic=EV, event_schema="Transaction", dead=None)  # type: ignore[arg-type]
    label = CODEC.encode("Label", {"event_id": "e0", "ts": 1_001, "label": True})
    records = [
        RecordIn(EV, 0, 0, b"k", CODEC.encode("Transaction", transaction(0))),
        RecordIn(EV, 0, 1, b"k", b"\x00garbage"),
        RecordIn(EV, 1, 0, None, None),
        RecordIn(EV, 1, 1, None, CODEC.encode("Transaction", transaction(1, amount=-1.0))),
        RecordIn(LB, 0, 0, b"e0", label),
        RecordIn(EV, 2, 0, None, CODEC.encode("Transaction", transaction(2))),  # not owned
    ]
    events, labels = intake.route(records, {0: None, 1: None})
    assert sorted(events) == [0, 1] and list(labels) == [0]
    assert [e.offset for e in events[0]] == [0, 1]
    assert events[0][0].record["event_id"] == "e0" and events[0][1].error is not None
    assert [e.error.reason_code for e in events[1]] == ["empty", "out-of-range"]
    assert labels[0][0].record["event_id"] == "e0" and labels[0][0].key == b"e0"


def test_checkpoint_cadence_counts_records_and_never_runs_ahead_of_the_broker() -> None:
    class Store:
        saved = 0

        def save(self, learners: list) -> None:
            self.saved += 1

    store, producer = Store(), Producer(undelivered=3)
    cadence = Checkpointer(store, producer, every_records=10, every_s=3600)  # type: ignore[arg-type]
    assert not cadence.due()
    cadence.processed(10)
    assert cadence.due()
    with pytest.raises(Undelivered):
        cadence.save([])
    assert store.saved == 0 and cadence.due()
    producer.undelivered = 0
    cadence.save([])
    assert store.saved == 1 and not cadence.due()


def test_the_time_cadence_runs_from_the_first_record_not_covered(monkeypatch) -> None:
    """After an idle spell a batch is not checkpointed at once (its flush would hold
    the next records back), and no record waits uncovered longer than ``every_s``."""

    class Store:
        def save(self, learners: list) -> None:
            pass

    now = [1000.0]
    monkeypatch.setattr("streams.central.checkpointing.time.monotonic", lambda: now[0])
    cadence = Checkpointer(Store(), Producer(), every_records=10, every_s=2.0)  # type: ignore[arg-type]
    now[0] += 60.0  # idle for a minute
    cadence.processed(1)
    assert not cadence.due()
    now[0] += 1.5
    cadence.processed(1)  # a later record does not move the clock
    assert not cadence.due()
    now[0] += 0.5
    assert cadence.due()  # two seconds after the first uncovered record
    cadence.save([])
    now[0] += 5.0
    cadence.processed(1)
    assert not cadence.due()


def test_a_learner_taken_back_after_a_loss_is_owed_a_checkpoint() -> None:
    """Its tail is in no checkpoint, though no record came since the last (empty) one."""

    class Store:
        def save(self, learners: list) -> None:
            pass

    cadence = Checkpointer(Store(), Producer(), every_records=10, every_s=0.0)  # type: ignore[arg-type]
    cadence.save([])  # the learners were gone: nothing to write, and nothing owed
    assert not cadence.due()
    cadence.owe()
    assert cadence.due()
    cadence.save([])
    assert not cadence.due()


def test_shard_summaries_carry_the_partition_metrics_and_worker_for_the_merger() -> None:
    spec = get_spec("fraud-linear")
    learners = [PartitionLearner(spec, p, events_topic=EV, labels_topic=LB) for p in range(2)]
    learners[0].take_events(
        [EventIn(i, transaction(i), b"") for i in range(4)]
        + [EventIn(4, dict(transaction(4), label=None), b"")]
    )
    producer = Producer()
    publisher = SummaryPublisher(spec, producer, "updates", codec=CODEC, group="g", worker="w1",
                                 every_s=10)  # fmt: skip
    assert publisher.publish(learners) == 1  # partition 1 learned nothing: no summary
    [(topic, value, key)] = producer.produced
    record = CODEC.decode(value, expected="WeightSummary")
    assert topic == "updates" and key == b"g/p0" and record["tier"] == "central"
    assert record["meta"] == {"worker": "w1", "partition": "0", "stats": "cumulative"}
    assert record["metrics"]["learned"] == 4 and record["metrics"]["pending"] == 1
    assert record["metrics"]["scored"] == 5 and "roc_auc" in record["metrics"]
    first = record["sequence"]
    publisher.publish(learners)
    assert CODEC.decode(producer.produced[-1][1])["sequence"] > first


def _published(stamps: list[float]) -> tuple[Producer, BatchHistogram]:
    learner = PartitionLearner(get_spec("fraud-linear"), 0, events_topic=EV, labels_topic=LB)
    scored = learner.take_events(
        [EventIn(i, transaction(i), b"", int(ts)) for i, ts in enumerate(stamps)]
    )
    latency = BatchHistogram("x_seconds", "doc", (1.0, 25.0, 60.0), {})
    producer = Producer()
    publisher = ScorePublisher(
        producer, "scores", codec=CODEC, node_id="w1", model_name="fraud-linear", latency=latency
    )
    assert publisher.publish(scored) == len(stamps)
    return producer, latency


def test_score_latency_is_binned_per_batch_from_each_events_kafka_timestamp() -> None:
    now_ms = time.time() * 1000
    producer, latency = _published([now_ms - 30_000] * 3 + [0])  # 0: no timestamp
    producer.ack(4)
    # three events 30 s old, in (25, 60]; the one without a timestamp is not measured
    assert latency.counts.tolist() == [0, 0, 3, 0]
    assert 90 <= latency.sum < 100


def test_score_latency_runs_to_the_batchs_last_ack_not_to_the_produce_call() -> None:
    """Event produced -> score *delivered*: nothing counts until every score is acked,
    and the wait for the acks is in the figure."""
    now_ms = time.time() * 1000
    producer, latency = _published([now_ms - 500] * 3)
    producer.ack(2)
    assert latency.counts.sum() == 0, "binned before the batch's last score was delivered"
    time.sleep(0.6)  # the broker is slow: the last ack comes ~1.1 s after the events
    producer.ack(1)
    assert latency.counts.tolist() == [0, 3, 0, 0]  # > 1 s: in (1, 25]
    assert 3.3 <= latency.sum < 4


def test_a_batch_with_a_failed_delivery_is_not_measured() -> None:
    producer, latency = _published([time.time() * 1000 - 10] * 2)
    producer.ack(1, err="fatal")
    producer.ack(1)
    assert latency.counts.sum() == 0


def test_no_timestamps_no_delivery_callbacks() -> None:
    producer, latency = _published([0, 0])
    assert producer.callbacks == [None, None]


def _worker(producer: Producer):
    import redis

    from streams.central.checkpoint import CheckpointStore
    from streams.central.config import CentralConfig
    from streams.central.worker import CentralWorker, Topics
    from streams.telemetry import Telemetry

    store = CheckpointStore(redis.Redis(), group="g", worker_id="w1", event_schema="Transaction")
    topics = Topics(EV, LB, "scores", "updates", "dead")
    worker = CentralWorker(CentralConfig(worker_id="w1"), topics, producer=producer, store=store,
                           codec=CODEC, telemetry=Telemetry("central-fraud"))  # fmt: skip
    worker.learners = {p: PartitionLearner(worker.spec, p, events_topic=EV, labels_topic=LB)
                       for p in (0, 1)}  # fmt: skip
    return worker


def _batch(start: int) -> list[RecordIn]:
    encode = CODEC.encode
    return [RecordIn(EV, i % 2, start + i // 2, b"k", encode("Transaction", transaction(start + i)))
            for i in range(6)]  # fmt: skip


def test_every_partitions_scores_are_produced_before_any_partition_learns(monkeypatch) -> None:
    producer = Producer()
    worker = _worker(producer)
    produced_at_learning: list[int] = []
    learn = PartitionLearner.learn_scored

    def spy(self: PartitionLearner, labels=()) -> None:
        produced_at_learning.append(len(producer.produced))
        learn(self, labels)

    monkeypatch.setattr(PartitionLearner, "learn_scored", spy)
    assert worker.process(_batch(0)) == 6
    assert produced_at_learning == [6, 6]  # both partitions' 3 scores, before either learned


def test_scoring_all_partitions_first_gives_the_per_partition_scores_and_models() -> None:
    """Exactness: the split (score every partition, then learn) equals take_events per partition."""
    worker = _worker(Producer())
    spec = worker.spec
    alone = {p: PartitionLearner(spec, p, events_topic=EV, labels_topic=LB) for p in (0, 1)}
    for start in (0, 6, 12):
        batch = _batch(start)
        worker.process(batch)
        events, _ = worker.intake.route(batch, alone)
        for p, learner in alone.items():
            learner.take_events(events[p])
    for p, learner in alone.items():
        assert spec.summarize(worker.learners[p].model) == spec.summarize(learner.model)
    scores = [CODEC.decode(v)["score"] for _, v, _ in worker.producer.produced]
    again = {p: PartitionLearner(spec, p, events_topic=EV, labels_topic=LB) for p in (0, 1)}
    expected = []
    for start in (0, 6, 12):
        events, _ = worker.intake.route(_batch(start), again)
        for p in (0, 1):
            expected += [s.score for s in again[p].take_events(events[p])]
    assert scores == expected

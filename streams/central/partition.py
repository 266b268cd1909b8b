"""One partition's prequential learner: score, wait for the label, learn.

Pure state machine (no Kafka, Faust or Redis) in the Bytewax spirit: the
worker feeds it decoded records with their offsets and publishes what it
returns. Keeping one learner per partition is what makes restarts exact and
rebalances safe: a partition's state moves with the partition, and its learn
order depends only on that partition's records, never on how the consumer
interleaves partitions or topics.

Learn order, per partition:

- unsupervised specs (``iot-*``) learn every event in event-offset order;
- supervised specs (``fraud-linear``) learn an event with an inline label in
  event-offset order, and an event with a late label in *label*-offset order.
  A label consumed before its event waits at the head of a queue (later labels
  wait behind it) until the event arrives, or until the partition's event
  watermark has passed the label's time, which proves (events being in time
  order within a partition) that the event is unknown here.

Labels waiting for their events are not copied into the checkpoint: they are
a contiguous run of the labels topic (they resolve from the head, in offset
order), so the checkpoint's labels offset is the head's offset, and a restart
reads them again from Kafka (:meth:`PartitionLearner.resume_offsets`). Labels
between there and where reading had got to (:attr:`PartitionLearner.labels_reread_until`)
are read a second time without being counted or dead-lettered twice.

Pending events (scored, label not yet known) expire on *label* time: once a
label at ``ts`` is processed, events older than ``ts - ttl`` can no longer be
labelled in time. Expiry, like learning, then depends only on the partition's
own records. The store is also bounded by ``max_pending`` (oldest evicted,
counted); only eviction under overflow depends on consumption timing.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from models.metrics import WindowedMetrics
from models.specs import ModelSpec


@dataclass(frozen=True)
class Undecodable:
    """Why a record could not be decoded (a codec reason code and message)."""

    reason_code: str
    reason: str


@dataclass(slots=True)  # not frozen: built per record, frozen costs 4x
class EventIn:
    """A decoded event (Transaction or SensorReading) at its Kafka position.

    ``record`` is None when decoding failed (``error`` says why): the record
    still takes its place in the partition's offset order, so it is
    dead-lettered exactly when it is first consumed, never again on a replay.
    """

    offset: int
    record: Mapping[str, Any] | None
    raw: bytes | None
    timestamp_ms: int = 0
    error: Undecodable | None = None
    key: bytes | None = None  # the Kafka key, for a dead letter


@dataclass(slots=True)  # not frozen: built per record, frozen costs 4x
class LabelIn:
    offset: int
    record: Mapping[str, Any] | None
    raw: bytes | None = None
    error: Undecodable | None = None
    key: bytes | None = None


@dataclass(slots=True)  # not frozen: built per record, frozen costs 4x
class ScoredEvent:
    """What the worker turns into a ``Score`` record."""

    event_id: str
    ts: int
    score: float
    label: bool | None
    timestamp_ms: int = 0


@dataclass(slots=True)
class Pending:
    """A scored event waiting for its label; ``raw`` is what the checkpoint stores."""

    event_id: str
    ts: int
    offset: int
    score: float
    #: the features as scored, ``tuple(x)`` and ``list(x.values())``: what learning takes
    keys: tuple[str, ...]
    values: list[float]
    raw: bytes


@dataclass(slots=True)
class WaitingLabel:
    """A label read before its event; ``raw`` and ``key`` as consumed, for a dead letter.

    Lives in memory only: a restart reads it again from the labels topic.
    """

    event_id: str
    ts: int
    label: bool
    offset: int
    raw: bytes | None = None
    key: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    """Hyper-parameters of the join, not of the model."""

    ttl_ms: int = 24 * 3_600_000
    max_pending: int = 200_000
    #: labels read before their events; past this the engine stops reading labels
    #: (pauses the partition) until events catch up -- nothing is dropped
    max_waiting: int = 50_000
    recent_size: int = 10_000
    window_ms: int = 3_600_000
    window_periods: int = 24


@dataclass(frozen=True)
class Rejected:
    """A record the learner refused after decoding; the worker dead-letters it."""

    topic: str
    offset: int
    value: bytes | None
    record: Mapping[str, Any] | None
    reason_code: str
    reason: str
    key: bytes | None = None


@dataclass
class Changes:
    """Pending-store and recent-id changes since the last checkpoint.

    Checkpoints write only these (incremental writes), so a checkpoint costs
    what the interval changed, not the size of the stores.
    """

    added: dict[str, Pending] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    recent: list[str] = field(default_factory=list)

    def remove(self, event_id: str) -> None:
        if self.added.pop(event_id, None) is None:
            self.removed.add(event_id)

    def after(self, older: Changes) -> Changes:
        """``older`` then these, as one set of changes (a failed write's, given back).

        An id added by ``older`` and removed since is written as removed: HDEL of
        a field that is not there is harmless, and right if ``older`` was in fact
        stored (a transaction whose reply was lost)."""
        removed = (older.removed | self.removed) - self.added.keys()
        added = {e: p for e, p in older.added.items() if e not in self.removed}
        return Changes({**added, **self.added}, removed, older.recent + self.recent)


class PartitionLearner:
    """Prequential learning for one partition of the events and labels topics."""

    def __init__(
        self,
        spec: ModelSpec,
        partition: int,
        *,
        events_topic: str,
        labels_topic: str,
        config: LearnerConfig | None = None,
    ) -> None:
        self.spec = spec
        self.partition = partition
        self.events_topic, self.labels_topic = events_topic, labels_topic
        self.config = config or LearnerConfig()
        self.model = spec.new_model()
        #: topic -> next offset to process; absent until the first record.
        self.offsets: dict[str, int] = {}
        self.pending: dict[str, Pending] = {}
        self.waiting: deque[WaitingLabel] = deque()
        self.recent: deque[str] = deque(maxlen=self.config.recent_size)
        #: event id -> times in :attr:`recent` (a plain dict: Counter's Python-level
        #: __missing__/__delitem__ cost a measurable share of the hot path)
        self._recent_set: dict[str, int] = {}
        self.event_watermark = -1
        self.label_watermark = -1
        self.counters: Counter[str] = Counter()
        self.metrics = WindowedMetrics(self.config.window_ms, self.config.window_periods)
        self.changes = Changes()
        #: labels below this offset were read before the checkpoint this learner was
        #: restored from: reading them again counts and dead-letters nothing twice
        self.labels_reread_until = -1
        self.rejected: list[Rejected] = []
        self._to_measure: list[tuple[int, bool, float]] = []
        self._to_learn_keys: list[tuple[str, ...]] = []
        self._to_learn_values: list[list[float]] = []
        self._to_learn_y: list[bool | None] = []
        #: an unsupervised batch of one feature set, scored and not learned yet
        self._learn_batch: tuple[Any, tuple[str, ...]] | None = None

    # -- positions -----------------------------------------------------------
    def unseen(self, topic: str, offset: int, *, count_gaps: bool = True) -> bool:
        """True (and the position advances) unless ``offset`` was already processed.

        After a restart the consumer re-reads from its committed offset, which
        may lag the checkpoint; those records are skipped here, so none is
        learned twice. ``count_gaps=False`` for a label read a second time (its
        gap was counted when it was first read).
        """
        expected = self.offsets.get(topic)
        if expected is not None and offset < expected:
            self.counters["replayed-skipped"] += 1
            return False
        if count_gaps and expected is not None and offset > expected:
            self.counters["offset-gaps"] += 1
        self.offsets[topic] = offset + 1
        return True

    def resume_offsets(self) -> dict[str, int]:
        """Where a restart from a checkpoint taken now starts reading, per topic.

        Events: after the last one processed. Labels: at the oldest label still
        waiting for its event, so the waiting labels are read again from Kafka
        instead of resting in the checkpoint. Kafka commits use these offsets too.
        """
        resume = dict(self.offsets)
        if self.waiting:
            resume[self.labels_topic] = self.waiting[0].offset
        return resume

    def labels_consumed_until(self) -> int:
        """The next label offset this learner has not read (-1: none read)."""
        return max(self.offsets.get(self.labels_topic, -1), self.labels_reread_until)

    # -- events --------------------------------------------------------------
    def take_events(self, events: Iterable[EventIn]) -> list[ScoredEvent]:
        """Score a mini-batch with the current model, then learn what can be learned."""
        out = self.score_events(events)
        self.learn_scored()
        return out

    def score_events(self, events: Iterable[EventIn]) -> list[ScoredEvent]:
        """Score a mini-batch with the current model; :meth:`learn_scored` learns it.

        Split so a worker hands every partition's scores to the producer before
        any partition learns (score latency); the pair is :meth:`take_events`,
        and nothing may touch this learner in between.

        For every scored event: remember its id (duplicate detection), queue it
        for learning (inline label) or hold it in the pending store (late
        label). This and :meth:`_drain` run for every event and label, so that
        bookkeeping is written inline, on locals: method calls per record were
        a measurable share of the worker's time.
        """
        batch = self._admit(events)
        if not batch:
            return []
        keys, values, groups = self._groups(batch)
        scores = np.empty(len(batch))
        for features, (rows, X) in groups.items():
            scores[rows] = self.spec.score_many(self.model, X, features)
        supervised = self.spec.supervised
        learn_batch = not supervised and len(groups) == 1
        learn_each = not supervised and not learn_batch
        out: list[ScoredEvent] = []
        watermark = self.event_watermark
        recent, seen, remembered = self.recent, self._recent_set, self.changes.recent
        full = recent.maxlen
        pending, added, removed = self.pending, self.changes.added, self.changes.removed
        to_measure = self._to_measure
        learn_keys, learn_values, learn_y = (
            self._to_learn_keys,
            self._to_learn_values,
            self._to_learn_y,
        )
        queued = len(learn_y)
        labelled = 0
        for event, score, k, v in zip(batch, scores.tolist(), keys, values, strict=True):
            r = event.record
            eid, ts, label = r["event_id"], r["ts"], r.get("label")
            out.append(ScoredEvent(eid, ts, score, label, event.timestamp_ms))
            if ts > watermark:
                watermark = ts
            if len(recent) == full:  # the oldest id leaves the recent window
                old = recent[0]
                left = seen[old] - 1
                if left:
                    seen[old] = left
                else:
                    del seen[old]
            recent.append(eid)
            seen[eid] = seen.get(eid, 0) + 1
            remembered.append(eid)
            if learn_each:  # queued in learn order; _flush_learning learns them in one call
                learn_keys.append(k)
                learn_values.append(v)
                learn_y.append(None)
            if label is not None:
                to_measure.append((ts, label, score))
                labelled += 1
                if supervised:
                    learn_keys.append(k)
                    learn_values.append(v)
                    learn_y.append(label)
            else:  # held for its late label
                held = Pending(eid, ts, event.offset, score, k, v, event.raw)
                pending[eid] = added[eid] = held
                removed.discard(eid)
        self.event_watermark = watermark
        counters = self.counters
        counters["scored"] += len(batch)
        counters["labelled"] += labelled
        counters["learned"] += len(learn_y) - queued
        if len(remembered) > 2 * self.config.recent_size:  # checkpoints postponed (Redis
            del remembered[: -self.config.recent_size]  # away): trimmed to this anyway
        self._evict()
        if learn_batch:  # one feature set: the spec's batch path, same order
            ((features, (_, X)),) = groups.items()
            self._learn_batch = (X, features)
            counters["learned"] += len(batch)
        return out

    def learn_scored(self, labels: Iterable[LabelIn] = ()) -> None:
        """Learn what :meth:`score_events` queued, resolve the labels it unblocked, then
        take the batch's ``labels`` (:meth:`take_labels`).

        One ``learn_many`` and one metrics update for all of it: at the head of
        the topics a batch holds a few records per partition, and those calls'
        fixed cost (the model's state copied in and out, numpy set-up) was paid
        twice per partition per batch. The learn queue holds the same rows in
        the same order as the two calls did, so the model is the same.
        """
        if self._learn_batch is not None:
            X, features = self._learn_batch
            self._learn_batch = None
            self.spec.learn_many(self.model, X, features=features)
        self._drain()
        self._queue_labels(labels)
        self._flush_learning()
        self._measure()

    def _admit(self, events: Iterable[EventIn]) -> list[EventIn]:
        """The events to score: not processed before (:meth:`fresh`), decoded, no duplicate."""
        topic, counters = self.events_topic, self.counters
        expected = self.offsets.get(topic)
        pending, seen = self.pending, self._recent_set
        batch: list[EventIn] = []
        in_batch: set[str] = set()
        for e in events:
            offset = e.offset
            if expected is not None:
                if offset < expected:
                    counters["replayed-skipped"] += 1
                    continue
                if offset > expected:
                    counters["offset-gaps"] += 1
            expected = offset + 1
            r = e.record
            if r is None:
                self._undecodable(topic, offset, e.raw, e.error, e.key)
                continue
            eid = r["event_id"]
            if eid in in_batch or eid in pending or eid in seen:
                self._duplicate(e, eid)
                continue
            in_batch.add(eid)
            batch.append(e)
        if expected is not None:
            self.offsets[topic] = expected
        return batch

    def _duplicate(self, event: EventIn, eid: str) -> None:
        self.counters["duplicate-events"] += 1
        self.rejected.append(
            Rejected(
                self.events_topic,
                event.offset,
                event.raw,
                None,
                "duplicate-event",
                f"event id {eid!r} was already scored in partition {self.partition}",
                event.key,
            )
        )

    @staticmethod
    def _groups(
        batch: list[EventIn],
    ) -> tuple[
        list[tuple[str, ...]],
        list[list[float]],
        dict[tuple[str, ...], tuple[list[int], np.ndarray]],
    ]:
        """Each event's key tuple and value row, and the rows by feature set as matrices.

        Rows with other keys are never zero-filled. Events with the same keys in
        the same order share one key tuple (learning groups them by identity);
        the same set in another order is a group of its own.
        """
        keys: list[tuple[str, ...]] = []
        values: list[list[float]] = []
        rows: dict[tuple[str, ...], list[int]] = {}
        shared: tuple[str, ...] = ()
        for i, e in enumerate(batch):
            x = e.record["features"]
            k = tuple(x)
            idx = rows.get(k)
            if idx is None:
                rows[k] = idx = []
                shared = k
            elif k != shared:  # not the previous event's set: find the one stored
                shared = next(known for known in rows if known == k)
            keys.append(shared)
            values.append(list(x.values()))
            idx.append(i)
        groups = {  # fromiter over the flat rows: ~40 % cheaper than np.array(list of lists)
            features: (
                idx,
                np.fromiter(
                    chain.from_iterable([values[i] for i in idx]),
                    np.float64,
                    len(idx) * len(features),
                ).reshape(len(idx), len(features)),
            )
            for features, idx in rows.items()
        }
        return keys, values, groups

    def _flush_learning(self) -> None:
        """Learn what a take_* call resolved, through the spec's compiled batch path."""
        if self._to_learn_y:
            keys, values, ys = self._to_learn_keys, self._to_learn_values, self._to_learn_y
            self._to_learn_keys, self._to_learn_values, self._to_learn_y = [], [], []
            self.spec.learn_many(self.model, values, ys, features=keys)

    def _measure(self) -> None:
        """Fold the labelled scores of a take_* call into the window in one update."""
        if self._to_measure:
            ts, y, s = zip(*self._to_measure, strict=True)
            self.metrics.update_many(ts, y, s)
            self._to_measure.clear()

    def _evict(self) -> None:
        """Bound the pending store: past ``max_pending`` the oldest go (counted)."""
        pending, bound = self.pending, self.config.max_pending
        while len(pending) > bound:
            self._drop(next(iter(pending)), "evicted")

    def _drop(self, event_id: str, why: str) -> None:
        del self.pending[event_id]
        self.changes.remove(event_id)
        self.counters[why] += 1

    # -- labels --------------------------------------------------------------
    def take_labels(self, labels: Iterable[LabelIn]) -> None:
        """Join a batch of labels with their events and learn what they resolve."""
        self._queue_labels(labels)
        self._flush_learning()
        self._measure()

    def _queue_labels(self, labels: Iterable[LabelIn]) -> None:
        """Queue the labels behind those waiting, then resolve what can be (not learned yet)."""
        topic, reread_until = self.labels_topic, self.labels_reread_until
        for item in labels:
            first_read = item.offset >= reread_until  # else counted before the restore
            if not self.unseen(topic, item.offset, count_gaps=first_read):
                continue
            r = item.record
            if r is None:
                if first_read:  # else dead-lettered when first read
                    self._undecodable(topic, item.offset, item.raw, item.error, item.key)
                continue
            ts = int(r["ts"])
            self.label_watermark = max(self.label_watermark, ts)
            self.waiting.append(
                WaitingLabel(r["event_id"], ts, bool(r["label"]), item.offset, item.raw, item.key)
            )
        self._drain()

    def _drain(self) -> None:
        """Resolve waiting labels in label-offset order; stop at one whose event may still come.

        Runs for every label: written on locals, like :meth:`take_events`.
        """
        waiting, pending, seen = self.waiting, self.pending, self._recent_set
        if not waiting:
            return
        forget = self.changes.remove
        supervised = self.spec.supervised
        to_measure = self._to_measure
        learn_keys, learn_values, learn_y = (
            self._to_learn_keys,
            self._to_learn_values,
            self._to_learn_y,
        )
        ttl = self.config.ttl_ms
        resolved = 0
        while waiting:
            head = waiting[0]
            if pending and next(iter(pending.values())).ts < head.ts - ttl:
                self._expire(head.ts)
            eid = head.event_id
            held = pending.pop(eid, None)
            if held is not None:
                forget(eid)
                to_measure.append((held.ts, head.label, held.score))
                resolved += 1
                if supervised:
                    learn_keys.append(held.keys)
                    learn_values.append(held.values)
                    learn_y.append(head.label)
            elif eid in seen:
                self._reject_label(
                    head,
                    "label-not-pending",
                    "its event was labelled inline, already labelled or expired",
                )
            elif self.event_watermark > head.ts:
                self._reject_label(
                    head,
                    "label-unknown-event",
                    "no event with this id came before the label's time",
                )
            else:
                break
            waiting.popleft()
        if resolved:
            self.counters["labelled"] += resolved
            if supervised:
                self.counters["learned"] += resolved

    def _reject_label(self, head: WaitingLabel, code: str, why: str) -> None:
        self.counters[code] += 1
        # a label restored from a checkpoint of the older layout has no raw bytes: the
        # worker re-encodes this record then
        record = {"event_id": head.event_id, "ts": head.ts, "label": head.label, "site_id": None}
        self.rejected.append(
            Rejected(
                self.labels_topic,
                head.offset,
                head.raw,
                record,
                code,
                f"label for {head.event_id!r}: {why}",
                head.key,
            )
        )

    def _undecodable(
        self, topic: str, offset: int, raw: bytes | None, error: Any, key: bytes | None
    ) -> None:
        code, why = (error.reason_code, error.reason) if error else ("undecodable", "no reason")
        self.counters[f"bad-{code}"] += 1
        self.rejected.append(Rejected(topic, offset, raw, None, code, why, key))

    def _expire(self, label_ts: int) -> None:
        horizon = label_ts - self.config.ttl_ms
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if oldest.ts >= horizon:
                return
            self._drop(oldest.event_id, "expired")

    # -- checkpoints ---------------------------------------------------------
    def take_changes(self) -> Changes:
        """The changes a checkpoint being written holds; later ones start afresh.

        A write that fails gives them back (:meth:`give_back`), so the next
        checkpoint holds them again."""
        taken, self.changes = self.changes, Changes()
        return taken

    def give_back(self, taken: Changes) -> None:
        """A failed checkpoint's changes, back in front of those made since."""
        self.changes = self.changes.after(taken)

    def take_rejected(self) -> list[Rejected]:
        """Records refused since the last call, for the dead-letter topic."""
        rejected, self.rejected = self.rejected, []
        return rejected

    def restore(
        self,
        *,
        model: Any,
        offsets: Mapping[str, int],
        pending: Iterable[Pending],
        waiting: Iterable[WaitingLabel] = (),
        labels_reread_until: int = -1,
        recent: Iterable[str],
        event_watermark: int,
        label_watermark: int,
        counters: Mapping[str, int],
    ) -> None:
        """Load a checkpoint's state (the checkpoint module decodes it).

        ``offsets`` are the checkpoint's :meth:`resume_offsets`;
        ``labels_reread_until`` its :meth:`labels_consumed_until`. ``waiting``:
        labels a checkpoint of an older layout stored (now they are read again).
        """
        self.model = model
        self.offsets = dict(offsets)
        self.labels_reread_until = labels_reread_until
        self.pending = {p.event_id: p for p in sorted(pending, key=lambda p: p.offset)}
        self.waiting = deque(waiting)
        self.recent.clear()
        self.recent.extend(recent)  # the newest recent_size
        self._recent_set = dict(Counter(self.recent))
        self.event_watermark, self.label_watermark = event_watermark, label_watermark
        self.counters = Counter(dict(counters))
        self.changes = Changes()

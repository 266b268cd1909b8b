"""The edge agent's loop: read -> score -> send the score -> learn; cut, save, send.

Per local event: score it with the best model the learner has (blend, global
or local fallback), send the score (topic or offline file), forward the raw
event in hybrid mode, then learn it (or wait for its label). Every N events
or T seconds: cut an increment, save it *with* the state and the read
position in one SQLite transaction, and let the sender deliver it.

Between events (every ``tick_s``): serve producer callbacks, poll for global
models (adopting a newer one saves the state too), resend unsent summaries,
drain buffered forwards. At the end of a file, or on SIGTERM: a last cut, then
up to ``drain_timeout_s`` to deliver what waits; undelivered rows stay in the
outbox for the next start.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge_agents.bugs import BugFence
from edge_agents.canary import CanaryRun
from edge_agents.config import EdgeConfig
from edge_agents.controls import Admission, FleetControls
from edge_agents.learner import EdgeLearner
from edge_agents.link import Link
from edge_agents.outbox import Outbox
from edge_agents.sinks import Forwarder, LocalDeadLetters, ScoreSink, SummarySender
from edge_agents.sources import Item, millis
from models.errors import ModelError
from models.metrics import WindowedMetrics
from models.packing import layout_id_of, layout_of
from models.serialization import GlobalModelInfo, weight_summary_record
from runtime.metrics import CHECKPOINT_BUCKETS, LATENCY_BUCKETS, BatchHistogram
from runtime.stopping import GracefulStop
from schemas import Codec, SchemaError
from schemas.signing import Signer

log = logging.getLogger(__name__)

__all__ = ["EdgeAgent", "Parts"]


@dataclass(kw_only=True)
class Parts:
    """The agent's adapters, made by :mod:`edge_agents.run` (or a test)."""

    learner: EdgeLearner
    outbox: Outbox
    link: Link
    scores: ScoreSink
    sender: SummarySender  # or edge_agents.secagg.SecureSender (--secure-agg)
    globals_: Any  # TopicGlobals | RegistryGlobals
    forwarder: Forwarder | None
    dead: LocalDeadLetters
    codec: Codec
    signer: Signer | None = None  # signs each summary before the outbox stores it
    controls: FleetControls | None = None  # operators' pin and quarantine (registry)


class EdgeAgent(GracefulStop):
    stop_reason = "finishing with a last summary"
    tick_s = 0.2
    quality_metrics = ("roc_auc", "f1", "precision", "recall")
    max_ungraded = 100_000  # scores kept for a late label (the oldest go first)

    def __init__(self, config: EdgeConfig, parts: Parts) -> None:
        self.config, self.parts = config, parts
        self.learner = parts.learner
        self.position: Any = 0
        self.events = 0
        self.by_source: Counter[str] = Counter()
        self.summaries_cut = 0
        self._events_since_cut = 0
        self._event_ts: int | None = None  # event time of the last event read (summaries carry it)
        self._last_cut = self._last_tick = time.monotonic()
        self._stopping = False
        self._unsent = 0
        self._dp_told = False  # the budget-spent message is logged once
        self.bugs = BugFence(limit=config.max_bugs_in_row)
        # prequential quality of the scores this node sent, by event time: the last 24 hours,
        # as the central worker keeps it (the dashboard sets the architectures side by side)
        self.quality = WindowedMetrics(period_ms=3_600_000, n_periods=24)
        self._ungraded: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._refused: tuple[int, str] | None = None  # the last refusal logged
        self.admission = Admission(config.node_id)  # pins, quarantine, staged rollouts
        self.canary_run: CanaryRun | None = None  # a canary's new-vs-previous measurement
        self.provenance: dict[str, str] = {}  # how the global in use came to be (Score)
        node = {"node": config.node_id}
        self.score_latency = BatchHistogram(
            "prism_edge_score_latency_seconds",
            "An event's Kafka timestamp (a log line: when it was read) to its score sent.",
            LATENCY_BUCKETS,
            node,
        )
        self.save_seconds = BatchHistogram(
            "prism_edge_checkpoint_duration_seconds",
            "Saving state, position and summary: producer flush, then one SQLite transaction.",
            CHECKPOINT_BUCKETS,
            node,
        )

    # -- life cycle -----------------------------------------------------------
    def restore(self) -> Any:
        """Load the saved state; returns the read position to resume after."""
        saved = self.parts.outbox.load()
        if saved is None:
            return None
        self.learner.restore(saved.state)
        self.position = saved.position
        unacked = self.parts.outbox.unacked_scores()
        if unacked:  # scored before the crash, never confirmed: the same scores again
            log.info("resending %d scores the last save held unacknowledged", len(unacked))
            self.parts.scores.resend(unacked)
        log.info(
            "edge state restored node=%s sequence=%s global_version=%s position=%s unsent=%s",
            self.config.node_id,
            saved.state.sequence,
            saved.state.global_version,
            saved.position,
            self.parts.outbox.counts()["unsent"],
        )
        return saved.position

    def run(self, source: Iterable[Item | None]) -> int:
        log.info(
            "edge agent running node=%s model=%s mode=%s source=%s linked=%s",
            self.config.node_id,
            self.learner.spec.name,
            self.config.mode,
            self.config.source,
            self.parts.link.up,
        )
        self.parts.sender.pump()
        for item in source:
            if item is not None:
                self.guarded(item)
            now = time.monotonic()
            if now - self._last_tick >= self.tick_s:
                self.tick(now)
            if self._stopping:
                break
        self.finish()
        return 0

    def finish(self) -> None:
        self.cut_and_save(hold=False)  # nothing learned stays unsent when a node stops
        deadline = time.monotonic() + self.config.drain_timeout_s
        while time.monotonic() < deadline:
            self.tick(time.monotonic(), wait=True)
            done = self.parts.sender.idle and not (
                self.parts.forwarder and self.parts.outbox.forward_batch(1)
            )
            if done and self.parts.link.producer.flush(1.0) == 0:
                break
        remaining = self.parts.link.close(timeout=5.0 if self.parts.link.up else 0.1)
        self.parts.outbox.save_unacked(self.parts.scores.pending.snapshot())  # for the next start
        counts = self.parts.outbox.counts()
        log.info(
            "edge agent done node=%s events=%s scores=%s offline_scores=%s summaries=%s "
            "unsent=%s undelivered=%s dead_letters=%s learned=%s",
            self.config.node_id,
            self.events,
            dict(self.by_source),
            self.parts.scores.offline,
            counts["summaries"],
            counts["unsent"],
            remaining,
            sum(self.parts.dead.by_reason.values()),
            self.learner.counts["learned"],
        )
        self.parts.scores.close()
        self.parts.dead.close()
        self.parts.globals_.close()
        close_sender = getattr(self.parts.sender, "close", None)
        if close_sender is not None:  # the secure sender reads the rounds topic
            close_sender()
        if self.parts.controls is not None:
            self.parts.controls.close()
        self.parts.outbox.close()

    # -- per event ------------------------------------------------------------
    def guarded(self, item: Item) -> None:
        """:meth:`handle` inside the bug boundary (see :mod:`edge_agents.bugs`)."""
        try:
            self.handle(item)
        except Exception as e:  # noqa: BLE001 - the boundary: bad records never get here
            trip = self.bugs.tripped(e)
            log.error(
                "internal error node=%s trace_id=%s where=%s",
                self.config.node_id,
                trip.trace_id,
                item.position if item.where is None else item.where,
                exc_info=e,
            )
            self.parts.dead.add(
                reason_code="internal-error",
                reason=f"{trip.error_type}: {trip.message}",
                where=item.position if item.where is None else item.where,
                raw=item.raw if item.raw is not None else self._encoded(item),
                extra={"error_type": trip.error_type, "trace_id": trip.trace_id},
            )
            self.position = item.position  # the record is set aside: read past it
            if self.bugs.over:
                self._finish_after_bugs()
                raise self.bugs.stop(trip) from e
            self._save(None)  # a crash now does not bring the record back
        else:
            self.bugs.passed()

    def _finish_after_bugs(self) -> None:
        """A last cut and drain, so what was learned before the bug is not lost; a bug
        there too must not hide the one the agent stops for."""
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - logged; the stop error says what matters
            log.exception("finishing after internal errors failed node=%s", self.config.node_id)

    def handle(self, item: Item) -> None:
        self.position = item.position
        record = item.record
        if item.record_type == "Label":
            graded = self._ungraded.pop(record["event_id"], None)
            if graded is not None:
                self.quality.update(graded[0], bool(record["label"]), graded[1])
            self.learner.label(record["event_id"], bool(record["label"]))
            if self.canary_run is not None:
                self.canary_run.label(record["event_id"], bool(record["label"]))
            if self.parts.forwarder is not None:
                value = self.parts.codec.encode("Label", record)
                key = (record.get("site_id") or record["event_id"]).encode()
                self.parts.forwarder.offer(record["event_id"], key, value, label=True)
            return
        if item.record_type != self.config.event_schema:
            self.parts.dead.add(
                reason_code="wrong-record-type",
                reason=f"a {item.record_type} on a {self.config.task} node",
                where=item.position if item.where is None else item.where,
                raw=item.raw if item.raw is not None else self._encoded(item),
            )
            return
        arrived_s = time.time() if item.timestamp_ms is None else item.timestamp_ms / 1000
        self.events += 1
        self._events_since_cut += 1
        self._event_ts = ts = millis(record["ts"])
        event_id, label = record["event_id"], record.get("label")
        link = self.parts.link
        if link.up:  # the newest global, pulled when the event comes (not at the tick)
            self._adopt_newer_global()
        now_ms = int(time.time() * 1000)
        x = record["features"]
        started = time.perf_counter()
        scored = self.learner.score(x, now_ms, self.linked, event_id)
        latency_ms = (time.perf_counter() - started) * 1000
        self.by_source[scored.source] += 1
        self.parts.scores.send(
            event_id,
            ts,
            now_ms,
            self.config.node_id,
            self.learner.spec.name,
            scored.version,
            scored.source,
            scored.score,
            latency_ms,
            label,
            scored.weights,
            self._provenance(),
        )
        self.score_latency.observe(max(time.time() - arrived_s, 0.0))
        self._grade(event_id, ts, label, scored.score)
        if self.parts.forwarder is not None:
            value = self.parts.codec.encode(self.config.event_schema, record)
            key = (record.get("site_id") or event_id).encode()
            self.parts.forwarder.offer(event_id, key, value)
        if self.canary_run is not None:
            self.canary_run.score(event_id, x, label)
        self.learner.observe(event_id, x, label)
        every = self.config.summary_every_events
        if every is not None and (
            self._events_since_cut >= every or self.learner.cut_due(every)  # sooner while young
        ):
            self.cut_and_save()

    def _grade(self, event_id: str, ts: int, label: bool | None, score: float) -> None:
        """Count the score in the quality window now (inline label) or when its label comes."""
        if label is not None:
            self.quality.update(ts, bool(label), score)
        elif self.learner.spec.supervised:
            self._ungraded[event_id] = (ts, score)
            if len(self._ungraded) > self.max_ungraded:
                self._ungraded.popitem(last=False)

    def _encoded(self, item: Item) -> bytes | str:
        """A log record's contract encoding (it has no bytes of its own), for a dead letter."""
        try:
            return self.parts.codec.encode(item.record_type, item.record)
        except SchemaError:  # a dead letter must still be written
            return str(item.record)[:500]

    @property
    def linked(self) -> bool:
        return self.parts.link.up and bool(self.parts.globals_.linked)

    # -- periodic -------------------------------------------------------------
    def tick(self, now: float, *, wait: bool = False) -> None:
        self._last_tick = now
        self.parts.link.producer.poll(0.1 if wait else 0)
        if self.parts.link.up:
            self._adopt_newer_global()
            self.parts.sender.pump()
            if self.parts.forwarder is not None:
                self.parts.forwarder.drain()
        self._unsent = self.parts.outbox.counts()["unsent"]
        every = self.config.summary_every_s
        if every is not None and now - self._last_cut >= every:
            self.cut_and_save()

    def _provenance(self) -> dict[str, str]:
        controls = self.parts.controls
        if controls is None or controls.pin is None:
            return self.provenance
        return {**self.provenance, "pinned": str(controls.pin)}

    def _controlled(self, info: GlobalModelInfo | None) -> GlobalModelInfo | None:
        """``info`` if the operator controls let it in (edge_agents/controls.py), else None."""
        controls = self.parts.controls
        pin, quarantined = None, set()
        if controls is not None:
            controls.refresh()
            pin, quarantined = controls.pin, controls.quarantined
        held = self.learner.global_version
        admitted, why = self.admission.admit(info, held, pin, quarantined)
        if why is not None and info is not None and self._refused != (info.version, why):
            self._refused = (info.version, why)
            log.info("global not adopted node=%s version=%s: %s", self.config.node_id,
                     info.version, why)  # fmt: skip
            if why.startswith("quarantined"):
                self.parts.dead.add(
                    reason_code="quarantined-global",
                    reason=why,
                    where={"version": info.version},
                    raw=b"",
                )
        return admitted

    def _adopt_newer_global(self) -> None:
        polled = self.parts.globals_.poll()
        if polled is None and self.admission.aside is None:  # nothing to admit: the controls'
            if self.parts.controls is not None:  # refresh is all _controlled would do
                self.parts.controls.refresh()
            return
        info = self._controlled(polled)
        if info is None or info.version <= self.learner.global_version:
            return
        if self.learner.needs_cut_before_adopt():
            self.cut_and_save(hold=False)
        previous = self.learner.global_
        try:
            adopted = self.learner.adopt(info.summary, info.version, info.created_at_ms)
        except ModelError as e:
            self.parts.dead.add(
                reason_code="incompatible-global-model",
                reason=str(e),
                where={"version": info.version},
                raw=b"",
            )
            return
        if adopted:
            self.canary_run = None
            if info.canary is not None and previous is not None and self.learner.spec.supervised:
                self.canary_run = CanaryRun(self.learner.spec, info.version, info.summary, previous)
            self.provenance = {}
            if info.restored_from is not None:  # a rollback: the scores say whose model it is
                self.provenance = {
                    "restored_from": str(info.restored_from),
                    "reason": info.reason or "",
                }
            log.info("global model adopted node=%s version=%s", self.config.node_id, info.version)
            self.cut_and_save(cut=False)

    def cut_and_save(self, *, cut: bool = True, hold: bool = True) -> None:
        """Cut an increment (if anything was learned and, with ``hold``, it is not held:
        ``--min-move``) and save it with the state."""
        if cut:  # an adoption's save does not restart the summary cadence
            self._events_since_cut = 0
            self._last_cut = time.monotonic()
        increment = self.learner.cut(hold=hold) if cut else None
        payload = None
        if increment is not None:
            layout = layout_of(increment)
            book = getattr(self.parts.globals_, "book", None)
            if book is not None:
                book.learn(layout)  # a global of this layout needs no announcement
            record = weight_summary_record(
                increment,
                tier="edge",
                region=self.config.region,
                created_at_ms=int(time.time() * 1000),
                metrics={"events": float(self.events)}
                | ({} if self._event_ts is None else {"event_ts": float(self._event_ts)})
                | self.learner.privacy_metrics()  # the merger keeps them in the node's record
                | ({} if self.canary_run is None else self.canary_run.loss.as_metrics()),
                meta={"stats": "increment", "mode": self.config.mode},
                quantize=self.config.quantize,
                # the merger holds the layout of the global this node adopted
                with_layout=layout.id != layout_id_of(self.learner.global_),
            )
            if self.parts.signer is not None:  # signed once: a resend is the same bytes
                record = self.parts.signer.sign(record)
            payload = self.parts.codec.encode("WeightSummary", record)
            self.summaries_cut += 1
        self._save(payload)
        if payload is not None:
            self.parts.sender.pump()
        if self.learner.dp_spent and not self._dp_told:
            self._dp_told = True
            log.warning(
                "DP budget spent node=%s epsilon=%.4g delta=%g budget=%g releases=%s: "
                "no more summaries will be published; the node keeps learning and scoring "
                "locally",
                self.config.node_id,
                self.learner.dp_epsilon,
                self.learner.policy.dp_delta,
                self.learner.policy.dp_epsilon_budget,
                self.learner.dp_releases,
            )

    def _save(self, payload: bytes | None) -> None:
        started = time.perf_counter()
        if self.parts.link.up:
            self.parts.link.producer.flush(5.0)  # what precedes the saved position is delivered
        if self.parts.forwarder is not None:
            self.parts.forwarder.save()
        self.parts.scores.flush()
        unacked = self.parts.scores.pending.snapshot()  # a restart sends these again
        self.parts.outbox.commit(self.learner.state(), self.position, payload, unacked)
        self.save_seconds.observe(time.perf_counter() - started)
        self._unsent = self.parts.outbox.counts()["unsent"]

    # -- reporting ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        total = sum(self.by_source.values())
        window = self.quality.total().to_dict()
        return {
            "events": self.events,
            "scores_by_source": dict(self.by_source),
            "offline_scores": self.parts.scores.offline,
            "dead_letters": dict(self.parts.dead.by_reason),
            "internal_errors": self.bugs.total,
            "summaries_cut": self.summaries_cut,
            "summaries_delivered": self.parts.sender.delivered,
            "fallback_ratio": self.by_source["local"] / total if total else 0.0,
            "outbox_unsent": self._unsent,
            "connected": self.parts.link.up,
            "global_version": self.learner.global_version,
            "model": self.learner.spec.name,
            "mode": self.config.mode,
            "dp_epsilon": self.learner.dp_epsilon,  # None without DP noise
            "dp_budget_spent": self.learner.dp_spent,
            "quality": {k: v for k, v in window.items() if k in self.quality_metrics},
            # --secure-agg only: rounds by outcome, the merger's records refused by reason
            "secagg_rounds": dict(getattr(self.parts.sender, "rounds", {})),
            "secagg_refused": dict(getattr(self.parts.sender, "refused", {})),
            "secagg_set_aside": dict(getattr(self.parts.sender, "set_aside", {})),
        }

"""The merge job's logic, framework-free: intake, dedup, rounds, tiers.

A :class:`Merger` takes decoded WeightSummary updates (with their Kafka
position) and returns what to publish. No Kafka, Redis or clock of its own
(``now_ms`` is passed in), so every rule below is unit-tested directly.

Intake of one update, in this order (a refusal names its reason):

1. ``invalid-summary`` -- the state does not verify against its spec;
2. ``duplicate`` -- (node id, sequence) was merged or refused before: counted,
   never merged twice (at-least-once delivery and replays are harmless);
3. ``sequence-too-old`` -- older than the node's dedup window (the last
   ``dedup_window`` sequences), so it cannot be told apart from a duplicate;
4. ``out-of-order-snapshot`` -- a *cumulative* node (see below) sent a
   snapshot older than one already merged, or one that does not contain the
   merged one (a shard restored from an older checkpoint, summarizing before
   it has caught up): subtracting it would take out what was never added;
5. ``future-base`` -- trained from a global version the merger has not made.

Signed updates (``Update.signature``, verified by the loop) are held to more:
a redelivery of a (node, sequence) already merged, refused or queued is a
``duplicate`` only if it carries the *same* signature -- the same bytes, e.g.
an edge outbox resend; with other content it is ``replayed``, and so is any
sequence not above the newest the node got merged or refused (unseen or older
than the window). The signature (a MAC of the content) is kept per sequence
in the node's dedup window for this comparison.

Accepted updates join the open round of their model; one update per node per
round, a node's next update waits for the next round. A round closes on
``round_size`` participants, or ``round_timeout`` after it opened once it has
``min_participants``; an update that arrives after its round closed (a
straggler) simply joins the next one, with its staleness recorded.

What an update means (``meta["stats"]``):

- ``increment`` (default; edge agents): exact statistics of a stretch of the
  node's stream not sent before (``models.personalize.since``);
- ``cumulative`` (central shards): everything the node ever learned; the
  merger turns it into an increment by subtracting the node's last merged
  snapshot (``spec.algebra.unmerge_exact``), so resending a snapshot never double
  counts.

The first round of a model merges plainly; later rounds merge the increments
into the current global (``merge(..., current=global, accumulate=True)``):
exact parts exactly, learned parts by the strategy (central shards' exact
statistics only: their weights follow a trajectory of their own, never the
global's, and averaging them in measurably hurt the global), which also screens out
poisoned updates (excluded everywhere, with the reason). ``async`` weighs
updates by staleness and refuses too-stale ones through the same call.

Optional regional tier: updates with a region merge per region first; each
closed regional round becomes one update of the global round (node id
``region:R``), and a regional model of its own in the registry.

Optional judge (:class:`streams.merger.gate.Judge`): every global candidate is
scored on the holdout before it becomes current, the score goes into its
metrics, and the quality gate may hold it back. A held-back version uses up
its version number but changes nothing the sites see: the tier keeps its
published model (``current``, ``published``), so the next round merges into
that base and deltas and staleness count from it. Its updates are settled as
excluded with the gate's reason: their (node, sequence) is in the dedup
windows, so a redelivery is a ``duplicate`` and never reaches a later round,
and a cumulative sender's snapshot is not advanced, so its next snapshot
brings the held stretch again (increments of a held round are dropped: that
is what holding back means).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from models.errors import ModelError
from models.merge import MergeResult, merge
from models.packing import PACK_DTYPES, apply_delta, pack_delta
from models.personalize import since
from models.secagg.aggregate import secure_merge
from models.secagg.compat import check_secure
from models.secagg.round import Dropouts
from models.serialization import QUANTIZE, wire_roundtrip
from models.specs import get_spec
from models.strategies import FedOpt, get_strategy
from models.summary import Summary
from streams.merger.gate import Judge, Judgement

__all__ = ["Closed", "MergerConfig", "Merger", "NodeLedger", "Refused", "Update"]

CUMULATIVE = "cumulative"


@dataclass(frozen=True, kw_only=True)
class MergerConfig:
    strategy: str = "fedavg"
    round_size: int = 10
    round_timeout_s: float = 30.0
    min_participants: int = 1
    tiers: tuple[str, ...] = ("global",)
    dedup_window: int = 64
    #: float precision of whole published globals; the merger keeps the decoded copy (_close)
    quantize: str | None = "float32"
    #: globals between whole ones travel as deltas from the previous version, floats as this
    #: (None: every version whole); the merger keeps exactly what the deltas add up to
    deltas: str | None = "float16"
    #: every n-th version (and the first, and the first after a restart) goes whole
    whole_every: int = 16
    #: merge through SecAgg+ (models.secagg): the merger learns only each round's sum
    secure_agg: bool = False

    def __post_init__(self) -> None:
        if self.round_size < 1 or self.min_participants < 1:
            raise ValueError("round size and min participants must be >= 1")
        if self.min_participants > self.round_size:
            raise ValueError("min participants cannot exceed the round size")
        if self.round_timeout_s <= 0 or self.dedup_window < 1:
            raise ValueError("round timeout and dedup window must be positive")
        unknown = set(self.tiers) - {"regional", "global"}
        if unknown or "global" not in self.tiers:
            raise ValueError(
                f"tiers are 'regional' and 'global' (global required), got {self.tiers}"
            )
        get_strategy(self.strategy)  # an unknown strategy fails at start, not at the first round
        if self.quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {self.quantize!r}")
        if self.deltas not in (None, *PACK_DTYPES[:3]):
            # int8 deltas round variance differences past zero (measured: the fraud
            # scaler's variances go negative within a few versions)
            raise ValueError(f"deltas must be one of {PACK_DTYPES[:3]} or off, got {self.deltas!r}")
        if self.whole_every < 1:
            raise ValueError("whole_every must be >= 1")
        if self.secure_agg:
            check_secure(self.strategy)  # robust strategies need individual updates
            if self.min_participants < 2:
                raise ValueError(
                    "secure aggregation needs min participants >= 2: a round of one "
                    "would publish that node's update"
                )

    @property
    def regional(self) -> bool:
        return "regional" in self.tiers


@dataclass(slots=True)
class Update:
    """One decoded WeightSummary and where it was read."""

    summary: Summary
    tier: str = "edge"
    region: str | None = None
    created_at_ms: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1
    signature: bytes | None = None  # verified MAC of a signed summary

    @property
    def node_id(self) -> str:
        return self.summary.node_id

    @property
    def sequence(self) -> int:
        return self.summary.sequence

    @property
    def cumulative(self) -> bool:
        return self.meta.get("stats") == CUMULATIVE


@dataclass(frozen=True)
class Refused:
    update: Update
    reason_code: str
    reason: str


@dataclass
class NodeLedger:
    """What the merger remembers of one node: dedup window, last snapshot, last word."""

    node_id: str
    seen: list[int] = field(default_factory=list)  # sorted, at most dedup_window
    snapshot: Summary | None = None  # last merged cumulative snapshot
    last_seen_ms: int = 0
    last_sequence: int = 0
    tier: str = "edge"
    region: str | None = None
    model_name: str = ""
    excluded: bool = False
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)  # e.g. a central shard's worker
    macs: dict[int, bytes] = field(default_factory=dict)  # sequence -> signature, in the window

    def has_seen(self, sequence: int) -> bool:
        i = bisect.bisect_left(self.seen, sequence)
        return i < len(self.seen) and self.seen[i] == sequence

    def too_old(self, sequence: int, window: int) -> bool:
        return len(self.seen) >= window and sequence < self.seen[0]

    def mark(self, sequence: int, window: int) -> None:
        if not self.has_seen(sequence):
            bisect.insort(self.seen, sequence)
            del self.seen[: max(len(self.seen) - window, 0)]
        self.last_sequence = max(self.last_sequence, sequence)
        if self.macs and self.seen and min(self.macs) < self.seen[0]:
            self.macs = {q: m for q, m in self.macs.items() if q >= self.seen[0]}


@dataclass(frozen=True)
class Closed:
    """A closed round: the merged model to publish and the nodes it touched."""

    name: str  # registry name: the spec name, or "spec@region:R"
    tier: str
    version: int
    parent_version: int
    result: MergeResult
    strategy: str
    created_at_ms: int
    metrics: Mapping[str, float]
    nodes: tuple[str, ...]
    #: (previous version, packed delta) when this version travels as a delta, else None
    delta: tuple[int, dict[str, Any]] | None = None
    opened_ms: int = 0  # when the round's first update came (the merger's clock)
    merge_s: float = 0.0  # the merge's own duration, by the merger's timer
    #: why the quality gate held this version back (never published: registry history
    #: and the lifecycle topic only); None: a published version
    held: str | None = None
    #: the merge's own float64 result, before wire rounding (what a clear check compares)
    merged: Summary | None = None
    #: a republished earlier version (a rollback, :mod:`streams.merger.lifecycle`): the
    #: version whose model this is, and why; None for a merged version
    restored_from: int | None = None
    reason: str | None = None
    #: staged rollout: the share of edges this version goes to first (None: everyone)
    canary: float | None = None

    @property
    def published(self) -> bool:
        return self.held is None


@dataclass
class _Round:
    opened_ms: int = 0
    updates: dict[str, Update] = field(default_factory=dict)  # node id -> its update

    def __len__(self) -> int:
        return len(self.updates)


class _Tier:
    """Rounds of one model at one level (the global model, or one region)."""

    def __init__(self, name: str, tier: str, current: Summary | None, version: int) -> None:
        self.name, self.tier = name, tier
        self.current, self.version = current, version  # version: the last number issued
        self.published = version  # the version ``current`` is (held-back ones are skipped)
        self.whole_due = True  # a fresh or restarted tier publishes its next version whole
        self.round = _Round()
        self.waiting: list[Update] = []  # a node's later updates, for later rounds

    def offer(self, update: Update, now_ms: int) -> None:
        if update.node_id in self.round.updates:
            self.waiting.append(update)
            return
        if not self.round.updates:
            self.round.opened_ms = now_ms
        self.round.updates[update.node_id] = update

    def due(self, config: MergerConfig, now_ms: int) -> bool:
        n = len(self.round)
        if n >= config.round_size:
            return True
        timed_out = n and now_ms - self.round.opened_ms >= config.round_timeout_s * 1000
        return bool(timed_out) and n >= config.min_participants

    def next_round(self, now_ms: int) -> None:
        self.round = _Round()
        waiting, self.waiting = self.waiting, []
        for update in waiting:
            self.offer(update, now_ms)

    def pending(self) -> Iterable[Update]:
        yield from self.round.updates.values()
        yield from self.waiting


class Merger:
    """Every model's rounds and every node's ledger, for one merge job.

    ``timer`` (seconds, any origin) only measures how long a merge took: the
    rounds themselves follow the ``now_ms`` each call passes in.
    """

    def __init__(
        self,
        config: MergerConfig,
        *,
        timer: Callable[[], float] = time.perf_counter,
        judge: Judge | None = None,
        dropouts: Callable[[str, list[str]], Dropouts] | None = None,
        canary: float | None = None,
    ) -> None:
        self.config, self.timer, self.judge = config, timer, judge
        #: secure rounds in a simulation: who vanishes when, given (round id, participant ids)
        self.dropouts = dropouts
        self.canary = canary  # staged rollout: a new global goes to this share of edges first
        self.strategy = get_strategy(config.strategy)
        #: registry name -> its own server optimizer (fedavgm, fedadam): momentum is one model's
        self._optimizers: dict[str, Any] = {}
        self.nodes: dict[str, NodeLedger] = {}
        self.tiers: dict[str, _Tier] = {}  # registry name -> tier
        self.counters: dict[str, int] = {}
        self._queued: dict[tuple[str, int], bytes | None] = {}  # in an open round -> signature
        #: models whose rounds wait (a staged rollout's version is with the canaries)
        self.paused: set[str] = set()

    # -- state from the registry / checkpoint ------------------------------------
    def restore_model(
        self, name: str, current: Summary | None, version: int, *, issued: int = 0
    ) -> None:
        """The current model of ``name`` (global, or ``spec@region:R``) and its version;
        ``issued``: the newest version number used, held-back ones included."""
        tier = "regional" if "@region:" in name else "global"
        self.tiers[name] = _Tier(name, tier, current, version)
        self.tiers[name].version = max(version, issued)

    def republish(
        self, name: str, summary: Summary, *, restored_from: int, reason: str, now_ms: int
    ) -> Closed:
        """An earlier version's model as the next version (a rollback): merging goes on from
        it, and its number is new, so sites adopt it like any newer global. It goes whole."""
        tier = self.tiers[name]
        parent = tier.published
        tier.version += 1
        tier.current = replace(summary, node_id=tier.name, base_version=tier.version)
        tier.published, tier.whole_due = tier.version, False
        self._count("restored")
        return Closed(
            name=name,
            tier=tier.tier,
            version=tier.version,
            parent_version=parent,
            result=MergeResult(summary=tier.current, contributors=(), excluded=()),
            strategy="restore",
            created_at_ms=now_ms,
            metrics={"restored_from": float(restored_from)},
            nodes=(),
            opened_ms=now_ms,
            restored_from=restored_from,
            reason=reason,
        )

    def strategy_for(self, name: str) -> Any:
        """The strategy of ``name``'s rounds: a server optimizer gets one per model, since
        its state follows one model's vector; a stateless strategy is shared."""
        if not isinstance(self.strategy, FedOpt):
            return self.strategy
        strategy = self._optimizers.get(name)
        if strategy is None:
            strategy = self._optimizers[name] = get_strategy(self.config.strategy)
        return strategy

    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        """Every model's server optimizer state (none before its first step): the store
        keeps them beside the models, so a restart steps on from the same momentum."""
        states = {name: s.state() for name, s in self._optimizers.items()}
        return {name: state for name, state in states.items() if state}

    def restore_optimizer(self, name: str, state: Mapping[str, Any]) -> None:
        """``name``'s server optimizer resumes from ``state`` (see :meth:`optimizer_states`)."""
        self.strategy_for(name).load_state(dict(state))

    def ledger(self, node_id: str) -> NodeLedger:
        ledger = self.nodes.get(node_id)
        if ledger is None:
            ledger = self.nodes[node_id] = NodeLedger(node_id)
        return ledger

    # -- intake -----------------------------------------------------------------
    def offer(self, update: Update, now_ms: int) -> Refused | None:
        """Admit ``update`` into its round, or say why not."""
        refused = self._check(update)
        if refused is not None:
            self._count(refused.reason_code)
            if refused.reason_code not in ("duplicate", "replayed"):  # not the node's news
                self._note(update, excluded=True, reason=refused.reason)
            return refused
        self._count("accepted")
        self._queue(self._tier_for(update), update, now_ms)
        return None

    def _queue(self, tier: _Tier, update: Update, now_ms: int) -> None:
        self._queued[(update.node_id, update.sequence)] = update.signature
        tier.offer(update, now_ms)

    def _check(self, update: Update) -> Refused | None:
        s = update.summary
        try:
            get_spec(s.model_name).algebra.check(s)
        except ModelError as e:
            return Refused(update, "invalid-summary", str(e))
        ledger = self.nodes.get(update.node_id)
        if update.signature is not None:
            replayed = self._replayed(update, ledger)
            if replayed is not None:
                return replayed
        if ledger is not None:
            if ledger.has_seen(s.sequence) or self._in_flight(update):
                return Refused(update, "duplicate", f"({s.node_id}, {s.sequence}) seen before")
            if ledger.too_old(s.sequence, self.config.dedup_window):
                return Refused(
                    update,
                    "sequence-too-old",
                    f"sequence {s.sequence} is older than node {s.node_id!r}'s dedup window "
                    f"(oldest remembered {ledger.seen[0]}); it cannot be told from a duplicate",
                )
            snap = ledger.snapshot
            if update.cumulative and snap is not None and s.sequence < snap.sequence:
                return Refused(
                    update,
                    "out-of-order-snapshot",
                    f"cumulative snapshot {s.sequence} is older than the merged {snap.sequence}",
                )
            if update.cumulative and snap is not None:
                try:
                    since(s, snap)
                except ModelError as e:
                    return Refused(
                        update,
                        "out-of-order-snapshot",
                        f"cumulative snapshot {s.sequence} does not contain the merged "
                        f"{snap.sequence}: {e}",
                    )
        elif self._in_flight(update):
            return Refused(update, "duplicate", f"({s.node_id}, {s.sequence}) already queued")
        version = self._global(s.model_name).published
        if s.base_version > version:
            return Refused(
                update,
                "future-base",
                f"base version {s.base_version} is newer than global version {version} "
                f"of {s.model_name!r}",
            )
        return None

    def _replayed(self, update: Update, ledger: NodeLedger | None) -> Refused | None:
        """A signed update reusing an old sequence; None lets the usual checks run."""
        s, key = update.summary, (update.node_id, update.sequence)
        if key in self._queued:
            before = self._queued[key]
        elif ledger is not None and ledger.has_seen(s.sequence):
            before = ledger.macs.get(s.sequence)
        elif ledger is not None and s.sequence <= ledger.last_sequence:
            return Refused(
                update,
                "replayed",
                f"sequence {s.sequence} of node {s.node_id!r} is not newer than its last "
                f"merged or refused sequence {ledger.last_sequence}",
            )
        else:
            return None
        if before is None or before == update.signature:
            return None  # the same bytes again (or unknown): the duplicate check counts it
        return Refused(
            update,
            "replayed",
            f"sequence {s.sequence} of node {s.node_id!r} was already used by other content",
        )

    def _in_flight(self, update: Update) -> bool:
        return (update.node_id, update.sequence) in self._queued

    def _global(self, model_name: str) -> _Tier:
        tier = self.tiers.get(model_name)
        if tier is None:
            tier = self.tiers[model_name] = _Tier(model_name, "global", None, 0)
        return tier

    def _tier_for(self, update: Update) -> _Tier:
        model = update.summary.model_name
        if self.config.regional and update.region and update.tier == "edge":
            name = f"{model}@region:{update.region}"
            if name not in self.tiers:
                self.tiers[name] = _Tier(name, "regional", None, 0)
            return self.tiers[name]
        return self._global(model)

    # -- rounds -----------------------------------------------------------------
    def close_due(self, now_ms: int) -> list[Closed]:
        """Close every round that is due (regional first: their results join global rounds)."""
        closed: list[Closed] = []
        for tier in sorted(self.tiers.values(), key=lambda t: t.tier != "regional"):
            if tier.name in self.paused:  # a canaried version is being judged: rounds wait
                continue
            while tier.name not in self.paused and tier.due(self.config, now_ms):
                done = self._close(tier, now_ms)
                if done is not None:
                    closed.append(done)
                elif self.config.secure_agg:
                    break  # an abandoned round's updates wait for the next call, not a loop
        return closed

    def _close(self, tier: _Tier, now_ms: int) -> Closed | None:
        updates, opened_ms = list(tier.round.updates.values()), tier.round.opened_ms
        tier.next_round(now_ms)
        started = self.timer()
        updates, increments = self._increments(updates)
        if not updates:
            return None
        regional = tier.tier == "regional"
        current = None if regional else tier.current
        extra: dict[str, float] = {}
        try:
            if self.config.secure_agg:
                secure = self._secure(tier, updates, increments, current, opened_ms, now_ms)
                if secure is None:
                    return None
                result, extra = secure
            else:
                result = merge(
                    increments,
                    self.strategy_for(tier.name),
                    current=current,
                    accumulate=current is not None,
                    statistics_only={u.node_id for u in updates if u.tier == "central"},
                )
        except ModelError as e:  # e.g. the strategy excluded every update
            for u in updates:
                self._settle(u, excluded=True, reason=f"round refused: {e}")
            self._count("rounds-refused")
            return None
        merged = result.summary
        result, delta = self._as_sent(tier, result)
        merge_s = self.timer() - started
        judgement = self._judge(tier, result.summary)
        tier.version += 1
        kept = {c.node_id for c in result.contributors}
        why = {e.node_id: e.reason for e in result.excluded}
        for u in updates:
            if judgement.held is None:
                self._settle(u, excluded=u.node_id not in kept, reason=why.get(u.node_id, ""))
            else:  # settled, so never merged again; its snapshot not taken as merged
                held = f"version {tier.version} held back by the quality gate: {judgement.held}"
                self._settle(u, excluded=True, reason=why.get(u.node_id, held))
        parent = tier.published
        canary = None
        if judgement.held is None and self.canary is not None and not regional and parent > 0:
            canary = self.canary  # the canaries judge it; rounds wait for their verdict
            self.paused.add(tier.name)
        if judgement.held is None:
            tier.whole_due = False
            tier.current = replace(result.summary, node_id=tier.name, base_version=tier.version)
            tier.published = tier.version
            self._count("rounds")
            if regional:
                self._forward_regional(tier, result, updates, now_ms)
        else:
            self._count("held-back")
        return Closed(
            name=tier.name,
            tier=tier.tier,
            version=tier.version,
            parent_version=parent,
            result=result,
            strategy=self.strategy.name,
            created_at_ms=now_ms,
            metrics={
                "participants": float(len(updates)),
                "contributors": float(len(result.contributors)),
                "excluded": float(len(result.excluded)),
                "round_ms": float(now_ms - min(u.created_at_ms or now_ms for u in updates)),
                **judgement.metrics,
                **extra,
            },
            nodes=tuple(u.node_id for u in updates),
            delta=delta if judgement.held is None else None,
            opened_ms=opened_ms,
            merge_s=merge_s,
            held=judgement.held,
            merged=merged,
            canary=canary,
        )

    def _secure(  # noqa: PLR0913 - the round's parts, as _close holds them
        self,
        tier: _Tier,
        updates: list[Update],
        increments: list[Summary],
        current: Summary | None,
        opened_ms: int,
        now_ms: int,
    ) -> tuple[MergeResult, dict[str, float]] | None:
        """One SecAgg+ round; updates that did not make it into the sum join the next round."""
        round_id = f"{tier.name}/{tier.version + 1}/{opened_ms}"
        ids = [f"{s.node_id}#{s.sequence}" for s in increments]
        out = secure_merge(
            increments,
            self.strategy_for(tier.name),
            current=current,
            accumulate=current is not None,
            statistics_only={u.node_id for u in updates if u.tier == "central"},
            round_id=round_id,
            dropouts=None if self.dropouts is None else self.dropouts(round_id, ids),
        )
        back = {(s.node_id, s.sequence) for s in out.reoffer}
        for u in updates:
            if (u.node_id, u.summary.sequence) in back:
                tier.offer(u, now_ms)  # still queued: neither lost nor merged twice
        metrics = {
            "secagg_bytes_up": float(out.cost.up),
            "secagg_bytes_down": float(out.cost.down),
            "secagg_reoffered": float(len(back)),
        }
        if out.result is None:
            self._count("rounds-abandoned")
            # what the abandoned round's messages cost, though nothing came of them
            self.counters["secagg-abandoned-bytes"] = (
                self.counters.get("secagg-abandoned-bytes", 0) + out.cost.total
            )
            return None
        if back:
            kept = {c.node_id for c in out.result.contributors}
            updates[:] = [u for u in updates if u.node_id in kept]
        return out.result, metrics

    # -- secure rounds over Kafka (streams/merger/secure.py runs the protocol) ----------
    def merged_before(self, node_id: str, sequence: int) -> bool:
        """Whether (node, sequence) was merged or refused already: never offered twice."""
        ledger = self.nodes.get(node_id)
        return ledger is not None and (
            ledger.has_seen(sequence) or ledger.too_old(sequence, self.config.dedup_window)
        )

    def close_secure(  # noqa: PLR0913 - the finished round's parts
        self,
        model_name: str,
        result: MergeResult,
        *,
        opened_ms: int,
        now_ms: int,
        merge_s: float,
        metrics: Mapping[str, float],
        strategy: str = "fedavg",
    ) -> Closed:
        """A secure round's unmasked global becomes the model's next version.

        The sum was unmasked outside (the protocol's rounds run on their own
        topics); here it is versioned, published and ledgered like a clear
        round's result, so clear and secure rounds of one model share one
        version chain and every (node, sequence) in the sum is never merged again.
        """
        tier = self._global(model_name)
        result, delta = self._as_sent(tier, result)
        tier.version += 1
        parent = tier.published
        for c in result.contributors:
            ledger = self.ledger(c.node_id)
            ledger.last_seen_ms = max(ledger.last_seen_ms, now_ms)
            ledger.model_name, ledger.excluded, ledger.reason = model_name, False, ""
            ledger.mark(c.sequence, self.config.dedup_window)
        tier.whole_due = False
        tier.current = replace(result.summary, node_id=tier.name, base_version=tier.version)
        tier.published = tier.version
        self._count("rounds")
        self._count("secure-rounds")
        return Closed(
            name=tier.name,
            tier=tier.tier,
            version=tier.version,
            parent_version=parent,
            result=result,
            strategy=strategy,
            created_at_ms=now_ms,
            metrics={"contributors": float(len(result.contributors)), **metrics},
            nodes=tuple(c.node_id for c in result.contributors),
            delta=delta,
            opened_ms=opened_ms,
            merge_s=merge_s,
        )

    def _judge(self, tier: _Tier, candidate: Summary) -> Judgement:
        """The holdout's word on a global candidate (regional models are not judged)."""
        if self.judge is None or tier.tier != "global":
            return Judgement()
        return self.judge.judge(tier.name, candidate, tier.current, tier.published)

    def _as_sent(
        self, tier: _Tier, result: MergeResult
    ) -> tuple[MergeResult, tuple[int, dict[str, Any]] | None]:
        """The result as the sites decode it (and the delta it goes as, None: whole).

        Not the float64 merge: the next round starts from the sites' model.
        """
        delta = self._delta(tier, result.summary)
        if delta is None:
            sent = wire_roundtrip(result.summary, self.config.quantize)
            return replace(result, summary=sent), None
        rebuilt = apply_delta(tier.current, delta[1], result.summary.n_samples)  # type: ignore[arg-type]
        return replace(result, summary=rebuilt), delta

    def _delta(self, tier: _Tier, merged: Summary) -> tuple[int, dict[str, Any]] | None:
        """The next version as a delta from the current one, or None: it goes whole."""
        c = self.config
        if c.deltas is None or tier.current is None or tier.whole_due:
            return None
        if (tier.version + 1) % c.whole_every == 0:
            return None
        try:
            return tier.published, pack_delta(merged, tier.current, c.deltas)
        except ModelError:  # another layout (new features): whole
            return None

    def _increments(self, updates: list[Update]) -> tuple[list[Update], list[Summary]]:
        """The round's updates that still make an increment, and those increments.

        ``offer`` checked each cumulative snapshot against the node's merged one;
        one that stopped fitting since (its node's snapshot moved on meanwhile)
        is settled as excluded with the reason instead of failing the round.
        """
        kept: list[Update] = []
        increments: list[Summary] = []
        for u in updates:
            try:
                increments.append(self._increment(u))
            except ModelError as e:
                self._settle(u, excluded=True, reason=f"out-of-order-snapshot: {e}")
                self._count("out-of-order-snapshot")
                continue
            kept.append(u)
        return kept, increments

    def _increment(self, update: Update) -> Summary:
        """Exact statistics not merged before (cumulative snapshots minus the last one)."""
        if not update.cumulative:
            return update.summary
        snap = self.nodes[update.node_id].snapshot if update.node_id in self.nodes else None
        if snap is None:
            return update.summary
        return replace(since(update.summary, snap), node_id=update.node_id)

    def _settle(self, update: Update, *, excluded: bool, reason: str) -> None:
        self._queued.pop((update.node_id, update.sequence), None)
        ledger = self._note(update, excluded=excluded, reason=reason)
        ledger.mark(update.sequence, self.config.dedup_window)
        if update.signature is not None and ledger.has_seen(update.sequence):
            ledger.macs[update.sequence] = update.signature
        if update.cumulative and not excluded:
            ledger.snapshot = update.summary

    def _forward_regional(
        self, tier: _Tier, result: MergeResult, updates: list[Update], now_ms: int
    ) -> None:
        """A closed regional round is one update of its model's global round."""
        model, region = tier.name.split("@region:", 1)
        summary = replace(
            result.summary,
            node_id=f"region:{region}",
            sequence=tier.version,
            base_version=min(u.summary.base_version for u in updates),
        )
        forwarded = Update(
            summary,
            tier="regional",
            region=region,
            created_at_ms=min(u.created_at_ms for u in updates),
            meta={"stats": "increment"},
            partition=-1,
        )
        self._queue(self._global(model), forwarded, now_ms)

    def restore_forwarded(self, update: Update, now_ms: int) -> None:
        """A regional result that was waiting for its global round (from the checkpoint)."""
        self._queue(self._global(update.summary.model_name), update, now_ms)

    def forwarded(self) -> list[Update]:
        """Regional results waiting in global rounds: the checkpoint keeps them."""
        return [
            u
            for t in self.tiers.values()
            if t.tier == "global"
            for u in t.pending()
            if u.tier == "regional"
        ]

    def edges_of(self, model_name: str) -> list[str]:
        """The edges this merger has heard from about ``model_name`` (canary candidates)."""
        nodes = self.nodes.items()
        return [n for n, led in nodes if led.tier == "edge" and led.model_name == model_name]

    def _note(self, update: Update, *, excluded: bool, reason: str) -> NodeLedger:
        ledger = self.ledger(update.node_id)
        ledger.last_seen_ms = max(ledger.last_seen_ms, update.created_at_ms)
        ledger.last_sequence = max(ledger.last_sequence, update.sequence)
        ledger.tier, ledger.region = update.tier, update.region
        ledger.model_name = update.summary.model_name
        ledger.excluded, ledger.reason = excluded, reason
        ledger.metrics = dict(update.metrics)
        ledger.meta = dict(update.meta)
        return ledger

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- positions -----------------------------------------------------------------
    def resume_offsets(self) -> dict[int, int]:
        """Per partition, the earliest offset still held in an open round (re-read on restart)."""
        out: dict[int, int] = {}
        for tier in self.tiers.values():
            for u in tier.pending():
                if u.partition >= 0:
                    out[u.partition] = min(out.get(u.partition, u.offset), u.offset)
        return out

    def pending_count(self) -> int:
        return sum(len(t.round) + len(t.waiting) for t in self.tiers.values())


def describe(closed: Closed) -> dict[str, Any]:
    """One log line's worth of a closed round."""
    return {
        "name": closed.name,
        "version": closed.version,
        "contributors": len(closed.result.contributors),
        "excluded": [(e.node_id, e.reason) for e in closed.result.excluded],
        "n_samples": closed.result.summary.n_samples,
        "held": closed.held,
    }

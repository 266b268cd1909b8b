"""The in-process simulation: four architectures over one stream, with the services' code.

No separate toy math: every site is an :class:`edge_agents.learner.EdgeLearner`
(the edge agents' scoring, fallback, blend, reconcile and increment rules),
every merge goes through :class:`streams.merger.rounds.Merger` (the merge
job's intake, rounds and strategies), and bytes are the encoded sizes of the
real wire records. Time is the events' own timestamps, so a run is
deterministic for a given log, flags and seed.

- ``centralized``: one learner sees every event; every event and label moves.
- ``federated``: per-site learners send increments every ``summary_every``
  learned events (sooner at first: :meth:`EdgeLearner.cut_due`); each closed
  round's global model is pulled by the sites, which score with it
  (``blend_alpha=1``; their own model only before the first global). An
  outage cuts a site off: it keeps scoring with the global it has, its
  increments wait and its rounds shrink.
- ``hybrid``: per-site learners mix their personal model with the global one
  (weights learned from each site's labels, ``blend_alpha`` the global's prior),
  falling back to the personal model while cut off; a central learner learns
  the forwarded sample of raw events and joins the rounds as one more node
  (its exact statistics merge, its weights do not vote).
- ``local``: per-site learners, never merged.

With ``poison`` a deterministic share of the sites (by ``seed``) send
poisoned increments (:mod:`models.poisoning`): their own models stay honest,
what they offer the merger lies, relative to the global they adopted. The
colluding kinds (``alie``, ``ipm``) are omniscient as in their papers: the
fleet keeps the honest increments offered to the open round (with the
global each was trained from) and hands them to the attacker together with
its own honest increment; while the open round holds fewer than two honest
ones, the last closed round's are added, so the attacker always has a spread
to hide in. ``excluded`` sites send honest summaries whose learned updates a
perfect screen sets aside (:mod:`prism.compare.floor`): the floor an attacked
run is read against.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edge_agents.config import EdgeConfig
from edge_agents.learner import EdgeLearner, EdgePolicy
from edge_agents.sinks import sampled
from models.merge import merge
from models.packing import layout_of
from models.poisoning import EXCLUDED, Attack, poison_summary
from models.secagg.aggregate import CODEC as SECAGG_CODEC
from models.secagg.round import Dropouts
from models.serialization import weight_summary_record, wire_roundtrip
from models.strategies import get_strategy
from models.summary import Summary
from prism.compare.floor import PerfectScreen
from prism.compare.lifecycle import (
    LIFECYCLE_ARCHITECTURES,
    Decided,
    Lifecycle,
    LifecycleConfig,
    variants,
)
from prism.compare.stream import EVENT, Stream
from schemas import Codec
from streams.merger.rounds import Closed, Merger, MergerConfig, Update
from streams.merger.wire import topic_records

__all__ = ["ARCHITECTURES", "SECURE", "Outage", "Run", "SimConfig", "poisoned_sites", "simulate"]

ARCHITECTURES = ("centralized", "federated", "hybrid", "local")
SECURE = "federated-secagg"  # federated through SecAgg+ (--secure-agg), beside clear federated
CODEC = Codec()
SECAGG_CODEC_ULP = 2.0 ** -(SECAGG_CODEC.frac_bits + 1)  # one encoded value's rounding
EDGE_QUANTIZE = EdgeConfig.__dataclass_fields__["quantize"].default  # `prism edge run`'s


@dataclass(frozen=True)
class Outage:
    """``fraction`` of the sites cut off from event ``start`` to ``end`` (fractions)."""

    fraction: float
    start: float
    end: float

    @classmethod
    def parse(cls, text: str) -> Outage:
        try:
            fraction, start, end = (float(v) for v in text.split(":"))
        except ValueError as e:
            raise ValueError(
                f"--outage takes FRACTION:START:END, e.g. 0.5:0.3:0.6, got {text!r}"
            ) from e
        if not (0 < fraction <= 1 and 0 <= start < end <= 1):
            raise ValueError("--outage needs 0 < FRACTION <= 1 and 0 <= START < END <= 1")
        return cls(fraction, start, end)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    spec_name: str
    architectures: tuple[str, ...] = ARCHITECTURES
    strategy: str = "fedavg"
    summary_every: int = 200
    round_size: int | None = None
    round_timeout_ms: int | None = None
    blend_alpha: float = 0.5
    forward_sample: float = 0.1
    min_move: float = 0.0  # adaptive cadence (EdgePolicy.min_move)
    max_move: float = EdgePolicy.max_move  # movement cadence (EdgePolicy.max_move)
    personal_pull: float = EdgePolicy.personal_pull  # Ditto-style personal models
    shift_global: bool = True  # the hybrid's third expert (EdgePolicy.shift_global)
    outage: Outage | None = None
    poison: Attack | None = None
    seed: int = 0
    #: float precision of edge summaries and globals on the wire (the services' default)
    quantize: str | None = EDGE_QUANTIZE
    #: globals between whole ones as deltas, floats as this (None: all whole); the merger's
    deltas: str | None = MergerConfig.__dataclass_fields__["deltas"].default
    #: differential privacy of the sites' increments, as `prism edge run --dp-*` (the hybrid's
    #: central learner sees forwarded raw events: DP there would protect nothing)
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = EdgePolicy.dp_delta
    dp_epsilon_budget: float | None = None
    #: also run federated through secure aggregation (architecture ``federated-secagg``)
    secure_agg: bool = False
    #: secure rounds: this share of each round's nodes vanish after sharing keys
    secagg_dropout: float = 0.0
    #: --quality-gate / --canary: federated and hybrid again through them (``NAME+VARIANT``)
    lifecycle: LifecycleConfig = LifecycleConfig()


@dataclass
class Run:
    """What one architecture did: a score per event, and what it cost."""

    name: str
    scores: np.ndarray
    sources: list[str]
    bytes_raw: int = 0
    bytes_summaries: int = 0
    bytes_globals: int = 0
    merges: int = 0
    merges_during_outage: int = 0
    summaries: int = 0
    staleness: list[int] = field(default_factory=list)
    scored_disconnected: int = 0
    merged_at: list[int] = field(default_factory=list)  # events seen when each round closed
    poisoned: int = 0  # poisoned summaries offered (set aside, for the excluded floor)
    dp_epsilon: float | None = None  # the most any site spent (None without DP noise)
    dp_releases: int = 0  # the most DP releases any site made
    merge_cpu_s: float = 0.0  # process CPU of every merge (secure: every node's crypto too)
    secagg_bytes: int = 0  # secure-aggregation payloads: keys, shares, masked vectors
    #: secure rounds: the largest gap to clear FedAvg of the same updates, and its bound
    secagg_gap: float = 0.0
    secagg_dropped: int = 0  # nodes that vanished mid-round (their increments re-offered)
    secagg_abandoned: int = 0  # secure rounds abandoned (below the threshold): all re-offered
    secagg_wasted_bytes: int = 0  # the abandoned rounds' messages (in secagg_bytes too)
    secagg_merged: list[tuple[str, int]] = field(default_factory=list)  # every contribution
    secagg_bound: float = 0.0
    #: secure rounds: the largest gap of a statistic (mean, var, cov), relative to 1 + |clear|
    secagg_stat_gap: float = 0.0
    #: lifecycle runs (``federated+gate``...): versions held back by the gate, sent to the
    #: canaries, promoted, rolled back; the version still with the canaries at the end
    held_back: list[int] = field(default_factory=list)
    canaried: list[int] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)
    rolled_back: list[int] = field(default_factory=list)
    canary_pending: int | None = None
    adopted: dict[str, list[int]] = field(default_factory=dict)  # site -> versions, in order

    @property
    def bytes_moved(self) -> int:
        return self.bytes_raw + self.bytes_summaries + self.bytes_globals


class _Fleet:
    """Per-site learners + (optionally) a merger and a central learner for one architecture."""

    def __init__(self, name: str, stream: Stream, config: SimConfig) -> None:
        self.name, self.stream, self.config = name, stream, config
        base, _, variant = name.partition("+")  # a lifecycle run: federated+gate...
        self.kind = "federated" if name == SECURE else base  # how its sites behave
        n_sites = len(stream.site_names)
        alpha = {"federated": 1.0, "hybrid": config.blend_alpha}.get(self.kind, 0.0)
        policy = EdgePolicy(
            blend_alpha=alpha,
            global_max_age_s=1e12,
            min_move=config.min_move,
            max_move=config.max_move,
            personal_pull=config.personal_pull,
            shift_global=config.shift_global,
            dp_clip=config.dp_clip,
            dp_noise=config.dp_noise,
            dp_seed=config.seed,
            dp_delta=config.dp_delta,
            dp_epsilon_budget=config.dp_epsilon_budget,
        )
        self.sites = [EdgeLearner(config.spec_name, s, policy) for s in stream.site_names]
        self.central = EdgeLearner(config.spec_name, "central", EdgePolicy())
        self.run = Run(name, np.zeros(len(stream)), [""] * len(stream))
        self.lifecycle = (
            Lifecycle(variant, config.lifecycle, self.central.spec, stream.site_names)
            if variant
            else None
        )
        self.merger: Merger | None = None
        if self.kind in ("federated", "hybrid"):
            span = int(stream.ts_ms.max() - stream.ts_ms.min()) if len(stream) else 0
            # with --secure-agg, clear federated rounds wait for two updates too: the same rounds
            pair = config.secure_agg and self.kind == "federated"
            self.merger = Merger(
                MergerConfig(
                    strategy=config.strategy,
                    round_size=config.round_size or max(2 if pair else 1, (n_sites + 1) // 2),
                    round_timeout_s=(config.round_timeout_ms or max(1, span // 100)) / 1000,
                    min_participants=2 if pair else 1,
                    dedup_window=1_000_000,
                    quantize=config.quantize,
                    deltas=config.deltas,
                    secure_agg=name == SECURE,
                ),
                timer=time.process_time,  # merge_s: the CPU a round costs, in process
                dropouts=self._dropouts if name == SECURE else None,
                judge=None if self.lifecycle is None else self.lifecycle.judge,
                canary=None if self.lifecycle is None else self.lifecycle.share,
            )
        if self.merger is not None and config.poison and config.poison.kind == EXCLUDED:
            names = {stream.site_names[i] for i in poisoned_sites(stream, config)}
            self.merger.strategy = PerfectScreen(self.merger.strategy, names)
        self.global_: tuple[Summary, int] | None = None
        self.offered: dict[tuple[str, int], Summary] = {}  # secure run: the updates, for checks
        self.current: Summary | None = None  # secure run: the merger's current global
        # secure run: the clear strategy its globals are checked against (an optimizer's state
        # steps with the secure merger's, round for round)
        self.shadow = get_strategy(config.strategy) if name == SECURE else None
        # bytes of every global record published up to version v (the topic as agents read it)
        self.published = [0]
        self.layouts: dict[int, int] = {}  # global version -> layout id (the merger holds them)
        self.announced: dict[str, int] = {}  # model -> the layout last published whole
        self.waiting: dict[int, list[Summary]] = {}  # increments of cut-off sites
        self.events_seen = 0
        self.attackers = poisoned_sites(stream, config)
        self.poison_rng = np.random.default_rng([config.seed, 0xBAD])
        # the colluding attackers' view: honest (increment, its reference) pairs
        self.honest_open: list[tuple[Summary, Summary | None]] = []
        self.honest_closed: list[tuple[Summary, Summary | None]] = []

    # -- events -----------------------------------------------------------------
    def score(self, i: int, connected: bool, now_ms: int, in_outage: bool) -> None:
        x = self.stream.features[i]
        if self.kind == "centralized":
            s = self.central.score(x, now_ms, True, self.stream.event_ids[i])
        else:
            site = self.sites[self.stream.sites[i]]
            if connected:
                self._pull(self.stream.sites[i])
            # federated sites keep the global they have; hybrid ones fall back when cut off
            s = site.score(
                x, now_ms, connected or self.kind == "federated", self.stream.event_ids[i]
            )
            if s.source != "local" and self.global_ is not None:
                self.run.staleness.append(self.global_[1] - s.version)
            if not connected:
                self.run.scored_disconnected += 1
            if self.lifecycle is not None:
                self.lifecycle.scored(self.stream.sites[i], self.stream.event_ids[i], x)
        self.run.scores[i], self.run.sources[i] = s.score, s.source
        self._learn_unsupervised(i, connected, now_ms, in_outage)

    def label(self, i: int, connected: bool, now_ms: int, in_outage: bool) -> None:
        y = bool(self.stream.labels[i])
        eid = self.stream.event_ids[i]
        x = self.stream.features[i]
        if self.lifecycle is not None and self.kind != "centralized":
            self.lifecycle.holdout(x, y)
            self.lifecycle.labelled(self.stream.sites[i], eid, y)
        if not self.central.spec.supervised:  # learned at the event: the label only grades
            central = self.kind == "centralized"
            (self.central if central else self.sites[self.stream.sites[i]]).label(eid, y)
            return
        if self.kind == "centralized":
            self.central.observe(eid, x, y)
            return
        site = self.stream.sites[i]
        self.sites[site].observe(eid, x, y)
        if self.kind == "hybrid" and sampled(eid, self.config.forward_sample):
            self.central.observe(eid, x, y)
            self._maybe_cut_central(now_ms, in_outage)
        self._maybe_cut(site, connected, now_ms, in_outage)

    def _learn_unsupervised(self, i: int, connected: bool, now_ms: int, in_outage: bool) -> None:
        """Anomaly detectors learn every event at once (labels only grade them)."""
        if self.central.spec.supervised:
            return
        eid, x = self.stream.event_ids[i], self.stream.features[i]
        if self.kind == "centralized":
            self.central.observe(eid, x, None)
            return
        site = self.stream.sites[i]
        self.sites[site].observe(eid, x, None)
        if self.kind == "hybrid" and sampled(eid, self.config.forward_sample):
            self.central.observe(eid, x, None)
            self._maybe_cut_central(now_ms, in_outage)
        self._maybe_cut(site, connected, now_ms, in_outage)

    # -- summaries and rounds ---------------------------------------------------
    def _maybe_cut(self, site: int, connected: bool, now_ms: int, in_outage: bool) -> None:
        learner = self.sites[site]
        if self.merger is None or not learner.cut_due(self.config.summary_every):
            return
        increment = learner.cut()
        if increment is None:
            return
        if site in self.attackers and self.config.poison is not None:
            self.run.poisoned += 1
            if self.config.poison.kind != EXCLUDED:  # the floor's sites send the honest one
                increment = poison_summary(
                    learner.spec,
                    increment,
                    learner.global_,
                    self.config.poison,
                    self.poison_rng,
                    n_nodes=len(self.sites),
                    honest=self._honest_view(increment, learner.global_),
                )
        elif self.config.poison is not None:
            self.honest_open.append((increment, learner.global_))
        self.waiting.setdefault(site, []).append(increment)
        if connected:
            for waiting in self.waiting.pop(site):
                self._offer(waiting, "edge", now_ms)
            self._canary_report(site, now_ms)
        self._close(now_ms, in_outage)

    def _honest_view(
        self, own: Summary, reference: Summary | None
    ) -> list[tuple[Summary, Summary | None]]:
        """What an omniscient attacker knows of its round (see the module docstring)."""
        view = [*self.honest_open, (own, reference)]
        return view if len(self.honest_open) >= 2 else [*self.honest_closed, *view]

    def _maybe_cut_central(self, now_ms: int, in_outage: bool) -> None:
        if not self.central.cut_due(self.config.summary_every):
            return
        increment = self.central.cut()
        if increment is not None:
            self._offer(increment, "central", now_ms)
            self._close(now_ms, in_outage)

    def _offer(self, summary: Summary, tier: str, now_ms: int) -> None:
        assert self.merger is not None
        quantize = self.config.quantize if tier == "edge" else None  # as agents and workers send
        # a node names its layout by id when it is its adopted global's (agents do the same)
        by_id = tier == "edge" and self.layouts.get(summary.base_version) == layout_of(summary).id
        record = weight_summary_record(
            summary, tier=tier, created_at_ms=now_ms, quantize=quantize, with_layout=not by_id
        )
        if self.name != SECURE:  # secure nodes send masked vectors: counted when a round closes
            self.run.bytes_summaries += len(CODEC.encode("WeightSummary", record))
        self.run.summaries += 1
        summary = wire_roundtrip(summary, quantize)  # what the merger decodes
        if self.name == SECURE:
            self.offered[(summary.node_id, summary.sequence)] = summary
        self.merger.offer(Update(summary, tier=tier, created_at_ms=now_ms), now_ms)

    def reconnect(self, site: int, now_ms: int, in_outage: bool) -> None:
        for waiting in self.waiting.pop(site, []):
            self._offer(waiting, "edge", now_ms)
        self._close(now_ms, in_outage)

    def _close(self, now_ms: int, in_outage: bool) -> None:
        if self.merger is None:
            return
        closed_now = self.merger.close_due(now_ms)
        self.run.secagg_abandoned = self.merger.counters.get("rounds-abandoned", 0)
        wasted = self.merger.counters.get("secagg-abandoned-bytes", 0)
        self.run.bytes_summaries += wasted - self.run.secagg_wasted_bytes
        self.run.secagg_bytes += wasted - self.run.secagg_wasted_bytes
        self.run.secagg_wasted_bytes = wasted
        for closed in closed_now:
            summary = closed.result.summary
            if closed.held is not None:  # the quality gate kept it from every site
                self.published.append(self.published[-1])
                self.run.held_back.append(closed.version)
                continue
            if closed.canary is not None and self.lifecycle is not None:
                edges = self.merger.edges_of(closed.name)
                self.lifecycle.start(
                    closed.name, summary, closed.version, closed.parent_version, edges
                )
                self.run.canaried.append(closed.version)
                self._verdict(self.lifecycle.settle(), now_ms)
            else:
                self.global_ = (summary, closed.version)
            layout = self.layouts[closed.version] = layout_of(summary).id
            self.published.append(self.published[-1] + self._record_bytes(closed, layout))
            self.run.merges += 1
            self.run.merge_cpu_s += closed.merge_s
            if self.name == SECURE:
                self._check_secure(closed)
            m = closed.metrics
            secure = int(m.get("secagg_bytes_up", 0) + m.get("secagg_bytes_down", 0))
            self.run.secagg_bytes += secure
            self.run.bytes_summaries += secure
            if self.honest_open:
                self.honest_closed, self.honest_open = self.honest_open, []
            self.run.merges_during_outage += int(in_outage)
            self.run.merged_at.append(self.events_seen)

    def _canary_report(self, site: int, now_ms: int) -> None:
        """A canary's summary went out with its paired loss: promote or roll back, as the
        merger's steering does (streams/merger/steering.py), once the tracker decides."""
        self._verdict(None if self.lifecycle is None else self.lifecycle.report(site), now_ms)

    def _verdict(self, decided: Decided | None, now_ms: int) -> None:
        if decided is None:
            return
        assert self.merger is not None and self.global_ is not None
        pending, verdict = decided.pending, decided.verdict
        self.merger.paused.discard(decided.name)
        if verdict.action == "promote":
            self.global_ = (decided.summary, pending.version)
            self.run.promoted.append(pending.version)
            return
        closed = self.merger.republish(
            decided.name,
            self.global_[0],
            restored_from=pending.previous,
            reason=f"version {pending.version} rolled back: {verdict.reason}",
            now_ms=now_ms,
        )
        self.global_ = (closed.result.summary, closed.version)
        layout = self.layouts[closed.version] = layout_of(closed.result.summary).id
        self.published.append(self.published[-1] + self._record_bytes(closed, layout))
        self.run.rolled_back.append(pending.version)

    def _dropouts(self, round_id: str, ids: list[str]) -> Dropouts:
        """Each node leaves after sharing keys with probability ``secagg_dropout`` (by seed
        and round): its increment waits for the next round, or the round is abandoned."""
        rng = np.random.default_rng([self.config.seed, zlib.crc32(round_id.encode())])
        gone = [v for v in ids if rng.random() < self.config.secagg_dropout]
        self.run.secagg_dropped += len(gone)
        return Dropouts({"input": gone})

    def _check_secure(self, closed: Closed) -> None:
        """The clear merge of the round's very updates (only a simulation can know them)."""
        ins = [self.offered[(c.node_id, c.sequence)] for c in closed.result.contributors]
        self.run.secagg_merged += [(c.node_id, c.sequence) for c in closed.result.contributors]
        clear = merge(ins, self.shadow, current=self.current, accumulate=self.current is not None)
        algebra = self.sites[0].spec.algebra
        assert closed.merged is not None
        gap = algebra.learned_vector(closed.merged) - algebra.learned_vector(clear.summary)
        self.run.secagg_gap = max(self.run.secagg_gap, float(np.max(np.abs(gap), initial=0.0)))
        for key, want in clear.summary.tensors.items():
            if key in ("mean", "var", "cov"):
                got = closed.merged.tensor(key)
                rel = np.abs(got - want) / (1.0 + np.abs(want))
                self.run.secagg_stat_gap = max(
                    self.run.secagg_stat_gap, float(np.max(rel, initial=0.0))
                )
        self.run.secagg_bound = max(self.run.secagg_bound, len(ins) * SECAGG_CODEC_ULP)
        self.current = replace(
            closed.result.summary, node_id=closed.name, base_version=closed.version
        )

    def _record_bytes(self, closed: Closed, layout: int) -> int:
        """What the merge job puts on the topic for this version (:mod:`streams.merger.wire`)."""
        assert self.merger is not None
        config = self.merger.config
        records = topic_records(
            closed, layout, self.announced, quantize=config.quantize, deltas=bool(config.deltas)
        )
        return sum(len(CODEC.encode("GlobalModel", record)) for _key, record in records)

    def tick(self, now_ms: int, in_outage: bool) -> None:
        self._close(now_ms, in_outage)

    def _pull(self, index: int) -> None:
        """A connected site takes the newest global when it next scores (pulled lazily, but
        counted as the agents read the topic: every record since the version it holds)."""
        site = self.sites[index]
        offered = (
            self.global_ if self.lifecycle is None else self.lifecycle.offered(index, self.global_)
        )
        if offered is None or offered[1] <= site.global_version:
            return
        summary, version = offered
        self.run.bytes_globals += self.published[version] - self.published[site.global_version]
        previous = site.global_
        site.adopt(summary, version, created_ms=0)
        self.run.adopted.setdefault(site.node_id, []).append(version)
        if self.lifecycle is not None:
            self.lifecycle.adopted(index, version, previous)


def simulate(
    stream: Stream, config: SimConfig, progress: Callable[[int], None] | None = None
) -> dict[str, Run]:
    """Every architecture over ``stream``'s steps, in the same order."""
    names = list(config.architectures)
    if config.secure_agg:  # the secure run beside the clear one it must match
        names += [*(["federated"] if "federated" not in names else []), SECURE]
    names += [
        f"{name}+{variant}"
        for name in config.architectures
        if name in LIFECYCLE_ARCHITECTURES
        for variant in variants(config.lifecycle)
    ]
    fleets = [_Fleet(name, stream, config) for name in names]
    n = len(stream)
    cut_off = _cut_off_sites(stream, config)
    start, end = _outage_bounds(n, config.outage)
    for fleet in fleets:
        if fleet.kind in ("centralized", "hybrid"):
            sent = (
                stream.raw_bytes
                if fleet.kind == "centralized"
                else np.array(
                    [
                        b if sampled(e, config.forward_sample) else 0
                        for e, b in zip(stream.event_ids, stream.raw_bytes, strict=True)
                    ]
                )
            )
            fleet.run.bytes_raw = int(np.sum(sent))
    done = 0
    seen_events = 0
    for kind, i in stream.steps:
        now_ms = int(stream.ts_ms[i])
        in_outage = start <= seen_events < end
        for fleet in fleets:
            fleet.events_seen = seen_events
        connected = not (in_outage and stream.sites[i] in cut_off)
        if kind == EVENT:
            if seen_events == end:
                for fleet in fleets:
                    for site in cut_off:
                        fleet.reconnect(site, now_ms, False)
            for fleet in fleets:
                fleet.tick(now_ms, in_outage)
                fleet.score(i, connected, now_ms, in_outage)
            seen_events += 1
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(1000)
        else:
            for fleet in fleets:
                fleet.label(i, connected, now_ms, in_outage)
    if progress is not None:
        progress(done % 1000)
    for fleet in fleets:
        spent = [s.dp_epsilon for s in fleet.sites if s.dp_epsilon is not None]
        fleet.run.dp_epsilon = max(spent) if spent else None
        fleet.run.dp_releases = max((s.dp_releases for s in fleet.sites), default=0)
        if fleet.lifecycle is not None:
            fleet.run.canary_pending = fleet.lifecycle.pending
    return {fleet.name: fleet.run for fleet in fleets}


def poisoned_sites(stream: Stream, config: SimConfig) -> frozenset[int]:
    """Indices of the sites that poison their updates (none without ``config.poison``)."""
    if config.poison is None:
        return frozenset()
    return config.poison.attackers(len(stream.site_names), config.seed)


def _outage_bounds(n: int, outage: Outage | None) -> tuple[int, int]:
    if outage is None:
        return n + 1, n + 1
    return int(outage.start * n), int(outage.end * n)


def _cut_off_sites(stream: Stream, config: SimConfig) -> set[int]:
    if config.outage is None:
        return set()
    n_sites = len(stream.site_names)
    k = max(1, round(config.outage.fraction * n_sites))
    rng = np.random.default_rng(config.seed)
    return {int(s) for s in rng.choice(n_sites, size=k, replace=False)}

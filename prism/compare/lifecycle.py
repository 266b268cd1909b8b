"""What the quality gate and a staged rollout would have done on a log (#27 item 6).

`prism compare --quality-gate MARGIN` / `--canary SHARE` rerun federated and
hybrid with the merger's own lifecycle code and report the difference to the
same architecture without it. Nothing here decides: the gate is
:class:`streams.merger.gate.Judge` inside :class:`streams.merger.rounds.Merger`
(as `prism merger run --quality-gate` builds it), the canaries are
:func:`models.canary.in_canary`, they measure with
:class:`edge_agents.canary.CanaryRun` and the verdicts are
:class:`streams.merger.canary.CanaryTracker`'s. This module only carries
events between them in the simulation's order.

The holdout is a reservoir of the log's labelled events as their labels
arrive (the merger's ``--holdout-size``, seeded). The sites learn those
events too -- a log has no events to spare -- where a deployment's holdout
topic carries events no node trained on; both the candidate and the
published version are scored on the same sample, so the gate compares like
with like, but the sample is not unseen data (docs/compare.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_agents.canary import CanaryRun
from models.canary import CanaryPolicy, Verdict, in_canary
from models.holdout import Reservoir
from models.specs.base import ModelSpec
from models.summary import Summary
from streams.merger.canary import CanaryTracker, Pending
from streams.merger.gate import Judge, QualityGate

__all__ = ["LIFECYCLE_ARCHITECTURES", "Lifecycle", "LifecycleConfig", "variants"]

#: the architectures whose globals go through a merger, so a gate or canary can change them
LIFECYCLE_ARCHITECTURES = ("federated", "hybrid")


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    """The merger's lifecycle flags, with `prism merger run`'s defaults."""

    quality_gate: float | None = None
    gate_min_events: int = 50
    holdout_size: int = 2000
    canary: float | None = None
    canary_margin: float = 0.0
    canary_min_events: int = 200

    def __post_init__(self) -> None:  # the same checks the merger makes, before any run
        if self.quality_gate is not None:
            QualityGate(self.quality_gate, min_events=self.gate_min_events)
            Reservoir(self.holdout_size)
        if self.canary is not None:
            self.policy()

    def policy(self) -> CanaryPolicy:
        assert self.canary is not None
        return CanaryPolicy(
            self.canary, margin=self.canary_margin, min_events=self.canary_min_events
        )

    @property
    def active(self) -> bool:
        return self.quality_gate is not None or self.canary is not None


def variants(config: LifecycleConfig) -> tuple[str, ...]:
    """The runs beside each plain architecture: each mechanism alone, and both together.

    >>> variants(LifecycleConfig(quality_gate=0.02, canary=0.3))
    ('gate', 'canary', 'gate+canary')
    >>> variants(LifecycleConfig())
    ()
    """
    out = []
    if config.quality_gate is not None:
        out.append("gate")
    if config.canary is not None:
        out.append("canary")
    if len(out) == 2:
        out.append("gate+canary")
    return tuple(out)


@dataclass(frozen=True)
class Decided:
    """The canaries' verdict on a trial version (``summary``), for the fleet to carry out."""

    name: str
    summary: Summary
    pending: Pending
    verdict: Verdict


class Lifecycle:
    """One simulated fleet's gate and canary state: the holdout, the trial, the canaries' runs."""

    def __init__(
        self, variant: str, config: LifecycleConfig, spec: ModelSpec, site_names: list[str]
    ) -> None:
        parts = set(variant.split("+"))
        self.spec, self.site_names = spec, site_names
        self.reservoir: Reservoir | None = None
        self.judge: Judge | None = None
        if "gate" in parts:
            assert config.quality_gate is not None
            self.reservoir = Reservoir(config.holdout_size, seed=0)  # the merger's seed
            gate = QualityGate(config.quality_gate, min_events=config.gate_min_events)
            self.judge = Judge({spec.task: self.reservoir}, gate)
        self.tracker: CanaryTracker | None = None
        self.share: float | None = None
        self.canaries: frozenset[int] = frozenset()
        if "canary" in parts:
            self.share = config.canary
            self.tracker = CanaryTracker(config.policy())
            self.canaries = frozenset(
                i for i, node in enumerate(site_names) if in_canary(node, config.canary or 0.0)
            )
        #: (model name, the canaried global, its version) while the canaries judge it
        self.trial: tuple[str, Summary, int] | None = None
        self.runs: dict[int, CanaryRun] = {}  # canary site -> its paired measurement

    # -- the holdout --------------------------------------------------------------
    def holdout(self, x: Mapping[str, float], label: bool) -> None:
        if self.reservoir is not None:
            self.reservoir.offer(x, label)

    # -- the canaries -------------------------------------------------------------
    def start(
        self, name: str, summary: Summary, version: int, previous: int, edges: list[str]
    ) -> None:
        """``edges``: the sites the merger has heard from, as the merger passes them."""
        assert self.tracker is not None
        self.tracker.start(name, version, previous, edges)
        self.trial = (name, summary, version)

    def offered(
        self, site: int, published: tuple[Summary, int] | None
    ) -> tuple[Summary, int] | None:
        """The global ``site`` may pull: the canaried one for a canary, else the published."""
        if self.trial is not None and site in self.canaries:
            return self.trial[1], self.trial[2]
        return published

    def adopted(self, site: int, version: int, previous: Summary | None) -> None:
        """A canary took the trial version: from now on it scores both it and ``previous``."""
        if self.trial is None or version != self.trial[2] or site not in self.canaries:
            return
        if previous is not None:
            self.runs[site] = CanaryRun(self.spec, version, self.trial[1], previous)

    def scored(self, site: int, event_id: str, x: Mapping[str, float]) -> None:
        run = self.runs.get(site)
        if run is not None:
            run.score(event_id, x, None)

    def labelled(self, site: int, event_id: str, label: bool) -> None:
        run = self.runs.get(site)
        if run is not None:
            run.label(event_id, label)

    def report(self, site: int) -> Decided | None:
        """A canary's summary carries its paired loss; the tracker's verdict, if any now."""
        run = self.runs.get(site)
        if run is None or self.tracker is None or self.trial is None:
            return None
        self.tracker.report(self.trial[0], self.site_names[site], run.loss.as_metrics())
        return self.settle()

    def settle(self) -> Decided | None:
        """The tracker's verdict on the trial, if it has one now (the merger asks each step:
        a fleet with no canary is decided at the start)."""
        if self.tracker is None or self.trial is None:
            return None
        name, summary, _version = self.trial
        decided = self.tracker.verdict(name)
        if decided is None:
            return None
        self.trial, self.runs = None, {}
        return Decided(name, summary, *decided)

    @property
    def pending(self) -> int | None:
        """The version still with the canaries (no verdict by the end of the log), or None."""
        return None if self.trial is None else self.trial[2]


def lifecycle_entry(run: Any, without: Mapping[str, Any], metric: float | None) -> dict[str, Any]:
    """A variant's line in the report: what it did, and its metric against the plain run's."""
    plain = without["metric"]
    return {
        "metric": metric,
        "metric_without": plain,
        "delta": None if metric is None or plain is None else metric - plain,
        "bytes_moved": run.bytes_moved,
        "bytes_moved_without": without["bytes_moved"],
        "merges": run.merges,
        "held_back": len(run.held_back),
        "held_back_versions": list(run.held_back),
        "canaried": len(run.canaried),
        "promoted": len(run.promoted),
        "rolled_back": len(run.rolled_back),
        "rolled_back_versions": list(run.rolled_back),
        "canary_pending_at_end": run.canary_pending,
    }


def render_lifecycle(section: Mapping[str, Any]) -> list[str]:
    """The text report's lifecycle lines."""

    def f(v: float | None, spec: str = ".4f") -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        f"lifecycle: quality gate {section['quality_gate']}, canary {section['canary']} "
        f"({len(section['canary_sites'])} canary sites: {', '.join(section['canary_sites'])}); "
        "delta = metric with it minus without (negative: it cost)"
    ]
    for arch, runs in section["architectures"].items():
        for variant, e in runs.items():
            lines.append(
                f"  {arch}+{variant:<12} {f(e['metric'])} vs {f(e['metric_without'])} without "
                f"(delta {f(e['delta'], '+.4f')}); held back {e['held_back']} "
                f"{e['held_back_versions']}; canaried {e['canaried']}, promoted "
                f"{e['promoted']}, rolled back {e['rolled_back']} {e['rolled_back_versions']}"
                + (
                    f", version {e['canary_pending_at_end']} still with the canaries at the end"
                    if e["canary_pending_at_end"] is not None
                    else ""
                )
            )
    return lines

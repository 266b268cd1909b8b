"""The merger's side of a staged rollout (#27 item 3): pool the canaries' reports, decide.

Framework-free like :mod:`streams.merger.rounds`. A canary edge reports, in
each summary's ``metrics``, its paired loss *since it adopted* the canaried
version (:class:`models.canary.PairedLoss`, cumulative); the tracker keeps
each node's latest report, so a resent or replayed summary never counts
twice, and pools them exactly. Reports about another version (an edge that
has not adopted it yet, or a stale summary) and from nodes outside the
canary share are ignored. :meth:`CanaryTracker.verdict` is the policy's word
on the pool; the loop (streams/merger/loop.py) promotes or rolls back.

A version whose model has edges the merger knows, none of them in the canary
share, is promoted at once with that reason: nobody would ever report on it,
and the model's rounds would wait for good.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from models.canary import CanaryPolicy, PairedLoss, Verdict, in_canary

__all__ = ["CanaryTracker", "Pending"]


@dataclass
class Pending:
    """A version out to the canaries only, and the version everyone else keeps."""

    version: int
    previous: int
    reports: dict[str, PairedLoss] = field(default_factory=dict)  # node -> latest
    decided: Verdict | None = None  # known at the start: no canary to wait for

    def pooled(self) -> PairedLoss:
        total = PairedLoss(self.version)
        for report in self.reports.values():
            total = total + report
        return total


class CanaryTracker:
    def __init__(self, policy: CanaryPolicy) -> None:
        self.policy = policy
        self.pending: dict[str, Pending] = {}  # model name -> its canaried version

    def start(
        self, name: str, version: int, previous: int, edges: Collection[str] | None = None
    ) -> None:
        """``version`` went to the canaries; ``previous`` (0: none) stays with the rest.

        ``edges``: the model's edges the merger knows (None: unknown); if there
        are some and none is a canary, the version is promoted at the next verdict.
        """
        pending = Pending(version, previous)
        if edges and not any(in_canary(e, self.policy.share) for e in edges):
            pending.decided = Verdict(
                "promote",
                f"none of the {len(edges)} known edges is in the {self.policy.share:g} canary "
                "share: nobody would report, so the version goes to everyone",
            )
        self.pending[name] = pending

    def report(self, name: str, node_id: str, metrics: Mapping[str, float]) -> bool:
        """Take a summary's report; True if it counted (a canary's, about the pending version)."""
        pending = self.pending.get(name)
        loss = PairedLoss.from_metrics(metrics)
        if pending is None or loss is None or loss.version != pending.version:
            return False
        if not in_canary(node_id, self.policy.share):
            return False
        known = pending.reports.get(node_id)
        if known is None or loss.n >= known.n:  # cumulative: an older report never goes back
            pending.reports[node_id] = loss
        return True

    def verdict(self, name: str) -> tuple[Pending, Verdict] | None:
        """The decision on ``name``'s pending version (it is then no longer pending), or None."""
        pending = self.pending.get(name)
        if pending is None:
            return None
        verdict = pending.decided or self.policy.verdict(pending.pooled())
        if verdict is None:
            return None
        del self.pending[name]
        return pending, verdict

"""Staged rollout (#27 item 3): who is a canary, and whether a canaried version goes on.

Pure code shared by the merger (which decides) and the edges (which measure):

- :func:`in_canary` picks a share of the fleet deterministically by node id,
  so every process agrees on who the canaries are without talking, and a
  node stays a canary (or not) across restarts and versions.
- :class:`PairedLoss` is what a canary edge measures: the prequential log
  loss of the new version and of the previous one on the *same* labelled
  events (test-then-train, both scored before the label is known). It adds
  with ``+``, so the merger pools the canaries' reports exactly.
- :class:`CanaryPolicy` decides from the pooled loss: promote when the
  canaries do not do worse than ``margin``, roll back when they do, and
  nothing below ``min_events`` labelled events (noise is no verdict).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CanaryPolicy", "PairedLoss", "Verdict", "in_canary"]

_EPS = 1e-15


def in_canary(node_id: str, share: float) -> bool:
    """Whether ``node_id`` is among the ``share`` of nodes that get new versions first.

    A node's place is a uniform number from a hash of its id: the same on
    every machine and run, independent of the other nodes.

    >>> in_canary("store-1", 0.0), in_canary("store-1", 1.0)
    (False, True)
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the canary share must be in [0, 1], got {share}")
    digest = hashlib.sha256(node_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def log_loss(p: float, label: bool) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return -math.log(p if label else 1 - p)


@dataclass(frozen=True)
class PairedLoss:
    """Summed log loss of the new and the previous version on the same ``n`` events."""

    version: int  # the canaried version
    n: int = 0
    new: float = 0.0
    previous: float = 0.0

    def add(self, p_new: float, p_previous: float, label: bool) -> PairedLoss:
        return PairedLoss(
            self.version,
            self.n + 1,
            self.new + log_loss(p_new, label),
            self.previous + log_loss(p_previous, label),
        )

    def __add__(self, other: PairedLoss) -> PairedLoss:
        if other.version != self.version:
            raise ValueError(f"losses of versions {self.version} and {other.version} do not add")
        return PairedLoss(
            self.version, self.n + other.n, self.new + other.new, self.previous + other.previous
        )

    def as_metrics(self) -> dict[str, float]:
        """For a summary's ``metrics`` (a map of doubles)."""
        return {
            "canary_version": float(self.version),
            "canary_n": float(self.n),
            "canary_loss_new": self.new,
            "canary_loss_previous": self.previous,
        }

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> PairedLoss | None:
        """The report in a summary's metrics, or None if it carries none."""
        if "canary_version" not in metrics:
            return None
        return cls(
            int(metrics["canary_version"]),
            int(metrics.get("canary_n", 0)),
            float(metrics.get("canary_loss_new", 0.0)),
            float(metrics.get("canary_loss_previous", 0.0)),
        )


@dataclass(frozen=True)
class Verdict:
    action: str  # promote | rollback
    reason: str


@dataclass(frozen=True)
class CanaryPolicy:
    share: float
    margin: float = 0.0  # mean log loss the new version may lose to the previous one
    min_events: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"--canary must be a share in (0, 1), got {self.share}")
        if not self.margin >= 0:
            raise ValueError(f"the canary margin must be >= 0, got {self.margin}")
        if self.min_events < 1:
            raise ValueError(f"the canaries need at least 1 event, got {self.min_events}")

    def verdict(self, pooled: PairedLoss) -> Verdict | None:
        """Promote, roll back, or None: not enough labelled events yet.

        >>> policy = CanaryPolicy(0.1, min_events=2)
        >>> policy.verdict(PairedLoss(5, 2, new=4.0, previous=1.0)).action
        'rollback'
        """
        if pooled.n < self.min_events:
            return None
        new, previous = pooled.new / pooled.n, pooled.previous / pooled.n
        worse = new - previous
        said = (
            f"canaries' mean log loss on version {pooled.version} {new:.4f} vs "
            f"{previous:.4f} for the previous version on the same {pooled.n} events"
        )
        if worse > self.margin:
            return Verdict("rollback", f"{said}: worse by {worse:.4f} (margin {self.margin:g})")
        return Verdict("promote", f"{said}: not worse (margin {self.margin:g})")

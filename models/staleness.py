"""Asynchronous merges: how much an update counts given how old its base is.

A node trains from global version ``base_version`` while the global model
moves on; when its update arrives, ``staleness = global_version -
base_version`` rounds have passed. FedAsync (Xie et al. 2019, "Asynchronous
Federated Optimization") mixes it in with a weight that decays with
staleness, so a slow node still contributes but cannot drag the model back
to where it was. Two decays from that paper:

- polynomial: ``(1 + s) ** -exponent``;
- hinge: 1 up to ``hinge_after`` rounds, then ``1 / (slope * (s - hinge_after) + 1)``.

Updates staler than ``max_staleness`` are refused (:class:`StaleUpdateError`);
a base newer than the global model is a malformed summary.

Examples
--------
>>> staleness_weight(0), staleness_weight(3, exponent=1.0)
(1.0, 0.25)
>>> StalenessPolicy(kind="hinge", hinge_after=2, slope=1.0).weight(4)
0.3333333333333333
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.aggregate import stack
from models.errors import InvalidSummaryError, ModelError, StaleUpdateError

__all__ = ["DECAYS", "StalenessPolicy", "async_mix", "staleness_of", "staleness_weight"]

DECAYS = ("polynomial", "hinge")


def staleness_of(global_version: int, base_version: int, *, node_id: str = "?") -> int:
    """Rounds the global model moved on since ``base_version``; refuses a future base.

    Examples
    --------
    >>> staleness_of(7, 5)
    2
    """
    staleness = int(global_version) - int(base_version)
    if staleness < 0:
        raise InvalidSummaryError(
            f"node {node_id!r}: base version {base_version} is newer than the global "
            f"version {global_version} (staleness {staleness}); the node is ahead of "
            "the merger, so its summary or the merger's checkpoint is wrong"
        )
    return staleness


@dataclass(frozen=True, kw_only=True)
class StalenessPolicy:
    """How fast an update's weight decays with staleness, and the hard bound.

    Parameters
    ----------
    kind
        ``"polynomial"`` or ``"hinge"`` (see the module docstring).
    exponent
        Polynomial decay ``a`` in ``(1 + s) ** -a``; FedAsync uses 0.5.
    slope, hinge_after
        Hinge decay ``a`` and ``b``: full weight up to ``b`` rounds.
    max_staleness
        Refuse updates staler than this; ``None`` accepts any age.
    """

    kind: str = "polynomial"
    exponent: float = 0.5
    slope: float = 1.0
    hinge_after: int = 4
    max_staleness: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in DECAYS:
            raise ModelError(f"unknown staleness decay {self.kind!r}; use one of {DECAYS}")
        if not self.exponent >= 0 or not self.slope >= 0 or self.hinge_after < 0:
            raise ModelError("staleness exponent, slope and hinge_after must be >= 0")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ModelError(f"max_staleness must be >= 0 or None, got {self.max_staleness}")

    def check(self, staleness: int, *, node_id: str = "?") -> None:
        """Raise unless ``staleness`` is within ``0 .. max_staleness``."""
        if staleness < 0:
            raise InvalidSummaryError(
                f"node {node_id!r}: negative staleness {staleness}: its base version is "
                "newer than the global model"
            )
        if self.max_staleness is not None and staleness > self.max_staleness:
            raise StaleUpdateError(
                f"node {node_id!r}: staleness {staleness} exceeds the bound "
                f"{self.max_staleness}; it must retrain from a newer global model"
            )

    def weight(self, staleness: int, *, node_id: str = "?") -> float:
        """Weight in (0, 1], non-increasing in ``staleness``; 1 for a fresh update."""
        self.check(staleness, node_id=node_id)
        if self.kind == "polynomial":
            return float((1.0 + staleness) ** -self.exponent)
        if staleness <= self.hinge_after:
            return 1.0
        return float(1.0 / (self.slope * (staleness - self.hinge_after) + 1.0))


def staleness_weight(
    staleness: int,
    *,
    kind: str = "polynomial",
    exponent: float = 0.5,
    slope: float = 1.0,
    hinge_after: int = 4,
    max_staleness: int | None = None,
    node_id: str = "?",
) -> float:
    """:meth:`StalenessPolicy.weight` in one call."""
    policy = StalenessPolicy(
        kind=kind,
        exponent=exponent,
        slope=slope,
        hinge_after=hinge_after,
        max_staleness=max_staleness,
    )
    return policy.weight(staleness, node_id=node_id)


def async_mix(
    current: np.ndarray, update: np.ndarray, *, mix: float, weight: float = 1.0
) -> np.ndarray:
    """FedAsync's step ``(1 - mix * w) * current + mix * w * update``.

    ``mix`` is the server's mixing rate for a fresh update, ``weight`` the
    staleness weight ``w(s)``; a convex combination, so the result never
    leaves the segment between the two vectors.

    Examples
    --------
    >>> async_mix(np.zeros(2), np.ones(2), mix=0.5, weight=0.5).tolist()
    [0.25, 0.25]
    """
    if not isinstance(mix, int | float) or not 0 < mix <= 1:
        raise ModelError(f"mix must be in (0, 1], got {mix!r}")
    if not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ModelError(f"staleness weight must be in [0, 1], got {weight!r}")
    both = stack([current, update])
    alpha = mix * weight
    return (1.0 - alpha) * both[0] + alpha * both[1]

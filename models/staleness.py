"""Asynchronous merges: how much an update counts given how old its base is.

staleness = current global version − the version the update was trained
from. FedAsync (Xie et al. 2019) weights by a decreasing function of it;
updates older than ``max_staleness`` are refused with a reason.

>>> staleness_weight(0), staleness_weight(3, exponent=1.0)
(1.0, 0.25)
"""

from __future__ import annotations

from models.errors import InvalidSummaryError, StaleUpdateError


def staleness_weight(
    staleness: int,
    *,
    exponent: float = 0.5,
    kind: str = "polynomial",
    hinge_after: int = 4,
    max_staleness: int | None = None,
    node_id: str = "?",
) -> float:
    """``(1 + s)^-exponent`` (polynomial) or 1 up to ``hinge_after`` then decaying (hinge)."""
    if staleness < 0:
        raise InvalidSummaryError(
            f"node {node_id!r}: base version is newer than the global model (staleness {staleness})"
        )
    if max_staleness is not None and staleness > max_staleness:
        raise StaleUpdateError(
            f"node {node_id!r}: staleness {staleness} exceeds the bound {max_staleness}"
        )
    if kind == "polynomial":
        return float((1 + staleness) ** -exponent)
    if kind == "hinge":
        return (
            1.0
            if staleness <= hinge_after
            else float(1 / (exponent * (staleness - hinge_after) + 1))
        )
    raise InvalidSummaryError(f"unknown staleness decay {kind!r}: use polynomial or hinge")

"""What does not combine with secure aggregation, refused with the reason.

Under secure aggregation the merger learns one number per coordinate: the
sum. Anything that must look at each node's update on its own cannot run:
a coordinate-wise median or trimmed mean (FedMedian, FedTrimmedAvg), Krum's
distances between updates, screening of outliers, and server-side clipping
of each update. Those are refused with a :class:`ModelError` naming why,
rather than silently degraded to FedAvg. FedAvg (``fedavg``, ``exact``)
needs only sums: the sample-weighted weights and the sample counts.
Server optimizers (FedAvgM, FedAdam) and FedAsync's staleness weights only
need sums too, but are not wired yet.
"""

from __future__ import annotations

from typing import Any

from models.errors import ModelError
from models.strategy_base import split_spec

__all__ = ["SECURE_STRATEGIES", "SECURE_SPECS", "check_secure"]

SECURE_STRATEGIES = ("fedavg", "exact")
#: specs whose merge is sums: sample-weighted learned vector, counts, sums, sums of squares
SECURE_SPECS = ("fraud-linear",)

_WHY = {
    "fedmedian": "a coordinate-wise median needs every node's value",
    "trimmed": "a trimmed mean sorts every node's value per coordinate",
    "krum": "Krum scores each update by its distances to the others",
    "multikrum": "Multi-Krum scores each update by its distances to the others",
    "fedavgm": "server optimizers over masked sums are not wired yet",
    "fedadam": "server optimizers over masked sums are not wired yet",
    "async": "staleness weights over masked sums are not wired yet",
}


def check_secure(strategy: str | Any, **options: Any) -> None:
    """Raise :class:`ModelError` unless ``strategy`` (and options) run on sums alone.

    >>> check_secure("fedavg")
    >>> check_secure("krum")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    models.errors.ModelError: secure aggregation cannot run strategy 'krum': Krum scores ...
    """
    from models.strategies import get_strategy

    name = strategy if isinstance(strategy, str) else getattr(strategy, "name", repr(strategy))
    base, _ = split_spec(name, positional={"trimmed": "beta"})
    tail = "the merger only learns the sum of the masked updates"
    if base not in SECURE_STRATEGIES:
        why = _WHY.get(base, "it is not one of " + ", ".join(SECURE_STRATEGIES))
        raise ModelError(
            f"secure aggregation cannot run strategy {name!r}: {why}; {tail} "
            "(use fedavg, or turn secure aggregation off)"
        )
    strat = get_strategy(name, **options) if isinstance(strategy, str) else strategy
    guards = strat.safeguards
    if guards.screen:
        raise ModelError(
            f"secure aggregation cannot screen updates (screen=true): screening compares "
            f"each node's update with the others'; {tail} -- robust screening is lost"
        )
    if guards.clip_norm is not None:
        raise ModelError(
            "secure aggregation cannot clip updates on the merger (clip_norm): "
            f"{tail}; clip on the nodes instead"
        )


def check_spec(model_name: str) -> None:
    """Raise unless the spec's whole merge is sums (see :data:`SECURE_SPECS`)."""
    if model_name not in SECURE_SPECS:
        raise ModelError(
            f"secure aggregation covers {', '.join(SECURE_SPECS)} (learned weights and scaler "
            f"counts, sums and sums of squares); {model_name!r}'s exact state is not wired yet"
        )

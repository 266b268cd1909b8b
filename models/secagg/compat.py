"""What does not combine with secure aggregation, refused with the reason.

Under secure aggregation the merger learns one number per coordinate: the
sum. Anything that must look at each node's update on its own cannot run:
a coordinate-wise median or trimmed mean (FedMedian, FedTrimmedAvg), Krum's
distances between updates, screening of outliers, and server-side clipping
of each update. Those are refused with a :class:`ModelError` naming why,
rather than silently degraded to FedAvg. FedAvg (``fedavg``, ``exact``)
needs only sums: the sample-weighted weights and the sample counts. The
server optimizers (``fedavgm``, ``fedadam``) need only the round's mean,
which the sum gives, then step from the current global on the merger.
FedAsync's staleness weights would need each node's staleness inside its
masked input: not wired yet.

Specs join when their whole merge is sums (:mod:`models.secagg.layout`).
``iot-hst`` does not: see :data:`_WHY_SPEC`.
"""

from __future__ import annotations

from typing import Any

from models.errors import ModelError
from models.strategy_base import split_spec

__all__ = ["SECURE_SPECS", "SECURE_STRATEGIES", "check_secure", "check_spec"]

SECURE_STRATEGIES = ("fedavg", "exact", "fedavgm", "fedadam")
#: specs whose merge is sums (models.secagg.layout): learned vector, counts, sums, squares
SECURE_SPECS = ("fraud-linear", "iot-gauss")

_WHY_SPEC = {
    "iot-hst": (
        "its merge is not all sums: until a contributor has completed a reference window, "
        "the first reference is built from each node's *latest* current window (a node "
        "that sent twice counts once, IotHSTAlgebra._first_reference), which needs to "
        "know which updates came from one node -- a masked sum cannot tell"
    ),
}

_WHY = {
    "fedmedian": "a coordinate-wise median needs every node's value",
    "trimmed": "a trimmed mean sorts every node's value per coordinate",
    "krum": "Krum scores each update by its distances to the others",
    "multikrum": "Multi-Krum scores each update by its distances to the others",
    "async": "staleness weights over masked sums are not wired yet",
}


def check_secure(strategy: str | Any, **options: Any) -> Any:
    """The strategy object; :class:`ModelError` unless it (and options) run on sums alone.

    >>> check_secure("fedavg").name
    'fedavg'
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
    return strat


def check_spec(model_name: str) -> None:
    """Raise unless the spec's whole merge is sums (see :data:`SECURE_SPECS`)."""
    if model_name not in SECURE_SPECS:
        why = _WHY_SPEC.get(model_name, "its exact state is not written as sums")
        raise ModelError(
            f"secure aggregation covers {', '.join(SECURE_SPECS)} (learned weights, counts, "
            f"sums and sums of squares / covariances); {model_name!r}: {why}"
        )

"""Differential privacy for updates: clip, add Gaussian noise, account for (ε, δ).

What (ε, δ) means
-----------------
A randomised release ``M`` is (ε, δ)-differentially private when, for any
two inputs ``D`` and ``D'`` that differ in one node's contribution and any
set of outcomes ``S``, ``P[M(D) ∈ S] <= e^ε · P[M(D') ∈ S] + δ``. Whatever an
observer (the merger, the other nodes, anyone reading the global model) sees,
it could almost as well have happened without that node: ε bounds the
evidence (the likelihood ratio is at most e^ε), δ is the small probability
that the bound fails. Pick δ well below 1 / (number of nodes); ε of about 1
is strong, 10 is weak.

How it is achieved here
-----------------------
Clipping every update (delta from the global model) to L2 norm ``C`` bounds
one node's influence: its sensitivity is ``C`` when neighbouring inputs add
or remove one node's update (the DP-FedAvg convention, McMahan et al. 2018).
Adding N(0, (σC)²) noise to every coordinate is the Gaussian mechanism with
noise multiplier σ.

Accounting: Rényi DP (Mironov 2017)
-----------------------------------
One Gaussian release is (α, α / (2σ²))-RDP for every order α > 1; ``T``
releases (rounds) compose by adding: (α, Tα / (2σ²)). Converting to
(ε, δ): ε = min over α > 1 of ``Tα / (2σ²) + ln(1/δ) / (α - 1)``. The
minimum has a closed form, with ρ = T / (2σ²) and L = ln(1/δ):
α* = 1 + sqrt(L / ρ) and ε = ρ + 2 sqrt(ρ L). It is tighter than the
classical bound σ >= sqrt(2 ln(1.25/δ)) / ε per release combined with
advanced composition, and needs no grid over α. No amplification by
subsampling is claimed: every node takes part in every round.

A privacy budget ε_max caps the releases: :func:`releases_within` is the
largest ``T`` whose ε stays within it (ρ_max = (sqrt(L + ε_max) - sqrt(L))²,
T = floor(2σ² ρ_max)); a node that has spent it stops publishing.

If the merger itself is the adversary (local DP, replace-one adjacency), the
sensitivity is ``2C``: account with ``noise_multiplier / 2``.

>>> round(epsilon_for(noise_multiplier=1.0, delta=1e-5, rounds=1), 2)
5.3
"""

from __future__ import annotations

import math

import numpy as np

from models.errors import InvalidSummaryError, ModelError

__all__ = [
    "clip_by_l2_norm",
    "epsilon_for",
    "gaussian_mechanism",
    "noise_multiplier_for",
    "releases_within",
]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ModelError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _l2_norm(values: np.ndarray) -> float:
    """L2 norm without overflow: scale by the largest magnitude first."""
    top = float(np.abs(values).max()) if values.size else 0.0
    return 0.0 if top == 0.0 else top * float(np.linalg.norm(values / top))


def clip_by_l2_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    """A copy of ``vector`` scaled down to L2 norm ``max_norm`` if it is longer.

    Scaling (not per-coordinate clipping) keeps the update's direction.

    Examples
    --------
    >>> clip_by_l2_norm(np.array([6.0, 8.0]), 5.0).tolist()
    [3.0, 4.0]
    >>> clip_by_l2_norm(np.array([0.3, 0.4]), 1.0).tolist()
    [0.3, 0.4]
    """
    bound = _positive("max_norm", max_norm)
    values = np.array(vector, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidSummaryError("cannot clip a vector with NaN or inf values")
    norm = _l2_norm(values)
    return values if norm <= bound else values * (bound / norm)


def gaussian_mechanism(
    vector: np.ndarray, max_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Clip to ``max_norm``, then add N(0, (noise_multiplier · max_norm)²) per coordinate.

    ``rng`` must be a seeded :class:`numpy.random.Generator` owned by the
    caller: global random state would make runs irreproducible and shared.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noisy = gaussian_mechanism(np.ones(4), 1.0, 0.0, rng)
    >>> noisy.tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    sigma = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    if not isinstance(rng, np.random.Generator):
        raise ModelError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    clipped = clip_by_l2_norm(vector, max_norm)
    if sigma == 0:
        return clipped
    return clipped + rng.normal(0.0, sigma * float(max_norm), size=clipped.shape)


def epsilon_for(noise_multiplier: float, delta: float, rounds: int = 1) -> float:
    """ε after ``rounds`` Gaussian releases at ``delta`` (RDP accountant, see module doc).

    Examples
    --------
    >>> epsilon_for(2.0, 1e-5, 10) < epsilon_for(1.0, 1e-5, 10)
    True
    >>> epsilon_for(0.0, 1e-5)
    inf
    """
    sigma = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    if not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ModelError(f"delta must be in (0, 1), got {delta!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ModelError(f"rounds must be an integer >= 1, got {rounds!r}")
    if sigma == 0:
        return math.inf
    rho = rounds / (2.0 * sigma**2)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def noise_multiplier_for(epsilon: float, delta: float, rounds: int = 1) -> float:
    """The smallest σ whose :func:`epsilon_for` is ``epsilon``: the closed form inverted.

    Examples
    --------
    >>> sigma = noise_multiplier_for(1.0, 1e-5, rounds=100)
    >>> round(epsilon_for(sigma, 1e-5, rounds=100), 6), round(sigma, 2)
    (1.0, 49.01)
    """
    eps = _positive("epsilon", epsilon)
    epsilon_for(1.0, delta, rounds)  # same checks on delta and rounds
    log_term = math.log(1.0 / delta)
    # eps = rho + 2 sqrt(rho L)  <=>  sqrt(rho) = sqrt(L + eps) - sqrt(L)
    sqrt_rho = math.sqrt(log_term + eps) - math.sqrt(log_term)
    return math.sqrt(rounds / (2.0 * sqrt_rho**2))


def releases_within(budget: float, noise_multiplier: float, delta: float) -> int:
    """How many Gaussian releases at ``noise_multiplier`` keep ε at ``delta`` <= ``budget``.

    The inverse of :func:`epsilon_for` in ``rounds`` (ε grows with every
    release), checked against it so a float rounding at the boundary never
    allows one release too many. 0 when not even one fits; no noise fits none.

    Examples
    --------
    >>> releases_within(4.0, 3.0, 1e-5)
    5
    >>> epsilon_for(3.0, 1e-5, 5) <= 4.0 < epsilon_for(3.0, 1e-5, 6)
    True
    """
    eps = _positive("budget", budget)
    sigma = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    epsilon_for(1.0, delta)  # the checks on delta
    if sigma == 0:
        return 0
    log_term = math.log(1.0 / delta)
    rho_max = (math.sqrt(log_term + eps) - math.sqrt(log_term)) ** 2
    n = max(int(math.floor(2.0 * sigma**2 * rho_max)), 0)
    while n > 0 and epsilon_for(sigma, delta, n) > eps:
        n -= 1
    while epsilon_for(sigma, delta, n + 1) <= eps:
        n += 1
    return n

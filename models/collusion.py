"""Omniscient colluding attacks: updates shaped from the honest updates of the round.

Scaled, sign-flipped or random updates (:mod:`models.poisoning`) stand out from
the honest spread, so medians, trimming and screening drop them. These two
attacks stay inside or just at the edge of that spread, which is where
robust aggregation is known to fail; every attacker of a round sends the
same vector (their votes add up instead of scattering):

- **ALIE**, "a little is enough" (Baruch et al., NeurIPS 2019): per
  coordinate ``mean - z * std`` of the honest updates. ``z`` comes from the
  number of nodes ``n`` and attackers ``m``: the attackers need
  ``s = floor(n / 2 + 1) - m`` honest nodes on their side of the median, so
  ``z = Phi^-1((n - s) / n)`` -- the farthest shift the median still takes.
- **IPM**, inner-product manipulation (Xie et al., UAI 2020):
  ``-epsilon * mean`` of the honest updates, so the merged step's inner
  product with the true gradient turns negative once attackers outweigh it.

Both need the honest updates: the caller passes them (the papers' omniscient
attacker); the math here is pure numpy. Exact copies are a tell no real
colluders would leave, so :func:`jitter` gives each attacker its own small
Gaussian noise, scaled per coordinate by the honest spread: a defence that
only holds against identical vectors does not hold.

>>> honest = np.array([[1.0, 0.0], [3.0, 2.0]])
>>> alie_update(honest, 1.0).tolist()
[1.0, 0.0]
>>> ipm_update(honest, 0.5).tolist()
[-1.0, -0.5]
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from models.errors import ModelError

__all__ = ["alie_update", "alie_z", "ipm_update", "jitter"]


def alie_z(n_nodes: int, n_attackers: int) -> float:
    """Baruch et al.'s ``z_max`` for ``n_nodes`` of which ``n_attackers`` collude.

    >>> round(alie_z(10, 2), 4), round(alie_z(10, 4), 4), round(alie_z(50, 12), 4)
    (0.2533, 0.8416, 0.5828)

    Guard: at least one attacker, and fewer than it takes to hold the median
    alone (``s >= 1``; past that ``z`` is infinite and no rule can help). A ``z``
    of 0 or less (too few attackers to need a shift) is returned as is.
    """
    s = math.floor(n_nodes / 2 + 1) - n_attackers
    if n_attackers < 1 or s < 1:
        raise ModelError(
            f"ALIE needs 1 <= attackers < a median's majority, got {n_attackers} of {n_nodes}"
        )
    return NormalDist().inv_cdf((n_nodes - s) / n_nodes)


def _honest(honest: np.ndarray) -> np.ndarray:
    honest = np.asarray(honest, dtype=np.float64)
    if honest.ndim != 2 or honest.shape[0] < 1:
        raise ModelError("a colluding attack needs at least one honest update (rows)")
    return honest


def alie_update(honest: np.ndarray, z: float) -> np.ndarray:
    """Per coordinate ``mean - z * std`` (population std) of the rows of ``honest``."""
    honest = _honest(honest)
    return honest.mean(axis=0) - z * honest.std(axis=0)


def ipm_update(honest: np.ndarray, epsilon: float) -> np.ndarray:
    """``-epsilon * mean`` of the rows of ``honest``."""
    return -epsilon * _honest(honest).mean(axis=0)


def jitter(
    sent: np.ndarray, honest: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """``sent`` plus Gaussian noise of std ``scale`` x the honest population std, per coordinate.

    Coordinates where the honest updates agree get none (noise there would be the
    tell). ``scale`` 0 returns ``sent`` unchanged.

    >>> honest = np.array([[1.0, 0.0], [3.0, 0.0]])
    >>> out = jitter(np.array([2.0, 0.0]), honest, 0.1, np.random.default_rng(0))
    >>> bool(out[0] != 2.0), float(out[1])
    (True, 0.0)
    """
    if not (np.isfinite(scale) and scale >= 0):
        raise ModelError(f"jitter must be a finite number >= 0, got {scale!r}")
    honest = _honest(honest)
    if scale == 0:
        return np.asarray(sent, dtype=np.float64)
    return sent + scale * honest.std(axis=0) * rng.standard_normal(honest.shape[1])

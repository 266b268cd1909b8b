"""Update screening: a poisoning defence that says why it excluded a node.

Screening looks at one round's updates — deltas from the current global
model, or raw weights when there is none yet — and flags two kinds of
outlier, each measured by the robust z-score ``0.6745 * (x - median) / MAD``,
which a few poisoned updates cannot inflate the way they inflate a mean and
a standard deviation:

- **norm**: the update is much *longer* than the round's: robust z above
  ``threshold`` **and** at least ``min_ratio`` (2) times the median norm. The
  ratio guards small rounds whose honest norms happen to cluster (tiny MAD),
  where z alone flags honest updates 30 % longer than the rest; an update
  under twice the typical length cannot pull the aggregate further than two
  honest nodes could. Short updates are not flagged: a small step cannot
  drag the aggregate far, and excluding it would only punish nodes that saw
  little data (or whose updates DP clipping left below the bound).
- **direction**: its cosine similarity to the coordinate-wise median update
  is a robust-z outlier *below* the round (z < ``-threshold``) **and** is
  negative, i.e. it would pull the model back against the round's
  consensus. Both are required because honest non-IID updates spread widely
  in direction; a sign-flipping attack is caught by either test. With no
  consensus direction (median update ~0) direction is not screened.

The scale never drops below a relative tolerance ``rtol * |median|``
(default 5 %; ``atol`` when the median is 0 too). That covers MAD = 0 (most
updates agree exactly: identical updates get z = 0 and nothing divides by
zero) and small rounds whose MAD happens to be tiny, where honest updates a
few percent longer would otherwise be flagged: with the defaults a norm must
be at least ~26 % above the round median to count as an outlier.

Rules: fewer than :data:`MIN_UPDATES` updates are not screened (no majority
to compare with), and never more than ``(n - 1) // 2`` updates are excluded,
the most extreme first, so screening cannot hand the round to a minority.

Examples
--------
>>> import numpy as np
>>> honest = [np.array([1.0, 1.0]) + 0.01 * i for i in range(5)]
>>> result = screen(honest + [np.array([-30.0, -30.0])])
>>> result.kept, list(result.excluded)
([0, 1, 2, 3, 4], [5])
>>> result.excluded[5].split(";")[0]
'norm 42.43 is 381.3 robust-z above the round median 1.45'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.aggregate import stack
from models.errors import ModelError

__all__ = ["MIN_UPDATES", "ScreeningResult", "robust_z", "screen"]

MIN_UPDATES = 3


@dataclass(frozen=True)
class ScreeningResult:
    """Indices kept (ascending) and, for each excluded index, why."""

    kept: list[int]
    excluded: dict[int, str] = field(default_factory=dict)


def robust_z(values: np.ndarray, *, rtol: float = 0.05, atol: float = 1e-12) -> np.ndarray:
    """Robust z-scores (median / MAD); the scale never drops below ``rtol * |median|``
    nor ``atol``, so a round of identical values yields zeros, not a division by 0.

    Examples
    --------
    >>> robust_z(np.array([1.0, 1.0, 1.0, 5.0])).round(1).tolist()
    [0.0, 0.0, 0.0, 54.0]
    """
    x = np.asarray(values, dtype=np.float64)
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median)))
    scale = max(mad, rtol * abs(median), atol)
    return 0.6745 * (x - median) / scale


Flag = tuple[int, float, str]  # index, severity (robust z), reason


def _norm_outliers(
    norms: np.ndarray, threshold: float, min_ratio: float, rtol: float
) -> list[Flag]:
    z = robust_z(norms, rtol=rtol)
    median = float(np.median(norms))
    return [
        (
            i,
            float(z[i]),
            f"norm {norms[i]:.4g} is {z[i]:.1f} robust-z above the round median {median:.4g}",
        )
        for i in range(len(norms))
        if z[i] > threshold and norms[i] >= min_ratio * median
    ]


def _direction_outliers(
    unit: np.ndarray, norms: np.ndarray, threshold: float, rtol: float
) -> list[Flag]:
    """Cosine to the coordinate-wise median row; nothing without a consensus direction."""
    reference = np.median(unit, axis=0)
    ref_norm = float(np.linalg.norm(reference))
    if ref_norm <= 1e-9 * float(np.median(norms)):
        return []
    dots = unit @ (reference / ref_norm)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    z = robust_z(cosines, rtol=rtol)
    median = float(np.median(cosines))
    return [
        (
            i,
            float(-z[i]),
            f"direction: cosine {cosines[i]:.3f} to the median update is "
            f"{-z[i]:.1f} robust-z below the round median {median:.3f}",
        )
        for i in range(len(norms))
        if z[i] < -threshold and cosines[i] < 0
    ]


def screen(
    vectors: Sequence[np.ndarray],
    *,
    threshold: float = 3.5,
    min_ratio: float = 2.0,
    rtol: float = 0.05,
) -> ScreeningResult:
    """Indices to keep, and a reason for each excluded one (see the module docstring)."""
    if not threshold > 0 or not min_ratio >= 1:
        raise ModelError(
            f"screening needs threshold > 0 and min_ratio >= 1, got {threshold!r}, {min_ratio!r}"
        )
    matrix = stack(vectors)
    n, top = len(matrix), float(np.abs(matrix).max()) if matrix.size else 0.0
    if n < MIN_UPDATES or top == 0:
        return ScreeningResult(kept=list(range(n)))
    unit = matrix / top  # scaled so that norms cannot overflow
    unit_norms = np.linalg.norm(unit, axis=1)
    flags: dict[int, list[tuple[float, str]]] = {}
    for i, severity, why in [
        *_norm_outliers(unit_norms * top, threshold, min_ratio, rtol),
        *_direction_outliers(unit, unit_norms, threshold, rtol),
    ]:
        flags.setdefault(i, []).append((severity, why))
    worst = sorted(flags, key=lambda i: (-max(z for z, _ in flags[i]), i))[: (n - 1) // 2]
    excluded = {i: "; ".join(why for _, why in flags[i]) for i in sorted(worst)}
    return ScreeningResult([i for i in range(n) if i not in excluded], excluded)

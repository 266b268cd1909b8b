"""Update screening: a poisoning defence that says why it excluded a node.

An update is suspect when its L2 norm, or its direction relative to the
coordinate-wise median update, is an outlier among its round. Outliers are
measured by the robust z-score ``0.6745 * (x - median) / MAD``, which a few
poisoned updates cannot drag the way they drag a mean and a standard
deviation. With MAD = 0 (all honest updates alike) the scale falls back to a
small share of the median, so identical updates never divide by zero.

Rules: fewer than 3 updates are not screened (no majority to compare with);
never more than ``(n - 1) // 2`` updates are excluded (the most extreme first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.aggregate import stack


@dataclass(frozen=True)
class ScreeningResult:
    kept: list[int]
    excluded: dict[int, str] = field(default_factory=dict)


def robust_z(values: np.ndarray) -> np.ndarray:
    """Robust z-scores of ``values`` (median / MAD), safe when MAD is 0."""
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    scale = mad if mad > 1e-12 else max(abs(median) * 1e-3, 1e-12)
    return 0.6745 * (values - median) / scale


def screen(vectors: Sequence[np.ndarray], threshold: float = 3.5) -> ScreeningResult:
    """Indices to keep, and a reason for each excluded one."""
    matrix = stack(vectors)
    n = len(matrix)
    if n < 3:
        return ScreeningResult(kept=list(range(n)))
    norms = np.linalg.norm(matrix, axis=1)
    median_vector = np.median(matrix, axis=0)
    reference = float(np.linalg.norm(median_vector))
    cosine = (
        matrix @ median_vector / np.maximum(norms * reference, 1e-12)
        if reference > 1e-12
        else np.ones(n)
    )
    z_norm, z_cos = robust_z(norms), robust_z(cosine)
    reasons: dict[int, tuple[float, str]] = {}
    median_norm = float(np.median(norms))
    for i in range(n):
        if abs(z_norm[i]) > threshold:
            reasons[i] = (abs(z_norm[i]), f"norm {norms[i]:.4g} is {z_norm[i]:+.1f} robust-z "
                          f"from the round median {median_norm:.4g}")  # fmt: skip
        elif z_cos[i] < -threshold and cosine[i] < 0.5:
            reasons[i] = (-z_cos[i], f"direction: cosine {cosine[i]:.3f} to the median update "
                          f"is {z_cos[i]:+.1f} robust-z below the round")  # fmt: skip
    worst = sorted(reasons, key=lambda i: -reasons[i][0])[: (n - 1) // 2]
    excluded = {i: reasons[i][1] for i in sorted(worst)}
    return ScreeningResult([i for i in range(n) if i not in excluded], excluded)

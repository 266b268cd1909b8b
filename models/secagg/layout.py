"""What each spec's node offers to a secure round, and how the merger rebuilds the merge.

Secure aggregation only lets the merger see a sum, so a spec can join only
if its whole merge is a function of sums of per-node vectors. Each such spec
has a :class:`SumLayout` here: ``values`` is a node's vector (before fixed
point and masks), ``rebuild`` turns the unmasked sum into the merged
summary (and learned vector), and ``onto`` accumulates it onto the current
global exactly as the clear merge does (``merge(..., accumulate=True)``).

- ``fraud-linear``: FedAvg needs ``w * n * seen`` and ``n * seen`` per
  coordinate; the scaler needs ``count``, ``count * mean`` and ``count *
  (var + mean^2)``; then ``n``.
- ``iot-gauss``: the parallel covariance merge of ``(n, mean, cov)`` is
  ``N = sum n``, ``mean = sum(n mean) / N`` and ``cov = sum(n (cov + mean
  mean^T)) / N - mean mean^T``, so a node offers ``n * mean``, the upper
  triangle of ``n * (cov + mean mean^T)`` (the matrix is symmetric) and ``n``.

``iot-hst`` is not here: see :mod:`models.secagg.compat` for why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from models.exact import merge_covariances, merge_moments
from models.specs.algebra import SummaryAlgebra
from models.summary import Summary

__all__ = ["LAYOUTS", "GaussSums", "LinearSums", "SumLayout"]


class SumLayout(Protocol):
    """One spec's merge written as sums (module docstring)."""

    def size(self, d: int) -> int:
        """Values a node offers over ``d`` features."""
        ...

    def values(self, algebra: SummaryAlgebra, s: Summary, votes: bool) -> np.ndarray:
        """The node's vector from its aligned summary; ``votes``: its learned part counts."""
        ...

    def rebuild(
        self, algebra: SummaryAlgebra, total: np.ndarray, template: Summary, base: Summary | None
    ) -> tuple[Summary, np.ndarray]:
        """The merged summary of the sum (not yet onto ``base``) and its learned vector."""
        ...

    def onto(self, merged: Summary, base: Summary) -> Summary:
        """``merged``'s statistics accumulated onto the current global's."""
        ...


class LinearSums:
    """A sample-weighted learned vector (FedAvg per coordinate) and a feature scaler."""

    def size(self, d: int) -> int:
        return 5 * d + 3  # weights and intercept, their votes, three scaler sums, n

    def values(self, algebra: SummaryAlgebra, s: Summary, votes: bool) -> np.ndarray:
        n = float(s.n_samples)
        seen = algebra.learned_mask(s).astype(np.float64) * float(votes)
        count = s.tensor("count").astype(np.float64)
        mean, var = s.tensor("mean"), s.tensor("var")
        parts = [algebra.learned_vector(s) * n * seen, n * seen, count, count * mean]
        return np.concatenate([*parts, count * (var + mean**2), [n]])

    def rebuild(
        self, algebra: SummaryAlgebra, total: np.ndarray, template: Summary, base: Summary | None
    ) -> tuple[Summary, np.ndarray]:
        d = len(template.features)
        weighted, seen = total[: d + 1], total[d + 1 : 2 * d + 2]
        count, sums, squares = (
            total[2 * d + 2 + i * d : 2 * d + 2 + (i + 1) * d] for i in range(3)
        )
        count = np.rint(count)
        mean = np.divide(sums, count, out=np.zeros(d), where=count > 0)
        var = np.divide(squares, count, out=np.zeros(d), where=count > 0) - mean**2
        var = np.maximum(np.where(count > 0, var, 0.0), 0.0)
        fallback = algebra.learned_vector(base) if base is not None else np.zeros(d + 1)
        vector = np.divide(weighted, seen, out=fallback.astype(np.float64).copy(), where=seen > 0)
        tensors = dict(template.tensors) | {
            "count": count.astype(np.int64),
            "mean": mean,
            "var": var,
        }
        n = int(round(total[-1]))
        return replace(template, n_samples=n, tensors=tensors), vector

    def onto(self, merged: Summary, base: Summary) -> Summary:
        c, m, v = merge_moments(
            *(np.stack([merged.tensor(k), base.tensor(k)]) for k in ("count", "mean", "var"))
        )
        tensors = dict(merged.tensors) | {"count": c, "mean": m, "var": v}
        return replace(merged, n_samples=merged.n_samples + base.n_samples, tensors=tensors)


class GaussSums:
    """Count, mean and covariance of a Gaussian: three sums, nothing learned."""

    def size(self, d: int) -> int:
        return d + d * (d + 1) // 2 + 1

    def values(self, algebra: SummaryAlgebra, s: Summary, votes: bool) -> np.ndarray:
        n = float(s.n_samples)
        mean, cov = s.tensor("mean"), s.tensor("cov")
        upper = np.triu_indices(len(mean))
        second = n * (cov + np.outer(mean, mean))
        return np.concatenate([n * mean, second[upper], [n]])

    def rebuild(
        self, algebra: SummaryAlgebra, total: np.ndarray, template: Summary, base: Summary | None
    ) -> tuple[Summary, np.ndarray]:
        d = len(template.features)
        n = int(round(total[-1]))
        second = np.zeros((d, d))
        second[np.triu_indices(d)] = total[d:-1]
        second = second + np.triu(second, 1).T
        mean = total[:d] / n if n else np.zeros(d)
        cov = second / n - np.outer(mean, mean) if n else np.zeros((d, d))
        tensors = dict(template.tensors) | {"mean": mean, "cov": cov}
        return replace(template, n_samples=n, tensors=tensors), np.zeros(0)

    def onto(self, merged: Summary, base: Summary) -> Summary:
        parts = [p for p in (merged, base) if p.n_samples]
        if len(parts) < 2:
            return parts[0] if parts else merged
        n, mean, cov = merge_covariances(
            np.array([p.n_samples for p in parts], dtype=np.int64),
            np.stack([p.tensor("mean") for p in parts]),
            np.stack([p.tensor("cov") for p in parts]),
        )
        return replace(
            merged, n_samples=int(n), tensors=dict(merged.tensors) | {"mean": mean, "cov": cov}
        )


#: spec name -> its layout; a spec missing here is refused (models.secagg.compat.check_spec)
LAYOUTS: dict[str, SumLayout] = {"fraud-linear": LinearSums(), "iot-gauss": GaussSums()}

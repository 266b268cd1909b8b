"""Exact merges: statistics whose merge equals learning the concatenated stream.

A running mean/variance, a running covariance and a count of points per tree
node do not depend on how the stream was cut into shards: merging the shard
statistics gives the statistics of the whole stream, up to floating-point
rounding. These functions are the k-way form of Chan et al.'s parallel
formulas, vectorised over features, so a merger folds 1,000 summaries in one
numpy expression instead of 999 pairwise steps. The same formulas run
backwards (:func:`unmerge_moments`) to take a sub-stream out again, which is
how an edge isolates what it learned since it adopted a global model.

Reference: Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm
for computing sample variances" (1979).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np

from models.errors import InvalidSummaryError

__all__ = [
    "guarded",
    "merge_covariances",
    "merge_masses",
    "merge_moments",
    "unmerge_covariances",
    "unmerge_moments",
]

# Relative slack below zero that rounding may leave in a variance; anything
# more negative is a corrupt summary, not rounding.
_NEG_VAR_SLACK = 1e-9


P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn numpy overflow/invalid results into :class:`InvalidSummaryError`.

    Inputs are checked finite, but finite values near 1e308 still overflow
    when squared; a corrupt or hostile summary must fail with a typed error,
    not leak a RuntimeWarning and an inf into the global model.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                return fn(*args, **kwargs)
        except FloatingPointError as e:
            raise InvalidSummaryError(
                f"{fn.__name__}: values too large to combine ({e}); is the summary corrupt?"
            ) from e

    return wrapper


def _counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu":
        if not np.all(np.isfinite(counts)) or np.any(counts != np.round(counts)):
            raise InvalidSummaryError("counts must be whole numbers")
        counts = counts.astype(np.int64)
    if np.any(counts < 0):
        raise InvalidSummaryError("counts must be >= 0; a negative count is a corrupt summary")
    return counts.astype(np.int64, copy=False)


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidSummaryError(f"{name} has NaN or inf values")
    return array


def _variances(name: str, var: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Clip rounding noise below zero; reject real negatives."""
    if np.any(var < -_NEG_VAR_SLACK * np.maximum(scale, 1.0)):
        raise InvalidSummaryError(f"{name} has negative variances")
    return np.maximum(var, 0.0)


@guarded
def merge_moments(
    counts: np.ndarray, means: np.ndarray, variances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-feature (count, mean, population variance) of k shards.

    Parameters
    ----------
    counts, means, variances
        Arrays of shape ``(k, d)``: one row per shard, one column per feature.
        A shard that never saw a feature has count 0 there and adds nothing.

    Returns
    -------
    count, mean, variance
        Shape ``(d,)``; a feature nobody saw has count 0, mean 0, variance 0.

    Notes
    -----
    With ``n = sum(n_i)`` and ``mu = sum(n_i mu_i) / n``, the sum of squared
    deviations is ``M2 = sum(M2_i) + sum(n_i (mu_i - mu)**2)`` where
    ``M2_i = n_i var_i`` -- River's StandardScaler keeps ``var``, so it is
    converted to ``M2`` and back.

    Examples
    --------
    >>> c, m, v = merge_moments([[2], [2]], [[0.0], [2.0]], [[0.0], [0.0]])
    >>> c.tolist(), m.tolist(), v.tolist()
    ([4], [1.0], [1.0])
    """
    counts = _counts(np.atleast_2d(counts))
    means = _finite("means", np.atleast_2d(means))
    variances = _finite("variances", np.atleast_2d(variances))
    if not counts.shape == means.shape == variances.shape:
        raise InvalidSummaryError(
            f"counts, means and variances disagree in shape: "
            f"{counts.shape}, {means.shape}, {variances.shape}"
        )
    variances = _variances("variances", variances, means**2)
    if counts.shape[0] == 1:  # one shard is its own merge, bit for bit
        seen = counts[0] > 0
        return counts[0], np.where(seen, means[0], 0.0), np.where(seen, variances[0], 0.0)
    n = counts.sum(axis=0)
    weights = counts.astype(np.float64)
    seen = n > 0
    mean = np.divide((weights * means).sum(axis=0), n, out=np.zeros(n.shape), where=seen)
    m2 = (weights * variances).sum(axis=0) + (weights * (means - mean) ** 2).sum(axis=0)
    var = np.divide(m2, n, out=np.zeros(n.shape), where=seen)
    return n, mean, var


@guarded
def unmerge_moments(
    total: tuple[np.ndarray, np.ndarray, np.ndarray],
    part: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The moments of ``total`` with the sub-stream ``part`` taken out.

    Chan's formula solved for the other shard; it is exact in real arithmetic
    but subtracting large nearly equal numbers loses precision when ``part``
    is most of ``total``.

    Examples
    --------
    >>> c, m, v = unmerge_moments(([4], [1.0], [1.0]), ([2], [0.0], [0.0]))
    >>> c.tolist(), m.tolist(), v.tolist()
    ([2], [2.0], [0.0])
    """
    n_t, mu_t, var_t = (np.asarray(a) for a in total)
    n_p, mu_p, var_p = (np.asarray(a) for a in part)
    n_t, n_p = _counts(n_t), _counts(n_p)
    if np.any(n_p > n_t):
        raise InvalidSummaryError(
            "cannot take out more samples than the total holds: "
            "the part was not learned as a prefix of the total"
        )
    n = n_t - n_p
    left = n > 0
    mu = np.divide(
        n_t * _finite("means", mu_t) - n_p * _finite("means", mu_p),
        n,
        out=np.zeros(n.shape),
        where=left,
    )
    m2 = n_t * _finite("variances", var_t) - n_p * _finite("variances", var_p)
    m2 = m2 - n_p * (mu_p - mu_t) ** 2 - n * (mu - mu_t) ** 2
    var = np.divide(m2, n, out=np.zeros(n.shape), where=left)
    return n, mu, np.maximum(var, 0.0)


@guarded
def merge_covariances(
    counts: np.ndarray, means: np.ndarray, covariances: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Merge (count, mean vector, population covariance) of k shards.

    The matrix form of :func:`merge_moments`: ``C = sum(n_i S_i) +
    sum(n_i (mu_i - mu)(mu_i - mu)^T)`` with ``S_i`` each shard's covariance.

    Parameters
    ----------
    counts
        Shape ``(k,)``.
    means
        Shape ``(k, p)``.
    covariances
        Shape ``(k, p, p)``.

    Examples
    --------
    >>> n, mu, cov = merge_covariances([1, 1], [[0.0, 0.0], [2.0, 2.0]], np.zeros((2, 2, 2)))
    >>> n, mu.tolist(), cov.tolist()
    (2, [1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    """
    counts = _counts(np.atleast_1d(counts))
    means = _finite("means", means)
    covariances = _finite("covariances", covariances)
    k = counts.shape[0]
    if (
        means.ndim != 2
        or covariances.shape != (k, means.shape[1], means.shape[1])
        or (means.shape[0] != k)
    ):
        raise InvalidSummaryError(
            f"shapes disagree: counts {counts.shape}, means {means.shape}, "
            f"covariances {covariances.shape}"
        )
    n = int(counts.sum())
    p = means.shape[1]
    if n == 0:
        return 0, np.zeros(p), np.zeros((p, p))
    if k == 1:  # one shard is its own merge, bit for bit
        return n, means[0], covariances[0]
    weights = counts.astype(np.float64)
    mean = weights @ means / n
    dev = means - mean
    scatter = np.einsum("k,kij->ij", weights, covariances) + np.einsum(
        "k,ki,kj->ij", weights, dev, dev
    )
    return n, mean, scatter / n


@guarded
def unmerge_covariances(
    total: tuple[int, np.ndarray, np.ndarray], part: tuple[int, np.ndarray, np.ndarray]
) -> tuple[int, np.ndarray, np.ndarray]:
    """The (count, mean, covariance) of ``total`` with the sub-stream ``part`` out.

    Examples
    --------
    >>> n, mu, cov = unmerge_covariances((2, [1.0], [[1.0]]), (1, [0.0], [[0.0]]))
    >>> n, mu.tolist(), cov.tolist()
    (1, [2.0], [[0.0]])
    """
    n_t, n_p = int(_counts(np.array(total[0]))), int(_counts(np.array(part[0])))
    mu_t, mu_p = _finite("means", total[1]), _finite("means", part[1])
    cov_t, cov_p = _finite("covariances", total[2]), _finite("covariances", part[2])
    if n_p > n_t:
        raise InvalidSummaryError(
            "cannot take out more samples than the total holds: "
            "the part was not learned as a prefix of the total"
        )
    n = n_t - n_p
    if n == 0:
        return 0, np.zeros_like(mu_t), np.zeros_like(cov_t)
    mu = (n_t * mu_t - n_p * mu_p) / n
    d_p, d = mu_p - mu_t, mu - mu_t
    scatter = n_t * cov_t - n_p * cov_p - n_p * np.outer(d_p, d_p) - n * np.outer(d, d)
    return n, mu, scatter / n


def merge_masses(masses: np.ndarray) -> np.ndarray:
    """Sum per-node point counts of identical trees, shard by shard (axis 0).

    Masses are counts of points that fell in each node's half-space, so the
    masses of the union of several windows are the sums of each window's.
    Trees must be identical (same seed, limits, feature set and height) for a
    node index to name the same half-space on every shard; the spec checks
    that through a tree digest before calling this.

    Examples
    --------
    >>> merge_masses([[[1, 2]], [[3, 4]]]).tolist()
    [[4, 6]]
    """
    masses = _counts(np.asarray(masses))
    return masses.sum(axis=0)

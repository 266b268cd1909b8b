"""An online multivariate Gaussian anomaly scorer, exactly mergeable.

River has no detector whose state merges exactly across nodes; a running mean
and covariance do (:func:`models.exact.merge_covariances`), and the
Mahalanobis distance to them is a classic anomaly score for correlated
sensors (vibration rising with current is normal, vibration rising alone is
not). The class speaks River's vocabulary (``learn_one``/``score_one``) plus
numpy ``learn_many``/``score_many`` for mini-batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from models.errors import InvalidSummaryError, ModelError
from models.exact import guarded, merge_covariances

__all__ = ["GaussianScorer", "chi2_cdf"]


def chi2_cdf(d2: np.ndarray, dof: int) -> np.ndarray:
    """P(chi2_dof <= d2) by the Wilson-Hilferty cube-root approximation.

    Maps a squared Mahalanobis distance to [0, 1] so every spec scores in the
    same range (fixed-bin AUC histograms need that); the approximation is
    within about 1e-3 of the exact CDF for dof >= 3, and monotone, so rankings
    -- what AUC measures -- are exact.

    Examples
    --------
    >>> round(float(chi2_cdf(np.array([3.0]), 3)[0]), 2)
    0.61
    """
    d2 = np.maximum(np.asarray(d2, dtype=np.float64), 0.0)
    k = 2.0 / (9.0 * dof)
    z = (np.cbrt(d2 / dof) - (1.0 - k)) / math.sqrt(k)
    return 0.5 * np.vectorize(math.erfc, otypes=[float])(-z / math.sqrt(2.0))


class GaussianScorer:
    """Running mean + covariance (Welford); score = chi2 CDF of Mahalanobis^2.

    Parameters
    ----------
    ridge
        Relative ridge: ``ridge * (var_j + trace/p)`` is added to each
        diagonal entry before inversion, so a constant or collinear sensor
        cannot make the covariance singular, and the regularisation scales
        with the data.
    min_samples
        Scores are 0 until this many points were learned (like River's HST
        during its first window).

    Notes
    -----
    The feature set is fixed by the first point learned (sorted names):
    covariances between features need every point to carry every feature.
    Later points missing a feature are imputed with its running mean (no
    deviation), extra features are ignored.

    Examples
    --------
    >>> g = GaussianScorer()
    >>> for i in range(50):
    ...     g.learn_one({"a": i % 5, "b": (i % 5) * 2.0 + (i % 3) * 0.1})
    >>> g.score_one({"a": 2.0, "b": 4.1}) < 0.5 < g.score_one({"a": 2.0, "b": -4.0})
    True
    """

    def __init__(self, ridge: float = 1e-3, min_samples: int = 10) -> None:
        self.ridge = ridge
        self.min_samples = min_samples
        self._features: tuple[str, ...] = ()
        self._n = 0
        self._mean = np.zeros(0)
        self._scatter = np.zeros((0, 0))
        self._precision: np.ndarray | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return self._features

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Population covariance (divides by n)."""
        return self._scatter / self._n if self._n else np.zeros_like(self._scatter)

    def load_state(
        self, features: Sequence[str], n: int, mean: np.ndarray, covariance: np.ndarray
    ) -> None:
        """Replace the learned state, e.g. with a merged summary's."""
        p = len(features)
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        if mean.shape != (p,) or covariance.shape != (p, p) or n < 0:
            raise InvalidSummaryError("gauss state: shapes or count do not fit the features")
        self._features = tuple(features)
        self._n = int(n)
        self._mean = mean.copy()
        self._scatter = covariance * n
        self._precision = None

    def _row(self, x: Mapping[str, float]) -> np.ndarray:
        if not self._features:
            self.load_state(tuple(sorted(x)), 0, np.zeros(len(x)), np.zeros((len(x),) * 2))
        row = np.array([x.get(f, m) for f, m in zip(self._features, self._mean, strict=True)])
        if not np.all(np.isfinite(row)):
            raise ModelError("features must be finite numbers")
        return row

    @guarded
    def learn_one(self, x: Mapping[str, float]) -> None:
        row = self._row(x)
        self._n += 1
        delta = row - self._mean
        self._mean += delta / self._n
        self._scatter += np.outer(delta, row - self._mean)
        self._precision = None

    @guarded
    def learn_many(self, X: np.ndarray) -> None:
        """Learn rows of ``X`` (columns in :attr:`features` order) in one merge."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self._features) or not np.all(np.isfinite(X)):
            raise ModelError(f"X must be a finite (m, {len(self._features)}) matrix")
        if len(X) == 0:
            return
        batch_mean = X.mean(axis=0)
        batch_cov = (X - batch_mean).T @ (X - batch_mean) / len(X)
        n, mean, cov = merge_covariances(
            [self._n, len(X)],
            np.stack([self._mean, batch_mean]),
            np.stack([self.covariance, batch_cov]),
        )
        self.load_state(self._features, n, mean, cov)

    def _precision_matrix(self) -> np.ndarray:
        if self._precision is None:
            cov = self.covariance
            diag = np.diag(cov)
            level = diag.mean() if diag.size else 0.0
            ridge = self.ridge * (diag + level) + 1e-12
            try:
                self._precision = np.linalg.inv(cov + np.diag(ridge))
            except np.linalg.LinAlgError as e:
                raise ModelError(f"covariance cannot be inverted even with the ridge: {e}") from e
        return self._precision

    @guarded
    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for rows of ``X``; higher = more anomalous."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self._features) or not np.all(np.isfinite(X)):
            raise ModelError(f"X must be a finite (m, {len(self._features)}) matrix")
        if self._n < max(self.min_samples, 2) or not self._features:
            return np.zeros(len(X))
        delta = X - self._mean
        d2 = np.einsum("ij,jk,ik->i", delta, self._precision_matrix(), delta)
        return chi2_cdf(d2, len(self._features))

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._n < max(self.min_samples, 2) or not self._features:
            return 0.0
        return float(self.score_many(self._row(x)[None, :])[0])

"""Aggregation math over learned parameter vectors, Flower-style: pure functions.

Each function takes the updates' vectors (and weights where they matter),
checks its inputs first, and returns a new float64 vector. Strategies in
:mod:`models.strategies` compose these with screening, privacy and staleness.

Examples
--------
>>> import numpy as np
>>> fedavg([np.array([0.0, 2.0]), np.array([2.0, 4.0])], [1, 3]).tolist()
[1.5, 3.5]
>>> fedmedian([np.array([0.0]), np.array([1.0]), np.array([100.0])]).tolist()
[1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.errors import InvalidSummaryError, ModelError


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Validate and stack update vectors into an ``(n_updates, dim)`` matrix."""
    if len(arrays) == 0:
        raise InvalidSummaryError("no updates to aggregate")
    try:
        matrix = np.vstack([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    except ValueError as e:
        lengths = sorted({np.asarray(a).size for a in arrays})
        raise InvalidSummaryError(f"updates have different lengths {lengths}") from e
    if not np.all(np.isfinite(matrix)):
        raise InvalidSummaryError("an update has NaN or inf values")
    return matrix


def _weights(weights: Sequence[float], n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != n:
        raise InvalidSummaryError(f"{w.size} weights for {n} updates")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InvalidSummaryError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise InvalidSummaryError("the updates carry zero total weight (no samples)")
    return w / total


def fedavg(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Sample-weighted mean (McMahan et al. 2017)."""
    matrix = stack(arrays)
    return _weights(weights, len(matrix)) @ matrix


def fedmedian(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018): robust to < 50 % arbitrary updates."""
    return np.median(stack(arrays), axis=0)


def trimmed_mean(arrays: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``beta`` share at each end."""
    if not 0 <= beta < 0.5:
        raise ModelError(f"trimmed mean needs 0 <= beta < 0.5, got {beta}")
    matrix = np.sort(stack(arrays), axis=0)
    cut = int(beta * len(matrix))
    return matrix[cut : len(matrix) - cut].mean(axis=0)


def krum(
    arrays: Sequence[np.ndarray], num_malicious: int, num_to_keep: int = 1
) -> tuple[np.ndarray, list[int]]:
    """(Multi-)Krum (Blanchard et al. 2017): keep the updates closest to their peers.

    Each update is scored by the summed squared distance to its
    ``n - f - 2`` nearest neighbours; the ``num_to_keep`` lowest are averaged.
    """
    matrix = stack(arrays)
    n = len(matrix)
    if num_malicious < 0 or num_to_keep < 1:
        raise ModelError("krum needs num_malicious >= 0 and num_to_keep >= 1")
    neighbours = n - num_malicious - 2
    if neighbours < 1 or num_to_keep > n:
        raise ModelError(f"krum with f={num_malicious} needs at least {num_malicious + 3} updates")
    norms = np.einsum("ij,ij->i", matrix, matrix)
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab: an (n, n) Gram matrix instead of an (n, n, dim) tensor
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * matrix @ matrix.T, 0.0)
    scores = np.sort(squared, axis=1)[:, 1 : neighbours + 1].sum(axis=1)
    selected = sorted(np.argsort(scores, kind="stable")[:num_to_keep].tolist())
    return matrix[selected].mean(axis=0), selected


@dataclass
class FedAvgM:
    """Server momentum (Hsu et al. 2019) over the pseudo-gradient ``current - aggregate``."""

    server_lr: float = 1.0
    momentum: float = 0.9
    velocity: np.ndarray | None = field(default=None, repr=False)

    def step(self, current: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        gradient = np.asarray(current, dtype=np.float64) - aggregate
        if self.velocity is None or self.velocity.shape != gradient.shape:
            self.velocity = np.zeros_like(gradient)
        self.velocity = self.momentum * self.velocity + gradient
        return current - self.server_lr * self.velocity

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.velocity is None else {"velocity": self.velocity.copy()}


@dataclass
class FedAdam:
    """Adaptive server optimizer (Reddi et al. 2021, "Adaptive Federated Optimization")."""

    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def step(self, current: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        delta = np.asarray(aggregate, dtype=np.float64) - current
        if self.m is None or self.v is None or self.m.shape != delta.shape:
            self.m, self.v = np.zeros_like(delta), np.full_like(delta, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * np.square(delta)
        return current + self.server_lr * self.m / (np.sqrt(self.v) + self.tau)

    def state(self) -> dict[str, np.ndarray]:
        if self.m is None or self.v is None:
            return {}
        return {"m": self.m.copy(), "v": self.v.copy()}

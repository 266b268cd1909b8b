"""Aggregation math over learned parameter vectors, Flower-style: pure functions.

Strategies (:mod:`models.strategies`) compose these with screening, privacy
and staleness; the maths stays here, free of ids and options, so property
tests can hold each function against a numpy oracle. Inputs are checked
first: bad ones raise a :mod:`models.errors` type, never a numpy warning.

>>> import numpy as np
>>> fedavg([np.array([0.0, 2.0]), np.array([2.0, 4.0])], [1, 3]).tolist()
[1.5, 3.5]
>>> fedmedian([np.array([0.0]), np.array([1.0]), np.array([100.0])]).tolist()
[1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np

from models.errors import InvalidSummaryError, ModelError

__all__ = ["MAX_ABS_VALUE", "Arrays", "FedAdam", "FedAvgM", "fedavg", "fedmedian", "krum"]
__all__ += ["krum_scores", "krum_select", "normalized_weights", "stack", "trimmed_mean"]

# Update vectors: a sequence of 1-D arrays (or lists), or an (n_updates, dim) matrix.
Arrays = Sequence[np.ndarray] | Sequence[Sequence[float]] | np.ndarray

# No learned weight is anywhere near this; the bound keeps squared norms and
# Gram matrices of up to ~10^7 coordinates finite, so no overflow warning.
MAX_ABS_VALUE = 1e150


def stack(arrays: Arrays) -> np.ndarray:
    """Validated ``(n_updates, dim)`` float64 matrix of the update vectors."""
    if len(arrays) == 0:
        raise InvalidSummaryError("no updates to aggregate: a round needs at least one")
    try:
        raw = [np.asarray(a) for a in arrays] if not isinstance(arrays, np.ndarray) else [arrays]
        if any(r.dtype.kind not in "fiu" for r in raw):
            raise TypeError("an update vector is not real-valued numeric")
        if isinstance(arrays, np.ndarray):  # already a matrix: no per-row copies
            return _checked(arrays.astype(np.float64, copy=False).reshape(len(arrays), -1))
        rows = [r.astype(np.float64, copy=False).reshape(-1) for r in raw]
    except (TypeError, ValueError) as e:
        raise InvalidSummaryError(f"an update is not a numeric vector: {e}") from e
    lengths = sorted({r.size for r in rows})
    if len(lengths) > 1:
        raise InvalidSummaryError(
            f"updates have different lengths {lengths}: align them on one feature index first"
        )
    return _checked(np.vstack(rows))


def _checked(matrix: np.ndarray) -> np.ndarray:
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise InvalidSummaryError(f"updates at positions {bad} have NaN or inf values")
    if matrix.size and np.abs(matrix).max() > MAX_ABS_VALUE:
        raise InvalidSummaryError(
            f"an update has values beyond ±{MAX_ABS_VALUE:g}: it is corrupt, not a model"
        )
    return matrix


def normalized_weights(weights: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Non-negative weights scaled to sum to 1 (overflow-safe: divided by the max first)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != n:
        raise InvalidSummaryError(f"{w.size} weights for {n} updates")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InvalidSummaryError(f"weights must be finite and non-negative, got {w.tolist()}")
    top = w.max()
    if top <= 0:
        raise InvalidSummaryError("the updates carry zero total weight (no samples)")
    w = w / top
    return w / w.sum()


def fedavg(arrays: Arrays, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weighted mean, weights usually sample counts (McMahan et al. 2017, FedAvg):
    the baseline every other strategy is measured against."""
    matrix = stack(arrays)
    return normalized_weights(weights, len(matrix)) @ matrix


def fedmedian(arrays: Arrays) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018): any minority of updates, however
    large, cannot move a coordinate outside the range of the honest majority."""
    return np.median(stack(arrays), axis=0)


def trimmed_mean(arrays: Arrays, beta: float) -> np.ndarray:
    """Coordinate-wise mean after dropping ``floor(beta * n)`` values at each end.

    Robust to up to ``floor(beta * n)`` arbitrary updates (Yin et al. 2018),
    while averaging more honest values than the median does.

    Examples
    --------
    >>> trimmed_mean([[1.0], [2.0], [3.0], [1000.0]], 0.25).tolist()
    [2.5]
    """
    if not isinstance(beta, int | float) or not 0 <= beta < 0.5:
        raise ModelError(f"trimmed mean needs 0 <= beta < 0.5, got {beta!r}")
    matrix = stack(arrays)
    cut = int(beta * len(matrix))
    if cut == 0:
        return matrix.mean(axis=0)
    ordered = np.sort(matrix, axis=0)
    return ordered[cut : len(matrix) - cut].mean(axis=0)


def krum_scores(arrays: Arrays, num_malicious: int) -> np.ndarray:
    """Krum score per update: summed squared distance to its ``n - f - 2`` nearest peers.

    Distances come from one Gram matrix (``|a-b|² = |a|² + |b|² - 2a·b``,
    O(n²) memory instead of O(n² dim)) after centring on the coordinate-wise
    median, which keeps the subtraction accurate when all weights share a
    large offset; pairs close together far from the median are recomputed
    directly (:func:`_refine_close_pairs`).
    """
    return _krum_scores(stack(arrays), num_malicious)


def _krum_scores(matrix: np.ndarray, num_malicious: int) -> np.ndarray:
    n = len(matrix)
    if not isinstance(num_malicious, int | np.integer) or num_malicious < 0:
        raise ModelError(f"krum needs an integer num_malicious >= 0, got {num_malicious!r}")
    neighbours = n - int(num_malicious) - 2
    if neighbours < 1:
        raise ModelError(
            f"krum with num_malicious={num_malicious} needs at least {num_malicious + 3} "
            f"updates, got {n}: wait for more nodes or use fedmedian"
        )
    centred = matrix - np.median(matrix, axis=0)
    norms = np.einsum("ij,ij->i", centred, centred)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (centred @ centred.T), 0.0)
    _refine_close_pairs(squared, centred, norms)
    np.fill_diagonal(squared, np.inf)
    nearest = np.partition(squared, neighbours - 1, axis=1)[:, :neighbours]
    return nearest.sum(axis=1)


#: a Gram distance below this share of ``|a|² + |b|²`` is recomputed as ``|a - b|²``
_CANCELLATION = 1e-6
_PAIRS_PER_CHUNK = 4096


def _refine_close_pairs(squared: np.ndarray, centred: np.ndarray, norms: np.ndarray) -> None:
    """Recompute, in place, the distances the Gram identity gets by cancellation.

    ``|a|² + |b|² - 2a·b`` loses ``eps * (|a|² + |b|²)`` absolute: nothing for
    updates near the median, but two updates that sit close together far from
    it (colluding attackers sending one vector) would get their distance with
    a relative error up to ``eps / _CANCELLATION``. Those pairs, usually few,
    are recomputed directly, in chunks so memory stays O(chunk * dim).
    """
    close = squared < _CANCELLATION * (norms[:, None] + norms[None, :])
    rows, cols = np.nonzero(np.triu(close, k=1))
    for start in range(0, len(rows), _PAIRS_PER_CHUNK):
        i, j = rows[start : start + _PAIRS_PER_CHUNK], cols[start : start + _PAIRS_PER_CHUNK]
        diff = centred[i] - centred[j]
        exact = np.einsum("ij,ij->i", diff, diff)
        squared[i, j] = squared[j, i] = exact


def krum(arrays: Arrays, num_malicious: int, num_to_keep: int = 1) -> tuple[np.ndarray, list[int]]:
    """(Multi-)Krum (Blanchard et al. 2017): average the updates closest to their peers.

    Returns the mean of the ``num_to_keep`` lowest-scored updates and their
    indices (ascending). Tolerates ``num_malicious`` arbitrary updates when
    ``n >= num_malicious + 3``; ``num_to_keep`` may not exceed ``n - f``, or a
    malicious update could be among those kept.

    Examples
    --------
    >>> vector, kept = krum([[0.0], [0.1], [0.15], [0.3], [50.0]], num_malicious=1)
    >>> vector.tolist(), kept
    ([0.1], [1])
    >>> krum([[0.0], [0.1], [0.15], [0.3], [50.0]], 1, num_to_keep=3)[1]
    [0, 1, 2]
    """
    matrix = stack(arrays)
    selected = krum_select(_krum_scores(matrix, num_malicious), num_malicious, num_to_keep)
    return matrix[selected].mean(axis=0), selected


def krum_select(scores: np.ndarray, num_malicious: int, num_to_keep: int) -> list[int]:
    """Indices (ascending) of the ``num_to_keep`` lowest Krum scores, ties to the first."""
    limit = len(scores) - int(num_malicious)
    if not isinstance(num_to_keep, int | np.integer) or not 1 <= num_to_keep <= limit:
        raise ModelError(
            f"multi-krum keeps between 1 and n - f = {limit} updates, "
            f"got num_to_keep={num_to_keep!r}"
        )
    return sorted(np.argsort(scores, kind="stable")[: int(num_to_keep)].tolist())


@dataclass(frozen=True, kw_only=True)
class _ServerOptimizer:
    """Frozen hyper-parameters + explicit state arrays, so a merger can checkpoint it.

    The state follows the coordinates of the vectors it was built on. When a
    step arrives with a different length (the feature index grew) the state
    restarts from zero: momentum measured in another coordinate system means
    nothing. To keep it across such a change, realign :meth:`state` and
    rebuild with :meth:`from_state`.
    """

    _KEYS: ClassVar[tuple[str, ...]] = ()
    _state: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the state arrays (empty before the first step)."""
        return {k: v.copy() for k, v in self._state.items()}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], **config: float) -> Self:
        """An optimizer with hyper-parameters ``config`` resuming from ``state``."""
        optimizer = cls(**config)
        if not state:
            return optimizer
        if set(state) != set(cls._KEYS):
            raise InvalidSummaryError(
                f"{cls.__name__} state needs arrays {sorted(cls._KEYS)}, got {sorted(state)}"
            )
        try:
            arrays = stack([state[k] for k in cls._KEYS])
        except InvalidSummaryError as e:
            raise InvalidSummaryError(f"{cls.__name__} state is malformed: {e}") from e
        if "v" in cls._KEYS and np.any(arrays[cls._KEYS.index("v")] < 0):
            raise InvalidSummaryError(f"{cls.__name__} state: second moments must be >= 0")
        optimizer._state.update({k: a.copy() for k, a in zip(cls._KEYS, arrays, strict=True)})
        return optimizer

    def _get(self, key: str, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
        value = self._state.get(key)
        return np.full_like(like, fill) if value is None or value.shape != like.shape else value


def _check_rate(name: str, value: float, *, upper: float = np.inf, closed: bool = False) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (0 <= value <= upper if closed else 0 < value < upper):
        bounds = f"[0, {upper:g}]" if closed else f"(0, {upper:g})"
        raise ModelError(f"{name} must be a number in {bounds}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class FedAvgM(_ServerOptimizer):
    """Server momentum (Hsu et al. 2019) on the pseudo-gradient ``current - aggregate``.

    Momentum keeps the global model moving through rounds where nodes
    disagree; the effective rate is ``server_lr / (1 - momentum)``, so when
    local models converge fully each round it overshoots: lower ``momentum``
    (0 is plain FedAvg).

    Examples
    --------
    >>> opt = FedAvgM(server_lr=1.0, momentum=0.5)
    >>> opt.step(np.zeros(1), np.ones(1)).tolist()  # first step lands on the aggregate
    [1.0]
    >>> opt.step(np.ones(1), np.ones(1)).tolist()  # then momentum carries on
    [1.5]
    >>> FedAvgM.from_state(opt.state(), momentum=0.5).state()["velocity"].tolist()
    [-0.5]
    """

    _KEYS: ClassVar[tuple[str, ...]] = ("velocity",)
    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _check_rate("server_lr", self.server_lr)
        _check_rate("momentum", self.momentum, upper=1.0, closed=True)
        if self.momentum == 1.0:
            raise ModelError("momentum must be < 1, or the velocity never decays")

    def step(self, current: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        """The new global vector; updates the velocity."""
        current, aggregate = stack([current, aggregate])
        gradient = current - aggregate
        velocity = self.momentum * self._get("velocity", gradient) + gradient
        self._state["velocity"] = velocity
        return current - self.server_lr * velocity


@dataclass(frozen=True, kw_only=True)
class FedAdam(_ServerOptimizer):
    """Adam on the server (Reddi et al. 2021, "Adaptive Federated Optimization").

    With pseudo-gradient ``g = current - aggregate``: ``m = b1 m + (1-b1) g``,
    ``v = b2 v + (1-b2) g²``, ``new = current - lr m / (sqrt(v) + tau)``; ``v``
    starts at ``tau²`` and, as in the paper, there is no bias correction.
    Per-coordinate step sizes suit sparse features, which move rarely.

    Examples
    --------
    >>> opt = FedAdam(server_lr=0.1)
    >>> np.round(opt.step(np.zeros(2), np.ones(2)), 3).tolist()
    [0.099, 0.099]
    >>> sorted(opt.state())
    ['m', 'v']
    """

    _KEYS: ClassVar[tuple[str, ...]] = ("m", "v")
    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_rate("server_lr", self.server_lr)
        _check_rate("beta1", self.beta1, upper=1.0, closed=True)
        _check_rate("beta2", self.beta2, upper=1.0, closed=True)
        _check_rate("tau", self.tau)

    def step(self, current: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        """The new global vector; updates the moment estimates ``m`` and ``v``."""
        current, aggregate = stack([current, aggregate])
        gradient = current - aggregate
        m = self.beta1 * self._get("m", gradient) + (1 - self.beta1) * gradient
        v_prev = self._get("v", gradient, fill=self.tau**2)
        v = self.beta2 * v_prev + (1 - self.beta2) * np.square(gradient)
        self._state.update(m=m, v=v)
        return current - self.server_lr * m / (np.sqrt(v) + self.tau)

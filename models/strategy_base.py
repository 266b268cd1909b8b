"""The pipeline every strategy shares, so each strategy only says how it combines.

:meth:`BaseStrategy.aggregate` runs, for every strategy:

1. validation (typed errors), then updates in node-id order, so the result
   does not depend on arrival order; updates with no samples (and, for
   ``async``, the too stale) are set aside with a reason;
2. optional DP (:class:`Safeguards`): each delta from ``current`` (the raw
   vector without one) is clipped to ``clip_norm`` and noised; screening and
   aggregation then only see privatized updates, so the published exclusion
   reasons are post-processing covered by the same (ε, δ);
3. optional screening (:mod:`models.screening`) of those deltas;
4. the strategy's ``_combine`` over the survivors (Flower's one-method
   strategies), which may exclude more (Krum).

Nothing that a numpy warning could signal escapes: the run is under
``np.errstate(all="raise")`` and a floating-point error becomes a ModelError.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np

from models import aggregate as agg
from models.errors import InvalidSummaryError, ModelError, UnknownSpecError
from models.privacy import gaussian_mechanism
from models.screening import screen

__all__ = [
    "AggregateResult",
    "BaseStrategy",
    "Combined",
    "Safeguards",
    "Strategy",
    "NodeVector",
    "split_spec",
]


@dataclass(frozen=True, eq=False)
class NodeVector:
    """One node's learned parameters as a flat float64 vector (validated on aggregate).

    Compared by identity (``eq=False``): ``==`` on numpy arrays has no single
    truth value. Deduplicate by ``(node_id, sequence)``.
    """

    node_id: str
    sequence: int
    vector: np.ndarray
    n_samples: int
    staleness: int = 0


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The new vector; node -> normalized weight (contributors); node -> why excluded."""

    vector: np.ndarray
    weights: dict[str, float]
    excluded: dict[str, str]


class Strategy(Protocol):
    """What the merger needs: a name for records and logs, and one method."""

    name: str

    def aggregate(
        self, updates: Sequence[NodeVector], current: np.ndarray | None = None
    ) -> AggregateResult: ...


@dataclass(frozen=True, kw_only=True)
class Safeguards:
    """Per-update DP and screening applied before any strategy aggregates.

    ``noise_multiplier`` is relative to ``clip_norm`` (noise std = their
    product), so noise needs clipping. ``seed`` makes each update's noise a
    function of (seed, node id, sequence): replays are reproducible and
    order-free, but anyone knowing the seed can remove the noise, so leave it
    None (OS entropy) in production.
    """

    screen: bool = False
    screen_threshold: float = 3.5
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.screen_threshold > 0:
            raise ModelError(f"screen_threshold must be > 0, got {self.screen_threshold!r}")
        if self.clip_norm is not None and not 0 < self.clip_norm < np.inf:
            raise ModelError(f"clip_norm must be a finite number > 0, got {self.clip_norm!r}")
        if not 0 <= self.noise_multiplier < np.inf:
            raise ModelError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ModelError("noise_multiplier needs clip_norm: the noise std is their product")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ModelError(f"seed must be an integer >= 0 or None, got {self.seed!r}")

    def privatize(self, deltas: np.ndarray, updates: Sequence[NodeVector]) -> np.ndarray:
        """Clip (and noise) each row; rows follow ``updates``."""
        if self.clip_norm is None:
            return deltas
        rows = [
            gaussian_mechanism(d, self.clip_norm, self.noise_multiplier, self._rng(u))
            for d, u in zip(deltas, updates, strict=True)
        ]
        return np.vstack(rows)

    def _rng(self, update: NodeVector) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        key = (zlib.crc32(update.node_id.encode()), int(update.sequence) & (2**63 - 1))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))


class Combined(NamedTuple):
    vector: np.ndarray
    weights: np.ndarray  # per kept update; 0 where excluded below
    excluded: dict[int, str]  # position among the kept updates -> why


class BaseStrategy:
    """The shared pipeline (module docstring); subclasses override :meth:`_combine`."""

    name: str = "base"
    default_screen: ClassVar[bool] = False

    def __init__(self, *, safeguards: Safeguards | None = None) -> None:
        self.safeguards = safeguards or Safeguards(screen=self.default_screen)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, safeguards={self.safeguards!r})"

    def aggregate(
        self, updates: Sequence[NodeVector], current: np.ndarray | None = None
    ) -> AggregateResult:
        """Aggregate one round; see the module docstring for the steps."""
        ordered, matrix, cur = _validated(updates, current)
        try:
            with np.errstate(all="raise", under="ignore"):
                return self._run(ordered, matrix, cur)
        except FloatingPointError as e:
            raise ModelError(f"{self.name}: numerical overflow while aggregating: {e}") from e

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint between rounds (empty: this strategy keeps none)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Resume from :meth:`state` of an earlier run."""
        if state:
            raise ModelError(f"{self.name} keeps no state, got {sorted(state)}")

    def _run(self, ordered: list[NodeVector], matrix: np.ndarray, cur: np.ndarray | None) -> Any:
        excluded = self._pre_exclude(ordered)
        candidates = [i for i in range(len(ordered)) if i not in excluded]
        if not candidates:
            raise InvalidSummaryError("every update was set aside: " + _why(ordered, excluded))
        vectors = self._safeguard(matrix, ordered, cur, candidates, excluded)
        kept = [i for i in candidates if i not in excluded]
        combined = self._combine(vectors[kept], [ordered[i] for i in kept], cur)
        excluded |= {kept[j]: why for j, why in combined.excluded.items()}
        weights = {
            ordered[i].node_id: float(w)
            for i, w in zip(kept, combined.weights, strict=True)
            if i not in excluded
        }
        return AggregateResult(
            vector=np.asarray(combined.vector, dtype=np.float64),
            weights=weights,
            excluded={ordered[i].node_id: why for i, why in sorted(excluded.items())},
        )

    def _pre_exclude(self, ordered: Sequence[NodeVector]) -> dict[int, str]:
        return {
            i: "no samples since its last update: nothing to contribute"
            for i, u in enumerate(ordered)
            if u.n_samples == 0
        }

    def _safeguard(
        self,
        matrix: np.ndarray,
        ordered: Sequence[NodeVector],
        cur: np.ndarray | None,
        candidates: list[int],
        excluded: dict[int, str],
    ) -> np.ndarray:
        """DP then screening; adds to ``excluded``; returns the (privatized) vectors."""
        guard = self.safeguards
        if guard.clip_norm is None and not guard.screen:
            return matrix
        origin = np.zeros(matrix.shape[1]) if cur is None else cur
        deltas = guard.privatize(matrix[candidates] - origin, [ordered[i] for i in candidates])
        vectors = matrix
        if guard.clip_norm is not None:
            vectors = matrix.copy()
            vectors[candidates] = origin + deltas
        if guard.screen:
            result = screen(list(deltas), threshold=guard.screen_threshold)
            excluded |= {candidates[j]: f"screening: {why}" for j, why in result.excluded.items()}
        return vectors

    def _combine(
        self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: np.ndarray | None
    ) -> Combined:
        raise NotImplementedError


def _why(ordered: Sequence[NodeVector], excluded: dict[int, str]) -> str:
    return "; ".join(f"{ordered[i].node_id}: {why}" for i, why in sorted(excluded.items()))


def _count(value: Any, what: str, node_id: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidSummaryError(
            f"node {node_id!r}: {what} must be an integer >= 0, got {value!r}"
        )
    return int(value)


def _validated(
    updates: Sequence[NodeVector], current: np.ndarray | None
) -> tuple[list[NodeVector], np.ndarray, np.ndarray | None]:
    """Updates in node-id order, their ``(n, dim)`` matrix and the current vector."""
    if len(updates) == 0:
        raise InvalidSummaryError("no updates to aggregate: a round needs at least one")
    for u in updates:
        if not isinstance(u.node_id, str):
            raise InvalidSummaryError(f"node_id must be a string, got {u.node_id!r}")
        _count(u.n_samples, "n_samples", u.node_id)
        _count(u.staleness, "staleness", u.node_id)
        vector = np.asarray(u.vector)
        if vector.dtype.kind == "f" and not np.isfinite(vector).all():
            raise InvalidSummaryError(f"node {u.node_id!r}: the update has NaN or inf values")
    twice = sorted(k for k, c in Counter(u.node_id for u in updates).items() if c > 1)
    if twice:
        raise InvalidSummaryError(
            f"nodes {twice} appear more than once in one round: "
            "deduplicate by (node_id, sequence) first"
        )
    if sum(int(u.n_samples) for u in updates) == 0:
        raise InvalidSummaryError("the updates carry zero samples in total: nothing was learned")
    ordered = sorted(updates, key=lambda u: u.node_id)
    matrix = agg.stack([u.vector for u in ordered])
    if current is None:
        return ordered, matrix, None
    cur = agg.stack([current])[0]
    if cur.size != matrix.shape[1]:
        raise InvalidSummaryError(
            f"the current global vector has {cur.size} values, the updates {matrix.shape[1]}"
        )
    return ordered, matrix, cur


def _value(text: str) -> Any:
    """A spec value: bool, None, int, float, else the text itself."""
    word = text.strip().lower()
    if word in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[word]
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return word


def split_spec(spec: str, positional: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """``"multikrum:f=1,m=3"`` -> ``("multikrum", {"f": 1, "m": 3})``.

    A bare first value names the ``positional[base]`` parameter
    (``"trimmed:0.1"`` -> ``{"beta": 0.1}``); otherwise parameters are key=value.
    """
    base, _, rest = str(spec).strip().lower().partition(":")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq and base in positional and not params:
            key, value = positional[base], part
        elif not eq or key.strip() in params:
            raise UnknownSpecError(f"bad strategy spec {spec!r}: write key=value, e.g. krum:f=1")
        params[key.strip()] = _value(value)
    return base, params

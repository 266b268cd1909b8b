"""The learned part of a merge: strategies over vectors, with sparse features.

:mod:`models.strategies` aggregates dense vectors node by node. Two things
sit between it and a list of summaries, and they live here:

- **Screening first, once.** The strategy sees every update's full learned
  vector (for exact-only specs, its ``signature``) and decides who is
  excluded; that decision is then applied to every part of the merge.
  Coordinates a node never saw are filled with the *sample-weighted* mean of
  the nodes that saw them, so absence looks like agreement, not like an
  outlier -- and FedAvg over the filled vectors is exactly FedAvg over the
  nodes that saw each coordinate.
- **No vote without data.** When nodes saw different features and the
  strategy keeps no state between rounds, coordinates are then grouped by
  *which* surviving nodes saw them, and the strategy aggregates each group
  over those nodes only (so a median is the median of the voters); a
  coordinate nobody saw keeps the current global value (0 without one).
  Robust strategies may refuse groups too small for them (Krum needs several
  voters); such a group falls back to the sample-weighted mean of its voters.
  Stateful strategies (FedAvgM, FedAdam: one optimizer step per call) are
  called exactly once per round, on the filled vectors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import ModelError
from models.exact import guarded
from models.specs.algebra import SummaryAlgebra
from models.summary import Summary

__all__ = ["LearnedResult", "aggregate_learned"]


@dataclass(frozen=True)
class LearnedResult:
    """Aggregated learned vector; per-update weights and exclusions by index."""

    vector: np.ndarray
    weights: tuple[float, ...]
    excluded: Mapping[int, str]


def _resolve(strategy: str | Any, options: Mapping[str, Any]) -> Any:
    from models.strategies import get_strategy

    if isinstance(strategy, str):
        return get_strategy(strategy, **options) if options else get_strategy(strategy)
    if options:
        raise ModelError("strategy options only apply when the strategy is given by name")
    if not hasattr(strategy, "aggregate"):
        raise ModelError(f"{strategy!r} is not a strategy: it has no aggregate()")
    return strategy


def _keys(summaries: Sequence[Summary]) -> list[str]:
    """Node ids as strategy keys, made unique when a node appears twice."""
    seen = Counter(s.node_id for s in summaries)
    return [
        s.node_id if s.node_id and seen[s.node_id] == 1 else f"{s.node_id}#{s.sequence}#{i}"
        for i, s in enumerate(summaries)
    ]


def _updates(
    keys: Sequence[str],
    summaries: Sequence[Summary],
    vectors: Sequence[np.ndarray],
    staleness: Sequence[int],
) -> list[Any]:
    from models.strategies import NodeVector

    return [
        NodeVector(k, s.sequence, np.asarray(v, dtype=np.float64), s.n_samples, staleness=st)
        for k, s, v, st in zip(keys, summaries, vectors, staleness, strict=True)
    ]


def _impute(
    vectors: np.ndarray, masks: np.ndarray, n_samples: np.ndarray, current: np.ndarray | None
) -> np.ndarray:
    """Fill unseen coordinates with the sample-weighted mean of the nodes that saw them."""
    if masks.all():
        return vectors
    weights = masks * n_samples.astype(np.float64)[:, None]
    seen = weights.sum(axis=0)
    fallback = current if current is not None else np.zeros(vectors.shape[1])
    mean = np.divide(
        (vectors * weights).sum(axis=0),
        seen,
        out=fallback.astype(np.float64).copy(),
        where=seen > 0,
    )
    return np.where(masks, vectors, mean)


def _group(
    strat: Any,
    updates: Sequence[Any],
    current: np.ndarray | None,
) -> np.ndarray:
    try:
        return np.asarray(strat.aggregate(updates, current).vector, dtype=np.float64)
    except ModelError:
        n = np.array([u.n_samples for u in updates], dtype=np.float64)
        return n @ np.stack([u.vector for u in updates]) / n.sum()


def _stateful(strat: Any) -> bool:
    """Whether the strategy carries state from call to call (a server optimizer)."""
    from models.strategy_base import BaseStrategy

    state = getattr(type(strat), "state", None)
    return state is not None and state is not getattr(BaseStrategy, "state", None)


def _per_pattern(
    strat: Any,
    updates: Sequence[Any],
    masks: np.ndarray,
    current: np.ndarray | None,
) -> np.ndarray:
    """Aggregate each group of coordinates over the nodes that saw it."""
    width = masks.shape[1]
    vector = current.copy() if current is not None else np.zeros(width)
    patterns, group = np.unique(masks.T, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        cols = np.flatnonzero(group.ravel() == p)
        voters = [u for u, saw in zip(updates, pattern, strict=True) if saw]
        if not voters:
            continue
        sub = [
            type(u)(u.node_id, u.sequence, u.vector[cols], u.n_samples, staleness=u.staleness)
            for u in voters
        ]
        vector[cols] = _group(strat, sub, None if current is None else current[cols])
    return vector


def _inputs(
    algebra: SummaryAlgebra, aligned: Sequence[Summary], base: Summary | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vectors, seen-masks, current vector); signatures when nothing is learned."""
    vectors = np.stack([algebra.learned_vector(s) for s in aligned])
    if vectors.shape[1] == 0:
        vectors = np.stack([algebra.signature(s) for s in aligned])
        return vectors, np.ones(vectors.shape, dtype=bool), None
    masks = np.stack([algebra.learned_mask(s) for s in aligned])
    return vectors, masks, algebra.learned_vector(base) if base is not None else None


@guarded
def aggregate_learned(
    algebra: SummaryAlgebra,
    aligned: Sequence[Summary],
    staleness: Sequence[int],
    base: Summary | None,
    strategy: str | Any,
    options: Mapping[str, Any],
) -> LearnedResult:
    """Run the strategy over aligned summaries; see the module docstring."""
    strat = _resolve(strategy, options)
    keys = _keys(aligned)
    vectors, masks, current = _inputs(algebra, aligned, base)
    exact_only = algebra.learned_vector(aligned[0]).size == 0
    n_samples = np.array([s.n_samples for s in aligned])
    result = strat.aggregate(
        _updates(keys, aligned, _impute(vectors, masks, n_samples, current), staleness), current
    )
    excluded = {i: str(result.excluded[k]) for i, k in enumerate(keys) if k in result.excluded}
    alive = [i for i in range(len(keys)) if i not in excluded]
    if exact_only:
        total = sum(aligned[i].n_samples for i in alive) or 1
        weights = tuple(
            0.0 if i in excluded else aligned[i].n_samples / total for i in range(len(keys))
        )
        return LearnedResult(np.zeros(0), weights, excluded)
    vector = np.asarray(result.vector, dtype=np.float64)
    if alive and not masks[alive].all() and not _stateful(strat):
        updates = _updates(
            [keys[i] for i in alive],
            [aligned[i] for i in alive],
            [vectors[i] for i in alive],
            [staleness[i] for i in alive],
        )
        vector = _per_pattern(strat, updates, masks[alive], current)
    weights = tuple(float(result.weights.get(k, 0.0)) for k in keys)
    return LearnedResult(vector, weights, excluded)

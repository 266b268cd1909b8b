"""Merge node summaries into one: exact parts exactly, learned parts by strategy.

``merge`` is what a merger tier runs per round. It

1. validates: a non-empty list of summaries of one spec with equal
   hyper-parameters (else :class:`IncompatibleSummariesError`);
2. drops duplicates of one (node id, sequence) -- merges stay idempotent even
   when a broker redelivers -- and summaries with zero samples, recording why;
3. lets the aggregation strategy (FedAvg, median, Krum...) aggregate the
   *learned vector* (linear weights + intercept) and screen out suspect
   updates; for specs whose state is all exact (``iot-hst``, ``iot-gauss``)
   the strategy only screens, on each spec's ``signature``;
4. merges the *exact* parts (scaler statistics, covariances, HST masses) of
   the updates the strategy kept -- an excluded update is excluded
   everywhere, not only from the averaged part.
   Krum and Multi-Krum exclude every update they do not select, so with them
   an exact-only spec keeps only the selected nodes' statistics; there,
   ``merge(..., "exact", screen=True)`` is the usual choice.

Sparse features (``fraud-linear``): the merged summary covers the union of
every contributor's features. A node that never saw a feature contributes
count 0 to its scaler statistics and no vote to its weight: each weight
coordinate is aggregated only over the nodes that saw it (for a coordinate no
contributor saw, the current global value stands). ``iot-hst`` and
``iot-gauss`` hold state joint across features (tree structure, covariance),
so their summaries must cover the same feature set.

Exact parts assume the summaries describe disjoint parts of the stream (each
event learned by one contributor). With ``accumulate=True`` the summaries are
increments since ``current`` (see :func:`models.personalize.since`) and the
result's statistics are ``current`` plus them; HST windows are state, not
totals, and are never accumulated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from models.errors import IncompatibleSummariesError, InvalidSummaryError, ModelError
from models.merge_learned import LearnedResult, aggregate_learned
from models.specs import get_spec
from models.specs.algebra import SummaryAlgebra
from models.summary import Summary

__all__ = ["Contributor", "Exclusion", "MergeResult", "admit", "merge", "validate"]


@dataclass(frozen=True)
class Contributor:
    """One summary that went into a merge (the GlobalModel ``Contributor`` record)."""

    node_id: str
    sequence: int
    n_samples: int
    staleness: int = 0
    weight: float = 1.0


@dataclass(frozen=True)
class Exclusion:
    """One summary left out, and why (the GlobalModel ``Exclusion`` record)."""

    node_id: str
    sequence: int
    reason: str


@dataclass(frozen=True)
class MergeResult:
    summary: Summary
    contributors: tuple[Contributor, ...]
    excluded: tuple[Exclusion, ...]


def validate(summaries: Sequence[Summary], current: Summary | None) -> SummaryAlgebra:
    """The spec's algebra, once every summary (and ``current``) is one mergeable kind.

    Shared by the clear merge and the secure one (``models.secagg.aggregate``).
    """
    if isinstance(summaries, Summary) or not isinstance(summaries, Sequence):
        raise InvalidSummaryError("merge expects a list of summaries")
    if not summaries:
        raise InvalidSummaryError("nothing to merge: the list of summaries is empty")
    for s in summaries:
        if not isinstance(s, Summary):
            raise InvalidSummaryError(f"expected Summary objects, got {type(s).__name__}")
    first = summaries[0]
    everyone = [*summaries, *([current] if current is not None else [])]
    for s in everyone:
        if (s.model_name, s.kind) != (first.model_name, first.kind):
            raise IncompatibleSummariesError(
                f"cannot merge {s.model_name!r}/{s.kind!r} from node {s.node_id!r} with "
                f"{first.model_name!r}/{first.kind!r}: one spec per merge"
            )
    algebra = get_spec(first.model_name).algebra
    for s in everyone:
        algebra.check(s)
    algebra.union_features(everyone)  # raises when the spec needs one feature set
    for s in everyone:
        if s.params == first.params:
            continue
        differ = sorted(
            k for k in {*s.params, *first.params} if s.params.get(k) != first.params.get(k)
        )
        if differ:
            raise IncompatibleSummariesError(
                f"node {s.node_id!r} uses other {first.model_name!r} parameters ({differ})"
            )
    return algebra


def admit(summaries: Sequence[Summary]) -> tuple[list[Summary], list[Exclusion]]:
    """Drop duplicate (node, sequence) pairs and empty summaries."""
    kept: list[Summary] = []
    out: list[Exclusion] = []
    seen: set[tuple[str, int]] = set()
    for s in summaries:
        key = (s.node_id, s.sequence)
        if s.node_id and key in seen:
            out.append(Exclusion(s.node_id, s.sequence, "duplicate (node_id, sequence)"))
        elif s.n_samples == 0:
            out.append(Exclusion(s.node_id, s.sequence, "no samples"))
        else:
            seen.add(key)
            kept.append(s)
    if not kept:
        reasons = "; ".join(f"{e.node_id or '?'}: {e.reason}" for e in out)
        raise InvalidSummaryError(f"nothing to merge: every summary was left out ({reasons})")
    return kept, out


def _learned(
    algebra: SummaryAlgebra,
    kept: Sequence[Summary],
    aligned: Sequence[Summary],
    staleness: Sequence[int],
    base: Summary | None,
    strategy: str | Any,
    options: Mapping[str, Any],
    statistics_only: Collection[str],
) -> LearnedResult:
    """The strategy over the updates whose learned part votes; indices are ``kept``'s."""
    voters = [i for i, s in enumerate(kept) if s.node_id not in statistics_only]
    if len(voters) == len(kept) or (not voters and base is None):
        return aggregate_learned(algebra, aligned, staleness, base, strategy, options)
    if not voters:  # only statistics this round: the learned part stays the current one's
        return LearnedResult(algebra.learned_vector(base), (0.0,) * len(kept), {})
    part = aggregate_learned(
        algebra,
        [aligned[i] for i in voters],
        [staleness[i] for i in voters],
        base,
        strategy,
        options,
    )
    weights = [0.0] * len(kept)
    for j, i in enumerate(voters):
        weights[i] = part.weights[j]
    excluded = {voters[j]: reason for j, reason in part.excluded.items()}
    return LearnedResult(part.vector, tuple(weights), excluded)


def _combine(
    algebra: SummaryAlgebra, parts: list[Summary], base: Summary | None, base_version: int
) -> Summary:
    """The exact merge of the surviving parts (and ``base`` when accumulating)."""
    exact = algebra.merge_exact(parts, base)
    n = sum(s.n_samples for s in parts) + (base.n_samples if base is not None else 0)
    tensors = {**parts[0].tensors, **exact}
    return replace(
        parts[0], n_samples=n, tensors=tensors, node_id="", sequence=0, base_version=base_version
    )


def merge(
    summaries: Sequence[Summary],
    strategy: str | Any = "fedavg",
    *,
    current: Summary | None = None,
    accumulate: bool = False,
    statistics_only: Collection[str] = frozenset(),
    **options: Any,
) -> MergeResult:
    """Merge summaries of one spec into one.

    Parameters
    ----------
    summaries
        Updates of one round, any order; the result does not depend on it.
    strategy
        A name for :func:`models.strategies.get_strategy` (``options`` go
        with it) or a strategy object.
    current
        The current global summary: strategies that move from it (staleness-
        weighted asynchronous merges) get its learned vector, staleness is
        ``current.base_version - summary.base_version``.
    accumulate
        Summaries are increments since ``current``: add its statistics.
    statistics_only
        Node ids whose exact statistics merge but whose learned part does not
        join the strategy: a model trained on its own trajectory (a central
        learner that never adopts the global) would drag the average towards
        unrelated weights. With no other update the learned part stays
        ``current``'s (or, in a first round, theirs).

    Examples
    --------
    >>> from models.specs import get_spec
    >>> spec = get_spec("iot-gauss")
    >>> model = spec.new_model()
    >>> for v in range(20):
    ...     spec.learn_one(model, {"t": float(v)})
    >>> s = spec.summarize(model).with_provenance(node_id="a", sequence=1, base_version=0)
    >>> result = merge([s])
    >>> result.summary.n_samples, [c.node_id for c in result.contributors]
    (20, ['a'])
    """
    algebra = validate(summaries, current)
    if accumulate and current is None:
        raise ModelError("accumulate=True needs the current global summary")
    kept, excluded = admit(summaries)
    features = algebra.union_features([*kept, current] if current is not None else kept)
    aligned = [algebra.align(s, features) for s in kept]
    base = algebra.align(current, features) if current is not None else None
    version = current.base_version if current is not None else None
    staleness = [0 if version is None else max(version - s.base_version, 0) for s in kept]
    learned = _learned(algebra, kept, aligned, staleness, base, strategy, options, statistics_only)
    excluded += [
        Exclusion(kept[i].node_id, kept[i].sequence, reason)
        for i, reason in sorted(learned.excluded.items())
    ]
    survivors = [i for i in range(len(kept)) if i not in learned.excluded]
    if not survivors:
        reasons = "; ".join(f"{e.node_id or '?'}: {e.reason}" for e in excluded)
        raise ModelError(f"the strategy excluded every update ({reasons})")
    stamp = version if version is not None else max(s.base_version for s in kept)
    merged = _combine(algebra, [aligned[i] for i in survivors], base if accumulate else None, stamp)
    if learned.vector.size:
        merged = algebra.with_learned_vector(merged, learned.vector)
    contributors = tuple(
        Contributor(
            kept[i].node_id, kept[i].sequence, kept[i].n_samples, staleness[i], learned.weights[i]
        )
        for i in survivors
    )
    return MergeResult(merged, contributors, tuple(excluded))

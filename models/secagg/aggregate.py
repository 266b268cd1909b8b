"""FedAvg of a round's summaries through secure aggregation: the same global, from sums.

Clear-text FedAvg (:func:`models.merge.merge`) needs, per coordinate, the
sample-weighted sum of the learned weights over the nodes that saw that
feature and the sum of their sample counts; the scaler statistics need the
counts, sums and sums of squares. Each node therefore offers one vector --
``w * n * seen``, ``n * seen``, ``count``, ``count * mean``, ``count * (var +
mean^2)`` and ``n`` -- encoded in fixed point and masked by the SecAgg+
protocol (:mod:`models.secagg.round`); the merger unmasks only the sum and
divides. The result equals clear FedAvg of the included updates to
fixed-point precision (a sum of ``m`` encodings is within ``m *
2**-(frac_bits+1)`` of the float sum; counts are whole and exact).

A round that loses more nodes than its threshold allows is abandoned:
nothing is merged and every update is returned for re-offering. Nodes that
dropped before sending their masked input are returned for re-offering too,
so an increment is never lost and never counted twice.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.errors import ModelError
from models.exact import merge_moments
from models.merge import Contributor, MergeResult, admit, validate
from models.secagg.compat import check_secure, check_spec
from models.secagg.fixedpoint import FixedPoint
from models.secagg.keys import Entropy
from models.secagg.messages import DEFAULT_MAX_DROPOUT, RoundAbandoned, RoundSpec
from models.secagg.round import Dropouts, RoundCost, run_round
from models.secagg.server import Abandoned
from models.specs import get_spec
from models.specs.algebra import SummaryAlgebra
from models.summary import Summary

__all__ = [
    "CODEC",
    "SecureMerge",
    "global_from_total",
    "node_vector",
    "secure_merge",
    "vector_width",
]

#: the round's agreed encoding: 2^-40 steps, values up to 2^47, at most 255 nodes a round
CODEC = FixedPoint(frac_bits=40, bound=2.0**47)


@dataclass(frozen=True)
class SecureMerge:
    """A merged global (or None: abandoned, ``reason`` says why), what to re-offer, the cost."""

    result: MergeResult | None
    reason: str
    reoffer: tuple[Summary, ...]
    cost: RoundCost
    participants: int


def _node_vector(algebra: SummaryAlgebra, s: Summary, votes: bool) -> np.ndarray:
    n = float(s.n_samples)
    seen = algebra.learned_mask(s).astype(np.float64) * float(votes)
    count = s.tensor("count").astype(np.float64)
    mean, var = s.tensor("mean"), s.tensor("var")
    parts = [algebra.learned_vector(s) * n * seen, n * seen, count, count * mean]
    return np.concatenate([*parts, count * (var + mean**2), [n]])


def _global_from_sums(
    algebra: SummaryAlgebra, total: np.ndarray, template: Summary, base: Summary | None
) -> tuple[Summary, np.ndarray]:
    """The merged summary (before ``base``'s learned part decides unseen coordinates)."""
    d = len(template.features)
    weighted, seen = total[: d + 1], total[d + 1 : 2 * d + 2]
    count, sums, squares = (total[2 * d + 2 + i * d : 2 * d + 2 + (i + 1) * d] for i in range(3))
    count = np.rint(count)
    mean = np.divide(sums, count, out=np.zeros(d), where=count > 0)
    var = np.divide(squares, count, out=np.zeros(d), where=count > 0) - mean**2
    var = np.maximum(np.where(count > 0, var, 0.0), 0.0)
    fallback = algebra.learned_vector(base) if base is not None else np.zeros(d + 1)
    vector = np.divide(weighted, seen, out=fallback.astype(np.float64).copy(), where=seen > 0)
    tensors = dict(template.tensors) | {"count": count.astype(np.int64), "mean": mean, "var": var}
    n = int(round(total[-1]))
    return replace(template, n_samples=n, tensors=tensors), vector


def secure_merge(  # noqa: PLR0913 - merge()'s parameters plus the round's
    summaries: Sequence[Summary],
    strategy: str | Any = "fedavg",
    *,
    current: Summary | None = None,
    accumulate: bool = False,
    statistics_only: Collection[str] = frozenset(),
    round_id: str = "round",
    dropouts: Dropouts | None = None,
    max_dropout: float = DEFAULT_MAX_DROPOUT,
    entropy: Entropy = os.urandom,
    **options: Any,
) -> SecureMerge:
    """:func:`models.merge.merge` with FedAvg, through one SecAgg+ round (module docstring).

    ``dropouts`` says which updates' senders vanish at which step (by
    ``node_id#sequence``, the round's participant ids).
    """
    check_secure(strategy, **options)
    algebra = validate(summaries, current)
    check_spec(summaries[0].model_name)
    if accumulate and current is None:
        raise ModelError("accumulate=True needs the current global summary")
    kept, excluded = admit(summaries)
    features = algebra.union_features([*kept, current] if current is not None else kept)
    aligned = [algebra.align(s, features) for s in kept]
    base = algebra.align(current, features) if current is not None else None
    ids = [f"{s.node_id}#{s.sequence}" for s in kept]
    voters = {s.node_id for s in kept} - set(statistics_only)
    vectors = [_node_vector(algebra, s, not voters or s.node_id in voters) for s in aligned]
    cost, outcome = RoundCost(), None
    try:
        width = CODEC.width(len(vectors[0]))
        spec = RoundSpec.create(round_id, ids, width, max_dropout=max_dropout)
        if len(ids) > CODEC.max_participants():
            raise RoundAbandoned(
                f"{len(ids)} nodes exceed the encoding's {CODEC.max_participants()}"
            )
        inputs = {i: CODEC.encode(v) for i, v in zip(ids, vectors, strict=True)}
        outcome, cost = run_round(spec, inputs, dropouts, entropy)
    except RoundAbandoned as e:
        outcome = Abandoned(str(e), tuple(ids))
    by_id = dict(zip(ids, kept, strict=True))
    if isinstance(outcome, Abandoned):
        return SecureMerge(None, outcome.reason, tuple(kept), cost, len(ids))
    reoffer = tuple(by_id[i] for i in outcome.reoffer)
    idx = [ids.index(i) for i in outcome.included]
    total = CODEC.decode(outcome.total, participants=len(idx))
    merged, vector = _global_from_sums(algebra, total, aligned[idx[0]], base)
    if accumulate and base is not None:
        c, m, v = merge_moments(
            *(np.stack([merged.tensor(k), base.tensor(k)]) for k in ("count", "mean", "var"))
        )
        tensors = dict(merged.tensors) | {"count": c, "mean": m, "var": v}
        merged = replace(merged, n_samples=merged.n_samples + base.n_samples, tensors=tensors)
    version = (
        current.base_version if current is not None else max(kept[i].base_version for i in idx)
    )
    merged = replace(merged, node_id="", sequence=0, base_version=version)
    merged = algebra.with_learned_vector(merged, vector)
    # individual sample counts stay hidden: each contributor gets a nominal equal weight
    contributors = tuple(
        Contributor(kept[i].node_id, kept[i].sequence, 0, 0, 1.0 / len(idx)) for i in idx
    )
    result = MergeResult(merged, contributors, tuple(excluded))
    return SecureMerge(result, "", reoffer, cost, len(ids))


# -- the same steps split between nodes and merger (rounds over Kafka) ---------------------


def node_vector(summary: Summary, features: Sequence[str]) -> np.ndarray:
    """A node's round input: its increment aligned to the round's ``features``, encoded.

    The node computes this itself; the merger only ever sees it masked.
    """
    check_spec(summary.model_name)
    algebra = get_spec(summary.model_name).algebra
    aligned = algebra.align(algebra.check(summary), features)
    return CODEC.encode(_node_vector(algebra, aligned, True))


def vector_width(features: Sequence[str]) -> int:
    """Ring elements of a round's input over ``features`` (5 d + 3 values, two words each)."""
    return CODEC.width(5 * len(features) + 3)


def global_from_total(
    model_name: str,
    features: Sequence[str],
    total: np.ndarray,
    included: Sequence[tuple[str, int]],
    current: Summary | None,
) -> MergeResult:
    """The FedAvg global from an unmasked sum of ``included`` (node, sequence) inputs.

    The merger's half of :func:`secure_merge` when the nodes are processes:
    the sum is decoded, divided, and accumulated onto ``current`` exactly as
    there, so the two give the same global for the same updates.
    """
    spec = get_spec(model_name)
    algebra = spec.algebra
    if not included:
        raise ModelError("an unmasked round includes at least one node")
    base = algebra.align(current, features) if current is not None else None
    template = (
        base if base is not None else algebra.align(spec.summarize(spec.new_model()), features)
    )
    sums = CODEC.decode(total, participants=len(included))
    merged, vector = _global_from_sums(algebra, sums, template, base)
    if base is not None:
        c, m, v = merge_moments(
            *(np.stack([merged.tensor(k), base.tensor(k)]) for k in ("count", "mean", "var"))
        )
        tensors = dict(merged.tensors) | {"count": c, "mean": m, "var": v}
        merged = replace(merged, n_samples=merged.n_samples + base.n_samples, tensors=tensors)
    version = current.base_version if current is not None else 0
    merged = replace(merged, node_id="", sequence=0, base_version=version)
    merged = algebra.with_learned_vector(merged, vector)
    share = 1.0 / len(included)
    contributors = tuple(Contributor(node, seq, 0, 0, share) for node, seq in included)
    return MergeResult(merged, contributors, ())

"""A round's merge through secure aggregation: the same global as in the clear, from sums.

Clear-text FedAvg (:func:`models.merge.merge`) needs, per coordinate, the
sample-weighted sum of the learned weights over the nodes that saw that
feature and the sum of their sample counts; exact statistics need counts,
sums and sums of squares (covariances for ``iot-gauss``). Each node offers
one vector of those sums (its spec's :mod:`models.secagg.layout`), encoded
in fixed point and masked by the SecAgg+ protocol
(:mod:`models.secagg.round`); the merger unmasks only the sum and divides.
The result equals the clear merge of the included updates to fixed-point
precision (a sum of ``m`` encodings is within ``m * 2**-(frac_bits+1)`` of
the float sum; counts are whole and exact). FedAvgM and FedAdam then take
their server step from the current global to that mean, as in the clear.

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
from models.merge import Contributor, MergeResult, admit, validate
from models.secagg.compat import check_secure, check_spec
from models.secagg.fixedpoint import FixedPoint
from models.secagg.keys import Entropy
from models.secagg.layout import LAYOUTS, SumLayout
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


def _layout(model_name: str) -> SumLayout:
    check_spec(model_name)
    return LAYOUTS[model_name]


def _server_step(
    strat: Any, base: Summary | None, algebra: SummaryAlgebra, vector: np.ndarray
) -> np.ndarray:
    """A server optimizer's step (FedAvgM, FedAdam) from the current global to the round's mean.

    The optimizer needs only the mean, which the unmasked sum gives; as in
    the clear merge there is no step without a current global or a vote.
    """
    optimizer = getattr(strat, "optimizer", None)
    if optimizer is None or base is None or vector.size == 0:
        return vector
    return np.asarray(optimizer.step(algebra.learned_vector(base), vector), dtype=np.float64)


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
    strat = check_secure(strategy, **options)
    algebra = validate(summaries, current)
    layout = _layout(summaries[0].model_name)
    if accumulate and current is None:
        raise ModelError("accumulate=True needs the current global summary")
    kept, excluded = admit(summaries)
    features = algebra.union_features([*kept, current] if current is not None else kept)
    aligned = [algebra.align(s, features) for s in kept]
    base = algebra.align(current, features) if current is not None else None
    ids = [f"{s.node_id}#{s.sequence}" for s in kept]
    voters = {s.node_id for s in kept} - set(statistics_only)
    # as merge(): with no voter the learned part is the current global's (the sum carries
    # no weights, so it falls back to it), or, in a first round, the statistics-only nodes'
    everyone = not voters and current is None
    vectors = [layout.values(algebra, s, everyone or s.node_id in voters) for s in aligned]
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
    merged, vector = layout.rebuild(algebra, total, aligned[idx[0]], base)
    if voters.intersection(kept[i].node_id for i in idx) or base is None:
        vector = _server_step(strat, base, algebra, vector)
    if accumulate and base is not None:
        merged = layout.onto(merged, base)
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
    layout = _layout(summary.model_name)
    algebra = get_spec(summary.model_name).algebra
    aligned = algebra.align(algebra.check(summary), features)
    return CODEC.encode(layout.values(algebra, aligned, True))


def vector_width(model_name: str, features: Sequence[str]) -> int:
    """Ring elements of a round's input over ``features`` (two words a value)."""
    return CODEC.width(_layout(model_name).size(len(features)))


def global_from_total(  # noqa: PLR0913 - the round's parts
    model_name: str,
    features: Sequence[str],
    total: np.ndarray,
    included: Sequence[tuple[str, int]],
    current: Summary | None,
    strategy: Any = "fedavg",
) -> MergeResult:
    """The FedAvg global from an unmasked sum of ``included`` (node, sequence) inputs.

    The merger's half of :func:`secure_merge` when the nodes are processes:
    the sum is decoded, divided, and accumulated onto ``current`` exactly as
    there, so the two give the same global for the same updates. ``strategy``
    is the merger's (a FedAvgM / FedAdam object keeps its optimizer state).
    """
    strat = check_secure(strategy)
    layout = _layout(model_name)
    spec = get_spec(model_name)
    algebra = spec.algebra
    if not included:
        raise ModelError("an unmasked round includes at least one node")
    base = algebra.align(current, features) if current is not None else None
    template = (
        base if base is not None else algebra.align(spec.summarize(spec.new_model()), features)
    )
    sums = CODEC.decode(total, participants=len(included))
    merged, vector = layout.rebuild(algebra, sums, template, base)
    vector = _server_step(strat, base, algebra, vector)
    if base is not None:
        merged = layout.onto(merged, base)
    version = current.base_version if current is not None else 0
    merged = replace(merged, node_id="", sequence=0, base_version=version)
    merged = algebra.with_learned_vector(merged, vector)
    share = 1.0 / len(included)
    contributors = tuple(Contributor(node, seq, 0, 0, share) for node, seq in included)
    return MergeResult(merged, contributors, ())

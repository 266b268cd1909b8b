"""The merge job's rounds through secure aggregation (streams/merger/rounds.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.errors import ModelError
from models.secagg.aggregate import CODEC
from models.secagg.round import Dropouts
from models.specs import get_spec
from streams.merger.rounds import Merger, MergerConfig, Update

SPEC = get_spec("fraud-linear")
ALGEBRA = SPEC.algebra


def update(node: str, seq: int, *, seed: int, n: int = 40) -> Update:
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=0)
    return Update(replace(s, sequence=seq), offset=0, partition=0)


def merger(**kw) -> Merger:
    config = {"round_size": 4, "round_timeout_s": 5.0, "min_participants": 2, **kw}
    return Merger(MergerConfig(**config))


def test_secure_rounds_give_clear_fedavg_globals_to_fixed_point_precision() -> None:
    secure, clear = merger(secure_agg=True), merger()
    for r in range(3):  # the later rounds accumulate onto the current global
        for node in "abcd":
            for m in (secure, clear):
                assert m.offer(update(node, r + 1, seed=10 * r + ord(node)), r * 10) is None
        (s,), (c,) = secure.close_due(r * 10 + 1), clear.close_due(r * 10 + 1)
        assert s.version == c.version == r + 1 and s.merged is not None and c.merged is not None
        gap = ALGEBRA.learned_vector(s.merged) - ALGEBRA.learned_vector(c.merged)
        assert np.max(np.abs(gap)) <= 4 * 2.0 ** -(CODEC.frac_bits + 1)
        assert s.merged.n_samples == c.merged.n_samples
        assert s.metrics["secagg_bytes_up"] > 0 and s.metrics["secagg_reoffered"] == 0


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"strategy": "krum"}, "Krum scores"),
        ({"strategy": "fedmedian"}, "median"),
        ({"min_participants": 1}, "a round of one"),
    ],
)
def test_secure_rounds_refuse_what_needs_individual_updates(kw, why) -> None:
    with pytest.raises((ValueError, ModelError), match=why):
        merger(secure_agg=True, **kw)


def test_dropped_nodes_join_the_next_round_and_abandoned_rounds_publish_nothing():
    drops: list[Dropouts] = []
    config = MergerConfig(round_size=4, round_timeout_s=5.0, min_participants=2, secure_agg=True)
    m = Merger(config, dropouts=lambda _round, _ids: drops.pop(0) if drops else Dropouts())
    offered = [update(node, 1, seed=i) for i, node in enumerate("abcd")]
    drops.append(Dropouts({"input": ["a#1"]}))  # one of four: within the threshold
    for u in offered:
        m.offer(u, 0)
    (first,) = m.close_due(1)
    assert {c.node_id for c in first.result.contributors} == {"b", "c", "d"}
    assert first.metrics["secagg_reoffered"] == 1 and first.metrics["participants"] == 3
    # a's increment waits in the next round; that round loses half: abandoned
    later = [update(node, 2, seed=9 + i) for i, node in enumerate("bcd")]
    drops.append(Dropouts({"input": ["b#2", "c#2"]}))
    for u in later:
        m.offer(u, 2)
    assert m.close_due(3) == [] and m.counters["rounds-abandoned"] == 1
    assert m.counters["secagg-abandoned-bytes"] > 0  # its messages still cost
    assert m.tiers["fraud-linear"].version == 1  # nothing published
    (second,) = m.close_due(4)  # the same four again, nobody drops this time
    assert {(c.node_id, c.sequence) for c in second.result.contributors} == {
        ("a", 1), ("b", 2), ("c", 2), ("d", 2)
    }  # fmt: skip
    total = sum(u.summary.n_samples for u in [*offered, *later])
    assert second.result.summary.n_samples == total  # every increment once, none lost

"""SecAgg+ rounds: masks cancel exactly, dropouts unmask or abandon, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scipy import stats

from models.errors import ModelError
from models.secagg.fixedpoint import FixedPoint
from models.secagg.messages import RoundAbandoned, RoundSpec, UnmaskReply
from models.secagg.node import Node
from models.secagg.round import STEPS, Dropouts, run_round, seeded_entropy
from models.secagg.server import Abandoned, Server, Unmasked


def _ring_sum(vectors):
    total = np.zeros(len(next(iter(vectors))), dtype=np.uint64)
    for v in vectors:
        total += v
    return total


@st.composite
def rounds(draw):
    n = draw(st.integers(2, 14))
    ids = [f"site-{i:02d}" for i in range(n)]
    length = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32))
    rng = np.random.default_rng(seed)
    inputs = {v: rng.integers(0, 2**64, size=length, dtype=np.uint64) for v in ids}
    max_dropout = draw(st.sampled_from((0.0, 0.3, 0.3, 0.45)))
    k = draw(st.integers(0, int(max_dropout * n) + 1))  # mostly within the tolerance
    gone = draw(st.permutations(ids))[:k]
    steps = draw(st.lists(st.sampled_from((*STEPS, "input")), min_size=k, max_size=k))
    before: dict[str, list[str]] = {}
    for v, step in zip(gone, steps, strict=True):
        before.setdefault(step, []).append(v)
    return RoundSpec.create(f"r{seed}", ids, length, max_dropout=max_dropout), inputs, before, seed


@settings(max_examples=60)
@given(rounds())
def test_masks_cancel_exactly_or_the_round_is_abandoned_with_nothing_lost(case):
    spec, inputs, before, seed = case
    outcome, cost = run_round(spec, inputs, Dropouts(before), seeded_entropy(seed))
    everyone = set(spec.graph.nodes)
    late = Dropouts(before).gone("input") - Dropouts(before).gone("share")
    event(
        "abandoned" if isinstance(outcome, Abandoned) else f"unmasked, {len(late)} shared then left"
    )
    if isinstance(outcome, Abandoned):
        assert set(outcome.reoffer) == everyone and outcome.reason
        return
    sent_input = everyone - Dropouts(before).gone("input")
    assert set(outcome.included) == sent_input
    assert set(outcome.included).isdisjoint(outcome.reoffer)  # never counted twice
    assert set(outcome.included) | set(outcome.reoffer) == everyone  # never lost
    assert np.array_equal(outcome.total, _ring_sum([inputs[v] for v in outcome.included]))
    assert cost.up > 0 and cost.down > 0


def _spec(n=12, length=16, max_dropout=0.3):
    return RoundSpec.create(
        "round-7", [f"n{i:02d}" for i in range(n)], length, max_dropout=max_dropout
    )


def test_dropouts_within_the_threshold_unmask_the_survivors_sum():
    fp = FixedPoint()
    spec = _spec()
    rng = np.random.default_rng(1)
    floats = {v: rng.normal(size=8) * 100 for v in spec.graph.nodes}
    drops = Dropouts({"input": ["n03"], "unmask": ["n07", "n08"]})  # 3 of 12, max 30%
    outcome, _ = run_round(
        spec, {v: fp.encode(x) for v, x in floats.items()}, drops, seeded_entropy(2)
    )
    assert isinstance(outcome, Unmasked)
    assert outcome.reoffer == ("n03",)  # n07/n08 sent their input: it is in the sum
    expected = sum(floats[v] for v in outcome.included)
    got = fp.decode(outcome.total, participants=len(outcome.included))
    assert np.max(np.abs(got - expected)) <= len(outcome.included) * 2.0**-41 + 1e-12


def test_too_many_dropouts_abandon_the_round_and_a_retry_counts_everyone_once():
    spec = _spec()
    rng = np.random.default_rng(3)
    inputs = {v: rng.integers(0, 2**64, size=16, dtype=np.uint64) for v in spec.graph.nodes}
    drops = Dropouts({"input": ["n00", "n01", "n02"], "unmask": ["n03", "n04"]})  # 5 of 12
    outcome, _ = run_round(spec, inputs, drops, seeded_entropy(4))
    assert isinstance(outcome, Abandoned) and "needs 9" in outcome.reason
    assert set(outcome.reoffer) == set(spec.graph.nodes)
    # the next round: the re-offered increments (plus a newcomer) all count, once each
    again = RoundSpec.create("round-8", [*outcome.reoffer, "n99"], 16)
    inputs["n99"] = rng.integers(0, 2**64, size=16, dtype=np.uint64)
    retry, _ = run_round(again, inputs, None, seeded_entropy(5))
    assert isinstance(retry, Unmasked) and retry.reoffer == ()
    assert np.array_equal(retry.total, _ring_sum(inputs.values()))


def test_a_secret_with_too_few_shares_abandons_even_with_enough_survivors():
    spec = _spec(n=12, max_dropout=0.3)
    server_side_drops = Dropouts({"unmask": ["n00", "n01", "n02"]})
    inputs = {v: np.zeros(16, dtype=np.uint64) for v in spec.graph.nodes}
    outcome, _ = run_round(spec, inputs, server_side_drops, seeded_entropy(6))
    assert isinstance(outcome, Unmasked)  # 9 replies of 12: enough everywhere
    # a sparse graph: a node whose neighbours nearly all vanish cannot be unmasked
    big = RoundSpec.create("sparse", [f"n{i:02d}" for i in range(40)], 4, max_dropout=0.2)
    victim = big.graph.nodes[0]
    gone = sorted(big.graph.neighbours(victim))[: big.graph.degree - big.threshold + 1]
    inputs = {v: np.zeros(4, dtype=np.uint64) for v in big.graph.nodes}
    outcome, _ = run_round(big, inputs, Dropouts({"unmask": gone}), seeded_entropy(7))
    assert isinstance(outcome, Abandoned) and victim in outcome.reason


def test_the_merger_view_of_one_masked_input_is_uniform():
    """Chi-square of the top byte of a constant input's masked coordinates vs uniform."""
    fp = FixedPoint()
    length = 1 << 14
    spec = RoundSpec.create("stat", ["a", "b", "c", "d"], 2 * length)
    inputs = {v: fp.encode(np.full(length, 1.0)) for v in spec.graph.nodes}
    server = Server(spec)
    ent = seeded_entropy(11)
    nodes = {v: Node(v, spec, ent) for v in spec.graph.nodes}
    roster = server.collect_keys([n.advertise() for n in nodes.values()])
    routed = server.route_shares([n.share(roster) for n in nodes.values()])
    seen = nodes["a"].masked_input(inputs["a"], routed["a"]).vector
    top = (seen >> np.uint64(56)).astype(np.int64)
    p_masked = stats.chisquare(np.bincount(top, minlength=256)).pvalue
    assert p_masked > 0.001
    assert stats.kstest(seen.astype(np.float64) / 2.0**64, "uniform").pvalue > 0.001
    # the same test rejects the unmasked encoding: it has the power to see structure
    plain = (inputs["a"][length:] >> np.uint64(56)).astype(np.int64)
    assert stats.chisquare(np.bincount(plain, minlength=256)).pvalue < 1e-9


def test_a_reply_never_reveals_both_secrets_and_tampered_shares_are_refused():
    with pytest.raises(ModelError, match="both secrets"):
        UnmaskReply("a", {"b": b"x"}, {"b": b"y"})
    spec = _spec(n=4, length=2)
    ent = seeded_entropy(8)
    nodes = {v: Node(v, spec, ent) for v in spec.graph.nodes}
    server = Server(spec)
    roster = server.collect_keys([n.advertise() for n in nodes.values()])
    routed = server.route_shares([n.share(roster) for n in nodes.values()])
    sender = next(iter(routed["n00"]))
    blob = bytearray(routed["n00"][sender])
    blob[-1] ^= 1
    with pytest.raises(ModelError, match="fail to decrypt"):
        nodes["n00"].masked_input(np.zeros(2, dtype=np.uint64), {sender: bytes(blob)})


def test_repeated_or_foreign_messages_are_refused():
    spec = _spec(n=3, length=1)
    ent = seeded_entropy(9)
    nodes = [Node(v, spec, ent) for v in spec.graph.nodes]
    server = Server(spec)
    server.collect_keys([n.advertise() for n in nodes])
    with pytest.raises(ModelError, match="repeated"):
        server.collect_keys([nodes[0].advertise()])
    with pytest.raises(ModelError, match="not in round"):
        Node("stranger", spec)


def test_a_round_of_one_is_refused_its_sum_would_be_its_update():
    with pytest.raises(RoundAbandoned, match="at least 2 nodes"):
        RoundSpec.create("alone", ["a"], 3)

"""Secure FedAvg equals clear FedAvg of the included updates, to fixed-point precision."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers.secagg_rounds import drawn_round
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ModelError
from models.merge import merge
from models.secagg.aggregate import CODEC, secure_merge
from models.secagg.round import STEPS, Dropouts, seeded_entropy
from models.specs import get_spec
from models.strategies import get_strategy
from models.summary import Summary

ULP = 2.0 ** -(CODEC.frac_bits + 1)  # the worst rounding of one encoded value


def _summary(i: int) -> Summary:
    """Node i's fraud-linear increment; every third node never sees f3 (sparse features)."""
    spec = get_spec("fraud-linear")
    model = spec.new_model()
    rng = np.random.default_rng(i)
    names = ["f0", "f1", "f2"] if i % 3 == 2 else ["f0", "f1", "f2", "f3"]
    for _ in range(150 + 40 * i):
        y = bool(rng.random() < 0.1)
        row = rng.normal(size=len(names)) * (1 + i % 4) + 10.0 * np.arange(len(names)) + 3.0 * y
        spec.learn_one(model, dict(zip(names, row.tolist(), strict=True)), y)
    return spec.summarize(model).with_provenance(node_id=f"n{i}", sequence=1, base_version=0)


def _keys(summaries) -> set[tuple[str, int]]:
    return {(s.node_id, s.sequence) for s in summaries}


@functools.cache
def pool() -> tuple[Summary, ...]:
    return tuple(_summary(i) for i in range(8))


def assert_same_global(secure: Summary, clear: Summary, m: int) -> None:
    """Equal up to m fixed-point roundings, divided by the whole counts behind each value."""
    spec = get_spec("fraud-linear")
    assert secure.features == clear.features and secure.n_samples == clear.n_samples
    assert np.array_equal(secure.tensor("count"), clear.tensor("count"))
    count = np.maximum(clear.tensor("count"), 1)
    mean = clear.tensor("mean")
    assert np.all(np.abs(secure.tensor("mean") - mean) <= m * ULP / count + 1e-9 * np.abs(mean))
    slack = m * ULP / count * (1 + 2 * np.abs(mean)) + 1e-9 * (clear.tensor("var") + mean**2)
    assert np.all(np.abs(secure.tensor("var") - clear.tensor("var")) <= slack)
    a, b = spec.algebra.learned_vector(secure), spec.algebra.learned_vector(clear)
    assert np.all(np.abs(a - b) <= m * ULP + 1e-9 * (1 + np.abs(b)))  # n >= 1 per voter


@settings(max_examples=40)
@given(
    st.lists(st.integers(0, 7), min_size=2, max_size=8, unique=True),
    st.lists(st.sampled_from((*[None] * 8, "input", "unmask")), min_size=8, max_size=8),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_secure_fedavg_equals_clear_fedavg_of_the_included_updates(picks, when, with_current, seed):
    out, current, included = drawn_round(
        pool(), picks, when, with_current, seed, strategy="fedavg", round_id=f"r{seed}"
    )
    if included is None:
        return
    clear = merge(included, "fedavg", current=current, accumulate=with_current).summary
    assert_same_global(out.result.summary, clear, len(included))
    assert out.result.summary.base_version == clear.base_version


def test_statistics_only_nodes_add_statistics_but_no_vote():
    updates = list(pool()[:4])
    out = secure_merge(updates, statistics_only={"n0"}, entropy=seeded_entropy(1))
    clear = merge(updates, "fedavg", statistics_only={"n0"}).summary
    assert out.result is not None
    assert_same_global(out.result.summary, clear, 4)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(0, 7), min_size=2, max_size=5, unique=True),
    st.booleans(),
    st.sampled_from(["fedavg", "fedavgm", "fedadam"]),
    st.integers(0, 2**32),
)
def test_a_round_of_statistics_only_nodes_keeps_the_learned_part_as_the_clear_merge_does(
    picks, with_current, strategy, seed
):
    """Every node statistics-only: the clear merge keeps the current global's weights (in a
    first round, takes theirs) and takes no optimizer step; the secure global equals it."""
    updates = [pool()[i] for i in picks]
    current = None
    if with_current:
        current = merge([pool()[(picks[0] + 1) % 8]], "fedavg").summary
        current = current.with_provenance(node_id="global", sequence=0, base_version=3)
    everyone = {s.node_id for s in updates}
    secure_strategy, clear_strategy = get_strategy(strategy), get_strategy(strategy)
    out = secure_merge(
        updates,
        secure_strategy,
        current=current,
        accumulate=with_current,
        statistics_only=everyone,
        entropy=seeded_entropy(seed),
        round_id=f"s{seed}",
    )
    assert out.result is not None
    clear = merge(
        updates,
        clear_strategy,
        current=current,
        accumulate=with_current,
        statistics_only=everyone,
    ).summary
    assert_same_global(out.result.summary, clear, len(updates))
    if with_current:  # the weights are the current global's, exactly
        algebra = get_spec("fraud-linear").algebra
        kept = algebra.learned_vector(algebra.align(current, clear.features))
        assert np.array_equal(algebra.learned_vector(out.result.summary), kept)
    assert not secure_strategy.state() and not clear_strategy.state()  # no vote, no step


def test_too_many_dropouts_abandon_and_return_every_update():
    updates = list(pool()[:6])
    gone = [f"n{i}#1" for i in range(3)]  # half of six, past the default 30%
    out = secure_merge(updates, dropouts=Dropouts({"input": gone}), entropy=seeded_entropy(2))
    assert out.result is None and "needs 5" in out.reason
    assert _keys(out.reoffer) == _keys(updates)
    retry = secure_merge(list(out.reoffer), entropy=seeded_entropy(3))
    assert retry.result is not None and retry.result.summary.n_samples == sum(
        s.n_samples for s in updates
    )


@pytest.mark.parametrize(
    ("strategy", "options", "why"),
    [
        ("fedmedian", {}, "median needs every node"),
        ("trimmed:0.1", {}, "trimmed mean"),
        ("krum", {}, "Krum scores"),
        ("multikrum:f=1,m=3", {}, "Multi-Krum"),
        ("fedavg", {"screen": True}, "robust screening is lost"),
        ("fedavg", {"clip_norm": 1.0}, "clip on the nodes"),
    ],
)
def test_strategies_that_need_individual_updates_are_refused(strategy, options, why):
    with pytest.raises(ModelError, match=why):
        secure_merge(list(pool()[:3]), strategy, **options)


def test_specs_whose_state_is_not_sums_are_refused():
    spec = get_spec("iot-hst")
    model = spec.new_model()
    for v in range(10):
        spec.learn_one(model, {"t": float(v)})
    s = spec.summarize(model).with_provenance(node_id="a", sequence=1, base_version=0)
    with pytest.raises(ModelError, match="latest.* current window"):
        secure_merge([s, s.with_provenance(node_id="b", sequence=1, base_version=0)])


def test_no_step_name_is_unknown():
    assert STEPS == ("keys", "share", "input", "unmask")

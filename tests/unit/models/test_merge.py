"""merge(): validation, sparse features, screening, dedup, accumulation, tiers."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import IncompatibleSummariesError, InvalidSummaryError, ModelError
from models.merge import merge
from models.personalize import since
from models.specs import get_spec
from models.strategies import get_strategy
from models.summary import Summary

LINEAR = get_spec("fraud-linear")


def linear(node, features, count, mean, var, weights, intercept, n, base_version=0):
    tensors = {
        "count": np.array(count, dtype=np.int64),
        "mean": np.array(mean, dtype=float),
        "var": np.array(var, dtype=float),
        "weights": np.array(weights, dtype=float),
        "intercept": np.array([intercept]),
    }
    return Summary(
        "fraud-linear",
        "linear",
        features,
        n,
        tensors,
        LINEAR.params,
        node_id=node,
        sequence=1,
        base_version=base_version,
    )


def test_sparse_features_union_counts_zero_and_no_vote():
    a = linear("A", ("a", "b"), [10, 10], [1.0, 2.0], [1.0, 4.0], [0.5, 1.0], 0.1, 10)
    b = linear("B", ("b", "c"), [30, 30], [4.0, 0.0], [1.0, 2.0], [3.0, -2.0], 0.5, 30)
    s = merge([a, b], "fedavg").summary
    assert s.features == ("a", "b", "c")
    assert s.tensors["count"].tolist() == [10, 40, 30]
    np.testing.assert_allclose(s.tensors["mean"], [1.0, (10 * 2.0 + 30 * 4.0) / 40, 0.0])
    var_b = (10 * 4.0 + 30 * 1.0 + 10 * (2.0 - 3.5) ** 2 + 30 * (4.0 - 3.5) ** 2) / 40
    np.testing.assert_allclose(s.tensors["var"], [1.0, var_b, 2.0])
    # a: only A voted; c: only B voted; b and the intercept: sample-weighted FedAvg of both.
    np.testing.assert_allclose(s.tensors["weights"], [0.5, (10 * 1.0 + 30 * 3.0) / 40, -2.0])
    np.testing.assert_allclose(s.tensors["intercept"], [(10 * 0.1 + 30 * 0.5) / 40])


def test_coordinates_nobody_saw_keep_the_current_global_value():
    current = linear(
        "global", ("a", "z"), [5, 5], [0.0, 0.0], [1.0, 1.0], [9.0, 7.0], 0.0, 5, base_version=4
    )
    a = linear("A", ("a",), [10], [1.0], [1.0], [1.0], 0.0, 10, base_version=3)
    result = merge([a], "fedavg", current=current)
    assert result.summary.features == ("a", "z")
    assert result.summary.tensors["weights"][1] == 7.0
    assert result.contributors[0].staleness == 1
    assert result.summary.base_version == 4


def summaries(make_learned, name="fraud-linear", k=4):
    return [make_learned(name, n=200 + 50 * i, seed=i, node=f"n{i}")[1] for i in range(k)]


def test_merge_does_not_depend_on_order(make_learned, same):
    parts = summaries(make_learned)
    first = merge(parts).summary
    for order in itertools.islice(itertools.permutations(parts), 1, 6):
        same(merge(list(order)).summary, first, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["fraud-linear", "iot-gauss", "iot-hst"])
def test_regional_then_global_equals_flat(name, make_learned, same):
    parts = summaries(make_learned, name)
    flat = merge(parts).summary
    regions = [merge(parts[:1]).summary, merge(parts[1:]).summary]
    same(merge(regions).summary, flat, rtol=1e-9, atol=1e-12)


class ExcludeNode:
    """A strategy stand-in that screens out one node by name."""

    def __init__(self, node: str) -> None:
        self.node = node

    def aggregate(self, updates, current):
        keep = [u for u in updates if u.node_id != self.node]
        vector = np.mean([u.vector for u in keep], axis=0) if keep else updates[0].vector
        weights = {u.node_id: 1 / len(keep) for u in keep}
        return SimpleNamespace(vector=vector, weights=weights, excluded={self.node: "poisoned"})


@pytest.mark.parametrize("name", ["fraud-linear", "iot-gauss", "iot-hst"])
def test_screened_nodes_are_excluded_from_exact_parts_too(name, make_learned, same):
    parts = summaries(make_learned, name, k=3)
    bad = replace(parts[2], tensors={k: v * 7 for k, v in parts[2].tensors.items()})
    result = merge([*parts[:2], bad], ExcludeNode("n2"))
    assert [(e.node_id, e.reason) for e in result.excluded] == [("n2", "poisoned")]
    assert [c.node_id for c in result.contributors] == ["n0", "n1"]
    honest = merge(parts[:2], ExcludeNode("nobody")).summary
    same(result.summary, honest, rtol=1e-12, atol=1e-12)


def test_duplicates_and_empty_summaries_are_left_out_with_reasons(make_learned, same):
    parts = summaries(make_learned, k=2)
    empty = replace(parts[1], node_id="n9", n_samples=0)
    result = merge([parts[0], parts[1], parts[1], empty])
    same(result.summary, merge(parts).summary)
    assert sorted(e.reason for e in result.excluded) == [
        "duplicate (node_id, sequence)",
        "no samples",
    ]
    with pytest.raises(InvalidSummaryError, match="every summary was left out"):
        merge([empty])


def test_accumulate_adds_increments_to_the_current_global(make_learned, make_events):
    spec = LINEAR
    g_model, current = make_learned("fraud-linear", n=400, seed=1, node="global")
    increments, whole = [], spec.load(current)
    for i in range(3):
        local = spec.load(current)
        for x, y in make_events("fraud", 100, 10 + i):
            spec.learn_one(local, x, y)
            spec.learn_one(whole, x, y)
        increments.append(
            since(spec.summarize(local), current).with_provenance(
                node_id=f"e{i}", sequence=1, base_version=0
            )
        )
    merged = merge(increments, current=current, accumulate=True).summary
    oracle = spec.summarize(whole)
    assert merged.n_samples == oracle.n_samples == 700
    for t in ("count", "mean", "var"):
        np.testing.assert_allclose(merged.tensors[t], oracle.tensors[t], rtol=1e-9, atol=1e-9)
    with pytest.raises(ModelError):
        merge(increments, accumulate=True)


@pytest.mark.parametrize("name", ["iot-gauss", "iot-hst"])
def test_joint_state_specs_need_one_feature_set(name, make_learned):
    _, s = make_learned(name)
    spec = get_spec(name)
    model = spec.new_model()
    for _ in range(20):
        spec.learn_one(model, {"other": 1.0, "f0": 2.0})
    odd = spec.summarize(model).with_provenance(node_id="odd", sequence=1, base_version=0)
    with pytest.raises(IncompatibleSummariesError, match="feature"):
        merge([s, odd])


def test_bad_inputs_raise_typed_errors(make_learned):
    _, s = make_learned("fraud-linear")
    with pytest.raises(InvalidSummaryError):
        merge(s)
    with pytest.raises(InvalidSummaryError):
        merge([s, {"model_name": "fraud-linear"}])
    negative = replace(s, tensors=dict(s.tensors) | {"count": -s.tensors["count"]})
    with pytest.raises(InvalidSummaryError, match="negative"):
        merge([negative])
    with pytest.raises(ModelError):
        merge([s], "no-such-strategy")
    with pytest.raises(ModelError):
        merge([s], ExcludeNode("n1"))  # screening left nothing


huge = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), huge, st.floats(0, 1e300), huge, huge), min_size=1, max_size=4
    )
)
def test_hostile_numbers_give_a_result_or_a_model_error_never_a_warning(rows):
    parts = [
        linear(f"n{i}", ("a",), [c], [m], [v], [w], b, c) for i, (c, m, v, w, b) in enumerate(rows)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            s = merge(parts).summary
        except ModelError:
            return
    assert all(np.all(np.isfinite(t)) for t in s.tensors.values())


def sparse_pair():
    a = linear("A", ("a", "b"), [10, 10], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], 0.0, 10)
    b = linear("B", ("b", "c"), [30, 30], [0.0, 0.0], [1.0, 1.0], [3.0, -2.0], 1.0, 30)
    c = linear("C", ("a", "b", "c"), [20, 20, 20], [0.0] * 3, [1.0] * 3, [5.0, 8.0, 4.0], 2.0, 20)
    return [a, b, c]


def test_sparse_median_is_the_median_of_the_nodes_that_saw_the_feature():
    s = merge(sparse_pair(), "fedmedian", screen=False).summary
    # a: voters A, C -> median of (1, 5) = 3; b: (1, 3, 8) -> 3; c: B, C -> (-2, 4) -> 1.
    np.testing.assert_allclose(s.tensors["weights"], [3.0, 3.0, 1.0])


def test_stateful_strategies_step_once_per_round_on_the_full_vector():
    strat = get_strategy("fedavgm")
    widths: list[int] = []
    original = strat.aggregate

    def counting(updates, current=None):
        widths.append(len(updates[0].vector))
        return original(updates, current)

    strat.aggregate = counting
    parts = sparse_pair()
    current = linear("global", ("a", "b", "c"), [1] * 3, [0.0] * 3, [1.0] * 3, [0.0] * 3, 0.0, 3)
    merged = merge(parts, strat, current=current).summary
    assert widths == [4]  # one call, three weights + the intercept
    assert np.all(np.isfinite(merged.tensors["weights"]))
    # Sample-weighted filling makes plain FedAvg over filled vectors = FedAvg over voters.
    fedavg = merge(parts, "fedavg").summary
    np.testing.assert_allclose(
        fedavg.tensors["weights"], [(10 + 100) / 30, (10 + 90 + 160) / 60, (-60 + 80) / 50]
    )


def test_statistics_only_nodes_merge_their_counts_but_not_their_weights():
    a = linear("A", ("a",), [10], [1.0], [1.0], [0.5], 0.1, 10)
    b = linear("B", ("a",), [30], [2.0], [1.0], [1.5], 0.3, 30)
    central = linear("central", ("a",), [60], [3.0], [1.0], [-9.0], 4.0, 60)
    result = merge([a, b, central], "fedavg", statistics_only={"central"})
    s = result.summary
    assert s.tensors["count"].tolist() == [100] and s.n_samples == 100  # every event counted
    np.testing.assert_allclose(s.tensors["mean"], [(10 * 1.0 + 30 * 2.0 + 60 * 3.0) / 100])
    np.testing.assert_allclose(s.tensors["weights"], [(10 * 0.5 + 30 * 1.5) / 40])  # A and B only
    np.testing.assert_allclose(s.tensors["intercept"], [(10 * 0.1 + 30 * 0.3) / 40])
    weights = {c.node_id: c.weight for c in result.contributors}
    assert weights["central"] == 0.0 and weights["A"] + weights["B"] == pytest.approx(1.0)
    plain = merge([a, b, central], "fedavg").summary  # without it the central weights vote
    assert plain.tensors["weights"][0] < s.tensors["weights"][0]


def test_a_round_of_statistics_only_keeps_the_current_learned_part():
    current = linear("", ("a",), [40], [1.5], [1.0], [2.0], 0.2, 40, base_version=3)
    central = linear("central", ("a",), [60], [3.0], [1.0], [-9.0], 4.0, 60, base_version=3)
    s = merge(
        [central], "fedavg", current=current, accumulate=True, statistics_only={"central"}
    ).summary
    assert s.n_samples == 100
    np.testing.assert_allclose(s.tensors["weights"], [2.0])
    np.testing.assert_allclose(s.tensors["intercept"], [0.2])
    first = merge([central], "fedavg", statistics_only={"central"}).summary  # nothing else yet
    np.testing.assert_allclose(first.tensors["weights"], [-9.0])

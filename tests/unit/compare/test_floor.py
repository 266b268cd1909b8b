"""The excluded floor's perfect screen: named nodes out with a reason, the rest as before."""

from __future__ import annotations

import numpy as np

from models.strategies import NodeVector, get_strategy
from prism.compare.floor import REASON, PerfectScreen


def _round() -> list[NodeVector]:
    rng = np.random.default_rng(0)
    return [NodeVector(f"site-{i}", 1, rng.normal(size=4), 10 + i) for i in range(5)]


def test_named_nodes_are_excluded_and_the_rest_aggregate_as_without_them():
    updates = _round()
    for spec in ("fedavg", "fedmedian", "trimmed:0.2", "krum"):
        inner = get_strategy(spec)
        got = PerfectScreen(inner, {"site-1", "site-3"}).aggregate(updates, np.zeros(4))
        want = get_strategy(spec).aggregate([updates[i] for i in (0, 2, 4)], np.zeros(4))
        assert np.array_equal(got.vector, want.vector), spec
        assert got.weights == want.weights
        assert got.excluded["site-1"] == got.excluded["site-3"] == REASON
        assert set(got.excluded) >= {"site-1", "site-3"}


def test_ids_made_unique_by_the_merge_still_match_and_a_name_is_kept():
    updates = [NodeVector("site-1#4#0", 4, np.ones(2), 5), NodeVector("site-2", 1, np.zeros(2), 5)]
    screen = PerfectScreen(get_strategy("fedavg"), ["site-1"])
    result = screen.aggregate(updates)
    assert list(result.excluded) == ["site-1#4#0"] and result.vector.tolist() == [0.0, 0.0]
    assert screen.name == "fedavg"

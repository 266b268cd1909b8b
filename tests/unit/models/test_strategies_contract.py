"""One contract suite over every strategy (River's check-suite style)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models.errors import InvalidSummaryError, ModelError, UnknownSpecError
from models.strategies import STRATEGY_NAMES, Update, get_strategy

pytestmark = pytest.mark.filterwarnings("error")


def _round(seed: int = 0, n: int = 7, dim: int = 5) -> list[Update]:
    rng = np.random.default_rng(seed)
    return [
        Update(f"n{i}", i + 1, rng.normal(1.0, 0.1, dim), int(rng.integers(10, 100)))
        for i in range(n)
    ]


@pytest.fixture(params=STRATEGY_NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_order_of_updates_does_not_matter(name: str) -> None:
    updates = _round()
    a = get_strategy(name).aggregate(updates)
    b = get_strategy(name).aggregate(list(reversed(updates)))
    np.testing.assert_allclose(a.vector, b.vector, rtol=1e-12)
    assert a.excluded == b.excluded
    assert a.weights == pytest.approx(b.weights)


def test_identical_updates_aggregate_to_that_update(name: str) -> None:
    vector = np.array([0.5, -1.0, 2.0])
    updates = [Update(f"n{i}", 1, vector, 10 + i) for i in range(5)]
    result = get_strategy(name).aggregate(updates)
    np.testing.assert_allclose(result.vector, vector, rtol=1e-12)
    assert result.excluded == {}


def test_shape_weights_and_accounting(name: str) -> None:
    updates = _round(n=9)
    result = get_strategy(name).aggregate(updates)
    assert result.vector.shape == (5,)
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert set(result.weights) | set(result.excluded) == {u.node_id for u in updates}
    assert not set(result.weights) & set(result.excluded)


def test_with_a_current_global_the_result_is_finite(name: str) -> None:
    result = get_strategy(name).aggregate(_round(), current=np.full(5, 0.9))
    assert np.all(np.isfinite(result.vector))


@pytest.mark.parametrize(
    "updates",
    [
        [],
        [Update("a", 1, np.array([np.nan, 1.0]), 3), Update("b", 1, np.array([1.0, 1.0]), 3)],
        [Update("a", 1, np.array([1.0, np.inf]), 3)],
        [Update("a", 1, np.array([1.0]), 3), Update("b", 1, np.array([1.0, 2.0]), 3)],
        [Update("a", 1, np.array([1.0]), 0), Update("b", 1, np.array([2.0]), 0)],
        [Update("a", 1, np.array([1.0]), -4)],
    ],
    ids=["empty", "nan", "inf", "lengths", "zero-samples", "negative-samples"],
)
def test_bad_inputs_raise_typed_errors(name: str, updates: list[Update]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidSummaryError):
            get_strategy(name).aggregate(updates)


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownSpecError, match="fedavg"):
        get_strategy("fedsomething")
    with pytest.raises(ModelError):
        get_strategy("trimmed:0.7").aggregate(_round())


def test_async_excludes_too_stale_with_reason_and_down_weights_stale() -> None:
    updates = [
        Update("fresh", 1, np.array([1.0]), 10, staleness=0),
        Update("old", 1, np.array([3.0]), 10, staleness=3),
        Update("ancient", 1, np.array([100.0]), 10, staleness=50),
    ]
    result = get_strategy("async", max_staleness=10).aggregate(updates)
    assert "ancient" in result.excluded and "staleness 50" in result.excluded["ancient"]
    assert result.weights["fresh"] > result.weights["old"]
    assert 1.0 < result.vector[0] < 2.0


def test_server_optimizers_move_towards_the_aggregate() -> None:
    updates = [Update(f"n{i}", 1, np.array([1.0, 1.0]), 10) for i in range(3)]
    # FedAvgM with zero velocity and server_lr=1 takes exactly the FedAvg step first
    first = get_strategy("fedavgm").aggregate(updates, np.zeros(2)).vector
    np.testing.assert_allclose(first, [1.0, 1.0])
    adam, current = get_strategy("fedadam"), np.zeros(2)
    for _ in range(5):
        step = adam.aggregate(updates, current).vector
        assert np.all(step > current) and np.all(step <= 1.0 + 1e-9)
        current = step


def test_dp_clipping_bounds_each_contribution() -> None:
    updates = [Update("a", 1, np.array([100.0, 0.0]), 1), Update("b", 1, np.array([0.0, 0.0]), 1)]
    result = get_strategy("fedavg", clip_norm=1.0).aggregate(updates)
    assert np.linalg.norm(result.vector) <= 0.5 + 1e-12

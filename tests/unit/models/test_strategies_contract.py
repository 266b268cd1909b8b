"""One contract suite over every strategy in STRATEGY_NAMES (River's check-suite style)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidSummaryError, ModelError, UnknownSpecError
from models.strategies import STRATEGY_NAMES, NodeVector, get_strategy

pytestmark = pytest.mark.filterwarnings("error")

SAFEGUARDS = {
    "plain": {},
    "screened": {"screen": True},
    "dp": {"clip_norm": 1.0, "noise_multiplier": 0.5, "seed": 7},
}


def a_round(seed: int = 0, n: int = 7, dim: int = 5, poisoned: int = 0) -> list[NodeVector]:
    rng = np.random.default_rng(seed)
    updates = [
        NodeVector(f"n{i:02d}", i + 1, rng.normal(1.0, 0.1, dim), int(rng.integers(10, 100)))
        for i in range(n)
    ]
    evil = [NodeVector(f"x{i}", 1, np.full(dim, -50.0), 50) for i in range(poisoned)]
    return updates + evil


@pytest.fixture(params=STRATEGY_NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(SAFEGUARDS))
def guards(request: pytest.FixtureRequest) -> dict:
    return SAFEGUARDS[request.param]


@pytest.mark.parametrize("with_current", [False, True])
def test_order_of_updates_does_not_matter(name: str, guards: dict, with_current: bool) -> None:
    updates = a_round(n=9, poisoned=2)
    current = np.full(5, 0.9) if with_current else None
    a = get_strategy(name, **guards).aggregate(updates, current)
    shuffled = [updates[i] for i in np.random.default_rng(1).permutation(len(updates))]
    b = get_strategy(name, **guards).aggregate(shuffled, current)
    np.testing.assert_array_equal(a.vector, b.vector)
    assert (a.weights, a.excluded) == (b.weights, b.excluded)


def test_identical_updates_aggregate_to_that_update(name: str) -> None:
    vector = np.array([0.5, -1.0, 2.0])
    updates = [NodeVector(f"n{i}", 1, vector.copy(), 10 + i) for i in range(5)]
    result = get_strategy(name, screen=True).aggregate(updates)
    np.testing.assert_allclose(result.vector, vector, rtol=1e-12)
    # only Krum's selection may leave identical updates out; never screening
    assert all(why.startswith("krum:") for why in result.excluded.values())


@pytest.mark.parametrize("dim", [1, 2, 31])
def test_result_has_the_length_of_the_inputs(name: str, guards: dict, dim: int) -> None:
    updates = a_round(n=8, dim=dim)
    result = get_strategy(name, **guards).aggregate(updates, np.zeros(dim))
    assert result.vector.shape == (dim,) and result.vector.dtype == np.float64
    assert np.all(np.isfinite(result.vector))


def test_weights_and_exclusions_account_for_every_node(name: str, guards: dict) -> None:
    updates = a_round(n=9, poisoned=2) + [NodeVector("idle", 1, np.ones(5), 0)]
    result = get_strategy(name, **guards).aggregate(updates)
    contributors, excluded = set(result.weights), set(result.excluded)
    assert contributors | excluded == {u.node_id for u in updates}
    assert not contributors & excluded
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(w >= 0 for w in result.weights.values())
    assert "idle" in excluded and "no samples" in result.excluded["idle"]
    assert all(isinstance(why, str) and why for why in result.excluded.values())


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(STRATEGY_NAMES),
    seed=st.integers(0, 2**16),
    n=st.integers(5, 12),
    dim=st.integers(1, 6),
    scale=st.floats(1e-6, 1e6),
)
def test_any_round_gives_a_finite_accounted_result(spec, seed, n, dim, scale) -> None:
    rng = np.random.default_rng(seed)
    updates = [
        NodeVector(f"n{i}", 1, rng.normal(0, scale, dim), int(rng.integers(1, 100)))
        for i in range(n)
    ]
    try:
        result = get_strategy(spec, screen=True).aggregate(updates, rng.normal(0, scale, dim))
    except ModelError as e:  # Krum's f counts the updates screening left: too few is an error
        assert "krum" in spec and "needs at least" in str(e)
        return
    assert np.all(np.isfinite(result.vector))
    assert set(result.weights) | set(result.excluded) == {u.node_id for u in updates}
    assert sum(result.weights.values()) == pytest.approx(1.0)
    screened = [why for why in result.excluded.values() if why.startswith("screening")]
    assert len(screened) <= (n - 1) // 2  # screening never excludes a majority (Krum may)


BAD_ROUNDS = {
    "empty": [],
    "nan": [NodeVector("a", 1, np.array([np.nan, 1.0]), 3), NodeVector("b", 1, np.ones(2), 3)],
    "inf": [NodeVector("a", 1, np.array([1.0, np.inf]), 3)],
    "lengths": [NodeVector("a", 1, np.ones(1), 3), NodeVector("b", 1, np.ones(2), 3)],
    "zero-samples": [NodeVector("a", 1, np.ones(1), 0), NodeVector("b", 1, np.ones(1), 0)],
    "negative-samples": [NodeVector("a", 1, np.ones(1), -4)],
    "float-samples": [NodeVector("a", 1, np.ones(1), 2.5)],  # type: ignore[arg-type]
    "negative-staleness": [NodeVector("a", 1, np.ones(1), 3, staleness=-1)],
    "duplicate-node": [NodeVector("a", 1, np.ones(1), 3), NodeVector("a", 2, np.ones(1), 3)],
    "text-vector": [NodeVector("a", 1, np.array(["x"]), 3)],
    "complex-vector": [NodeVector("a", 1, np.array([1j]), 3)],
    "huge-values": [NodeVector("a", 1, np.array([1e200]), 3)],
}


@pytest.mark.parametrize("updates", BAD_ROUNDS.values(), ids=BAD_ROUNDS.keys())
def test_bad_updates_raise_typed_errors(name: str, updates: list[NodeVector]) -> None:
    with pytest.raises(InvalidSummaryError):
        get_strategy(name).aggregate(updates)


@pytest.mark.parametrize("current", [np.ones(4), np.array([np.nan] * 5)], ids=["len", "nan"])
def test_a_bad_current_vector_raises(name: str, current: np.ndarray) -> None:
    with pytest.raises(InvalidSummaryError):
        get_strategy(name).aggregate(a_round(), current)


def test_unknown_specs_and_options_are_refused() -> None:
    with pytest.raises(UnknownSpecError, match="fedavg.*multikrum"):
        get_strategy("fedsomething")
    with pytest.raises(UnknownSpecError, match="key=value"):
        get_strategy("krum:1")
    with pytest.raises(ModelError, match="no option"):
        get_strategy("fedavg", momentum=0.9)
    with pytest.raises(ModelError, match="twice"):
        get_strategy("krum:f=1", num_malicious=2)
    for bad in ("trimmed:0.7", "fedadam:tau=0", "async:mix=2", "krum:f=-1"):
        with pytest.raises(ModelError):
            get_strategy(bad)
    with pytest.raises(ModelError, match="clip_norm"):
        get_strategy("fedavg", noise_multiplier=1.0)
    with pytest.raises(ModelError):
        get_strategy("async", hinge_after="soon")


def test_spec_parameters_and_options_configure_the_same_strategy() -> None:
    assert get_strategy("multikrum:f=1,m=3").name == get_strategy("multikrum", f=1, m=3).name
    assert get_strategy("trimmed:beta=0.2").name == get_strategy("trimmed:0.2").name
    assert get_strategy("fedavg:screen=true").safeguards.screen
    assert not get_strategy("fedmedian", screen=False).safeguards.screen
    assert get_strategy("fedmedian").safeguards.screen  # robust ones screen by default


def test_exact_is_sample_weighted_fedavg() -> None:
    updates = a_round()
    exact, fedavg = (
        get_strategy("exact").aggregate(updates),
        get_strategy("fedavg").aggregate(updates),
    )
    np.testing.assert_array_equal(exact.vector, fedavg.vector)
    expected = np.average(
        np.stack([u.vector for u in updates]), axis=0, weights=[u.n_samples for u in updates]
    )
    np.testing.assert_allclose(fedavg.vector, expected, rtol=1e-12)


def test_krum_excludes_the_non_selected_with_their_score() -> None:
    result = get_strategy("multikrum:f=2,m=4").aggregate(a_round(n=7, poisoned=2))
    assert len(result.weights) == 4 and set(result.weights.values()) == {0.25}
    assert {"x0", "x1"} <= set(result.excluded)
    assert all("krum: score" in why for why in result.excluded.values())


def test_async_excludes_too_stale_with_reason_and_down_weights_stale() -> None:
    updates = [
        NodeVector("fresh", 1, np.array([1.0]), 10, staleness=0),
        NodeVector("old", 1, np.array([3.0]), 10, staleness=3),
        NodeVector("ancient", 1, np.array([100.0]), 10, staleness=50),
    ]
    result = get_strategy("async", max_staleness=10).aggregate(updates)
    assert "staleness 50" in result.excluded["ancient"]
    assert "bound 10" in result.excluded["ancient"]
    assert result.weights["fresh"] == pytest.approx(2 * result.weights["old"])  # (1+3)^-0.5
    assert 1.0 < result.vector[0] < 2.0
    mixed = get_strategy("async:mix=0.5").aggregate(updates[:1], np.zeros(1))
    assert mixed.vector.tolist() == [0.5]


def test_every_update_too_stale_is_an_error() -> None:
    with pytest.raises(InvalidSummaryError, match="staleness 9"):
        get_strategy("async", max_staleness=2).aggregate([NodeVector("a", 1, np.ones(1), 5, 9)])


def test_server_optimizers_step_from_current_and_resume_from_state() -> None:
    updates = [NodeVector(f"n{i}", 1, np.array([1.0, 2.0]), 10) for i in range(3)]
    first = get_strategy("fedavgm").aggregate(updates, np.zeros(2)).vector
    np.testing.assert_allclose(first, [1.0, 2.0])  # zero velocity, server_lr 1: the FedAvg step
    np.testing.assert_allclose(get_strategy("fedadam").aggregate(updates).vector, [1.0, 2.0])
    for spec in ("fedavgm", "fedadam"):
        straight, resumed, current = get_strategy(spec), get_strategy(spec), np.zeros(2)
        for _ in range(3):
            step = straight.aggregate(updates, current).vector
            resumed.load_state(straight.state())
            current = step
        np.testing.assert_array_equal(
            straight.aggregate(updates, current).vector,
            resumed.aggregate(updates, current).vector,
        )


def test_stateless_strategies_refuse_foreign_state(name: str) -> None:
    strategy = get_strategy(name)
    assert strategy.state() == {}
    strategy.load_state({})
    if name not in ("fedavgm", "fedadam"):
        with pytest.raises(ModelError):
            strategy.load_state({"velocity": np.zeros(2)})


def test_dp_noise_is_reproducible_per_update_and_clipping_bounds_influence() -> None:
    updates = [NodeVector("a", 1, np.array([100.0, 0.0]), 1), NodeVector("b", 1, np.zeros(2), 1)]
    clipped = get_strategy("fedavg", clip_norm=1.0).aggregate(updates)
    assert np.linalg.norm(clipped.vector) <= 0.5 + 1e-12
    noisy = [get_strategy("fedavg", clip_norm=1.0, noise_multiplier=1.0, seed=3) for _ in "ab"]
    a, b = (s.aggregate(updates).vector for s in noisy)
    np.testing.assert_array_equal(a, b)
    other = get_strategy("fedavg", clip_norm=1.0, noise_multiplier=1.0, seed=4)
    assert not np.array_equal(a, other.aggregate(updates).vector)


def test_screening_in_a_strategy_records_why() -> None:
    result = get_strategy("fedavg", screen=True).aggregate(a_round(n=9, poisoned=2))
    assert set(result.excluded) == {"x0", "x1"}
    assert all(why.startswith("screening: norm") for why in result.excluded.values())

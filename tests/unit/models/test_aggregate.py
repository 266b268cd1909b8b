"""Aggregation maths against numpy oracles, robustness bounds, server optimizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models import aggregate as agg
from models.errors import InvalidSummaryError, ModelError

pytestmark = pytest.mark.filterwarnings("error")

finite = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def rounds(draw: st.DrawFn, min_n: int = 1) -> tuple[list[np.ndarray], list[int]]:
    n = draw(st.integers(min_n, 9))
    dim = draw(st.integers(1, 6))
    arrays = [draw(hnp.arrays(np.float64, dim, elements=finite)) for _ in range(n)]
    weights = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n).filter(any))
    return arrays, weights


@given(rounds())
def test_fedavg_equals_the_numpy_oracle(data: tuple[list[np.ndarray], list[int]]) -> None:
    arrays, weights = data
    expected = np.average(np.stack(arrays), axis=0, weights=weights)
    np.testing.assert_allclose(agg.fedavg(arrays, weights), expected, rtol=1e-9, atol=1e-6)


@given(rounds(), st.floats(0, 0.49))
def test_median_and_trimmed_stay_within_the_coordinate_range(data, beta: float) -> None:
    arrays, _ = data
    low, high = np.min(arrays, axis=0), np.max(arrays, axis=0)
    for result in (agg.fedmedian(arrays), agg.trimmed_mean(arrays, beta)):
        assert np.all(result >= low - 1e-9 * np.abs(low)) and np.all(
            result <= high + 1e-9 * np.abs(high)
        )


@given(rounds())
def test_median_equals_numpy_and_trimmed_zero_is_the_mean(data) -> None:
    arrays, _ = data
    np.testing.assert_array_equal(agg.fedmedian(arrays), np.median(np.stack(arrays), axis=0))
    np.testing.assert_allclose(agg.trimmed_mean(arrays, 0.0), np.mean(arrays, axis=0))


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.floats(1e3, 1e12), st.booleans())
def test_robust_aggregators_resist_a_poisoned_minority(seed, f, scale, same_direction) -> None:
    rng = np.random.default_rng(seed)
    honest = [rng.normal(1.0, 0.05, 4) for _ in range(8)]
    attack = np.ones(4) if same_direction else rng.normal(0, 1, 4)
    poisoned = [attack * scale * rng.uniform(0.5, 2) for _ in range(f)]
    arrays = honest + poisoned
    low, high = np.min(honest, axis=0), np.max(honest, axis=0)
    beta = min(f / len(arrays) + 1e-9, 0.49)  # trims at least f per side
    for robust in (
        agg.fedmedian(arrays),
        agg.trimmed_mean(arrays, beta),
        agg.krum(arrays, f)[0],
        agg.krum(arrays, f, num_to_keep=len(arrays) - 2 * f)[0],
    ):
        assert np.all(robust >= low - 1e-9) and np.all(robust <= high + 1e-9)
    dragged = agg.fedavg(arrays, [1] * len(arrays))
    assert np.max(np.abs(dragged - np.mean(honest, axis=0))) > 0.05 * scale / len(arrays)


def test_krum_selects_the_honest_cluster_and_reports_indices() -> None:
    arrays = [np.array([0.0]), np.array([0.1]), np.array([0.15]), np.array([0.3]), np.array([50.0])]
    scores = agg.krum_scores(arrays, num_malicious=1)
    assert int(np.argmax(scores)) == 4
    vector, selected = agg.krum(arrays, 1, num_to_keep=3)
    assert selected == [0, 1, 2]
    np.testing.assert_allclose(vector, [0.25 / 3])


def brute_krum_scores(arrays: list[np.ndarray], f: int) -> np.ndarray:
    matrix = np.stack(arrays)
    distances = ((matrix[:, None, :] - matrix[None, :, :]) ** 2).sum(axis=2)
    k = len(arrays) - f - 2
    return np.array([np.sort(np.delete(row, i))[:k].sum() for i, row in enumerate(distances)])


_FAR_PAIR = [np.zeros(6)] * 3 + [  # two close updates far from the median: Gram cancellation
    np.array([865685.81683169, 803377.65625] + [865685.81683169] * 4),
    np.array([865686.0, 803290.0] + [865686.0] * 4),
]


@given(rounds(min_n=5), st.integers(0, 2))
@example((_FAR_PAIR, [0, 0, 0, 0, 1]), 2)
def test_krum_scores_equal_the_pairwise_oracle(data, f: int) -> None:
    arrays, _ = data
    expected = brute_krum_scores(arrays, f)
    np.testing.assert_allclose(agg.krum_scores(arrays, f), expected, rtol=1e-7, atol=1e-3)


def test_krum_is_accurate_with_a_large_common_offset() -> None:
    rng = np.random.default_rng(0)
    arrays = [1e6 + rng.normal(0, 1e-4, 3) for _ in range(6)] + [np.full(3, 1e6 + 1e-2)]
    np.testing.assert_allclose(agg.krum_scores(arrays, 1), brute_krum_scores(arrays, 1), rtol=1e-6)
    assert 6 not in agg.krum(arrays, 1, num_to_keep=5)[1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: agg.fedavg([], []), "no updates"),
        (lambda: agg.fedavg([np.ones(2), np.ones(3)], [1, 1]), "different lengths"),
        (lambda: agg.fedavg([np.array([np.nan])], [1]), "NaN or inf"),
        (lambda: agg.fedavg([np.ones(1)], [0]), "zero total weight"),
        (lambda: agg.fedavg([np.ones(1)], [-1]), "non-negative"),
        (lambda: agg.fedavg([np.ones(1)], [1, 2]), "2 weights for 1"),
        (lambda: agg.fedmedian([np.array(["a"])]), "numeric"),
        (lambda: agg.fedmedian([np.array([1e200])]), "corrupt"),
    ],
)
def test_bad_inputs_raise_invalid_summary(call, message: str) -> None:
    with pytest.raises(InvalidSummaryError, match=message):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: agg.trimmed_mean([np.ones(1)], 0.5),
        lambda: agg.trimmed_mean([np.ones(1)], -0.1),
        lambda: agg.krum([np.ones(1)] * 3, num_malicious=1),
        lambda: agg.krum([np.ones(1)] * 5, num_malicious=1, num_to_keep=5),
        lambda: agg.krum([np.ones(1)] * 5, num_malicious=-1),
        lambda: agg.FedAvgM(momentum=1.0),
        lambda: agg.FedAvgM(server_lr=0),
        lambda: agg.FedAdam(beta2=1.5),
        lambda: agg.FedAdam(tau="small"),
    ],
)
def test_bad_configuration_raises_model_error(call) -> None:
    with pytest.raises(ModelError):
        call()


def test_huge_weights_do_not_overflow() -> None:
    result = agg.fedavg([np.zeros(1), np.ones(1)], [1e308, 1e308])
    assert result.tolist() == [0.5]


def test_fedavgm_accumulates_velocity_like_hsu_et_al() -> None:
    opt = agg.FedAvgM(server_lr=1.0, momentum=0.9)
    current = np.zeros(2)
    current = opt.step(current, np.ones(2))
    np.testing.assert_allclose(current, [1, 1])
    current = opt.step(current, current)  # no new gradient: momentum alone moves it
    np.testing.assert_allclose(current, [1.9, 1.9])
    np.testing.assert_allclose(opt.state()["velocity"], [-0.9, -0.9])


def test_fedadam_matches_the_paper_update_step_by_step() -> None:
    rng = np.random.default_rng(5)
    opt = agg.FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x, m, v = np.zeros(3), np.zeros(3), np.full(3, 1e-6)
    for _ in range(5):
        target = rng.normal(0, 1, 3)
        delta = target - x  # Reddi et al.: Delta = aggregate - current = -pseudo-gradient
        m = 0.9 * m + 0.1 * delta
        v = 0.99 * v + 0.01 * delta**2
        expected = x + 0.1 * m / (np.sqrt(v) + 1e-3)
        x_new = opt.step(x, target)
        np.testing.assert_allclose(x_new, expected, rtol=1e-12)
        x = x_new


@pytest.mark.parametrize("cls", [agg.FedAvgM, agg.FedAdam])
def test_optimizer_state_round_trips_and_resets_on_a_new_shape(cls) -> None:
    opt = cls()
    assert opt.state() == {}
    opt.step(np.zeros(3), np.ones(3))
    saved = opt.state()
    saved[next(iter(saved))][0] = 123.0  # a copy: mutating it leaves the optimizer alone
    resumed = cls.from_state(opt.state())
    np.testing.assert_array_equal(
        resumed.step(np.ones(3), np.full(3, 2.0)), opt.step(np.ones(3), np.full(3, 2.0))
    )
    fresh = cls().step(np.zeros(4), np.ones(4))
    np.testing.assert_array_equal(opt.step(np.zeros(4), np.ones(4)), fresh)


@pytest.mark.parametrize(
    "state",
    [
        {"nope": np.zeros(2)},
        {"m": np.zeros(2), "v": np.zeros(3)},
        {"m": np.zeros(1), "v": -np.ones(1)},
    ],
)
def test_malformed_optimizer_state_is_refused(state) -> None:
    with pytest.raises(InvalidSummaryError):
        agg.FedAdam.from_state(state)


def test_optimizers_are_frozen_configs() -> None:
    opt = agg.FedAdam()
    with pytest.raises(AttributeError):
        opt.server_lr = 1.0  # type: ignore[misc]
    assert agg.FedAdam() == agg.FedAdam()

"""DP: clipping bounds, Gaussian noise scale, RDP accounting against a grid oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.errors import InvalidSummaryError, ModelError
from models.privacy import clip_by_l2_norm, epsilon_for, gaussian_mechanism, noise_multiplier_for

pytestmark = pytest.mark.filterwarnings("error")

vectors = hnp.arrays(
    np.float64, st.integers(1, 50), elements=st.floats(-1e200, 1e200, allow_nan=False)
)
sigmas = st.floats(0.05, 100)
deltas = st.floats(1e-12, 0.5)


@given(vectors, st.floats(1e-6, 1e6))
def test_clipping_bounds_the_norm_and_keeps_the_direction(values, max_norm: float) -> None:
    clipped = clip_by_l2_norm(values, max_norm)
    norm = np.linalg.norm(clipped)
    assert norm <= max_norm * (1 + 1e-9)
    kept = (clipped != 0) & (values != 0)
    ratios = clipped[kept] / values[kept]  # one positive factor: the direction is kept
    assert np.all(ratios > 0) and np.allclose(ratios, ratios[:1], rtol=1e-9)


def test_clipping_leaves_short_vectors_alone_and_returns_a_copy() -> None:
    values = np.array([0.3, 0.4])
    clipped = clip_by_l2_norm(values, 1.0)
    assert clipped.tolist() == [0.3, 0.4] and clipped is not values
    assert clip_by_l2_norm(np.zeros(3), 1.0).tolist() == [0.0] * 3


def test_gaussian_noise_has_the_stated_std_and_zero_mean() -> None:
    rng = np.random.default_rng(3)
    noisy = gaussian_mechanism(np.zeros(200_000), max_norm=2.0, noise_multiplier=0.5, rng=rng)
    assert noisy.std() == pytest.approx(1.0, rel=0.01)
    assert abs(noisy.mean()) < 0.01


def test_noise_over_many_seeded_draws_matches_sigma_times_clip() -> None:
    rng = np.random.default_rng(11)
    draws = np.stack(
        [gaussian_mechanism(np.array([3.0, 4.0]), 1.0, 2.0, rng) for _ in range(20_000)]
    )
    np.testing.assert_allclose(draws.mean(axis=0), [0.6, 0.8], atol=0.05)
    np.testing.assert_allclose(draws.std(axis=0), [2.0, 2.0], rtol=0.03)


def test_the_same_seed_gives_the_same_noise() -> None:
    a = gaussian_mechanism(np.ones(5), 1.0, 1.0, np.random.default_rng(9))
    b = gaussian_mechanism(np.ones(5), 1.0, 1.0, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def grid_epsilon(sigma: float, delta: float, rounds: int) -> float:
    alphas = 1 + np.logspace(-6, 7, 200_000)
    return float(np.min(rounds * alphas / (2 * sigma**2) + np.log(1 / delta) / (alphas - 1)))


@given(sigmas, deltas, st.integers(1, 1000))
def test_closed_form_epsilon_is_the_minimum_over_rdp_orders(sigma, delta, rounds) -> None:
    exact = epsilon_for(sigma, delta, rounds)
    grid = grid_epsilon(sigma, delta, rounds)
    assert exact <= grid * (1 + 1e-12)
    assert exact == pytest.approx(grid, rel=1e-3)


@given(sigmas, sigmas, deltas, st.integers(1, 500), st.integers(1, 500))
def test_epsilon_falls_with_noise_and_grows_with_rounds(s1, s2, delta, r1, r2) -> None:
    (low_s, high_s), (few, many) = sorted((s1, s2)), sorted((r1, r2))
    assert epsilon_for(high_s, delta, few) <= epsilon_for(low_s, delta, few)
    assert epsilon_for(low_s, delta, many) >= epsilon_for(low_s, delta, few)


@given(st.floats(0.01, 50), deltas, st.integers(1, 1000))
def test_noise_multiplier_for_inverts_epsilon_for(epsilon, delta, rounds) -> None:
    sigma = noise_multiplier_for(epsilon, delta, rounds)
    assert epsilon_for(sigma, delta, rounds) == pytest.approx(epsilon, rel=1e-9)


def test_known_values() -> None:
    # rho = 1/2, L = ln(1e5): eps = 0.5 + 2 sqrt(0.5 ln 1e5)
    assert epsilon_for(1.0, 1e-5, 1) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e5)))
    assert epsilon_for(0.0, 1e-5) == math.inf


@pytest.mark.parametrize(
    "call",
    [
        lambda: clip_by_l2_norm(np.ones(2), 0.0),
        lambda: clip_by_l2_norm(np.ones(2), math.nan),
        lambda: gaussian_mechanism(np.ones(2), 1.0, -1.0, np.random.default_rng()),
        lambda: gaussian_mechanism(np.ones(2), 1.0, 1.0, np.random),  # global state: refused
        lambda: epsilon_for(1.0, 0.0),
        lambda: epsilon_for(1.0, 1.0),
        lambda: epsilon_for(1.0, 1e-5, rounds=0),
        lambda: noise_multiplier_for(0.0, 1e-5),
    ],
)
def test_bad_parameters_raise_model_error(call) -> None:
    with pytest.raises(ModelError):
        call()


def test_non_finite_vectors_are_invalid() -> None:
    with pytest.raises(InvalidSummaryError):
        clip_by_l2_norm(np.array([np.inf, 1.0]), 1.0)

"""DP: clipping bounds, Gaussian noise scale, RDP accounting against a grid oracle and
published results (Mironov 2017 Prop. 7; Balle & Wang 2018's exact Gaussian mechanism)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.errors import InvalidSummaryError, ModelError
from models.privacy import (
    clip_by_l2_norm,
    epsilon_for,
    gaussian_mechanism,
    noise_multiplier_for,
    releases_within,
)

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


# -- the accountant against published results (issue #25 item 4) -----------------------
def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def analytic_delta(eps: float, mu: float) -> float:
    """Balle & Wang 2018, Thm. 8: the exact δ(ε) of a Gaussian mechanism with
    sensitivity / std = mu (T releases at noise σ compose to mu = sqrt(T) / σ)."""
    return _phi(mu / 2 - eps / mu) - math.exp(eps) * _phi(-mu / 2 - eps / mu)


def analytic_epsilon(delta: float, mu: float) -> float:
    """The exact ε at ``delta`` (δ(ε) falls in ε): bisection on :func:`analytic_delta`."""
    lo, hi = 0.0, 700.0  # e^700 is still a float
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if analytic_delta(mid, mu) > delta else (lo, mid)
    return hi


def loss_distribution_delta(eps: float, mu: float) -> float:
    """δ(ε) = E[(1 - e^(ε - L))+] with the privacy loss L ~ N(mu²/2, mu²) (Dong, Roth &
    Su 2019), integrated numerically: an oracle independent of the closed form above."""
    loss = np.linspace(eps, mu**2 / 2 + 40 * mu + eps, 400_001)
    density = np.exp(-((loss - mu**2 / 2) ** 2) / (2 * mu**2)) / (mu * math.sqrt(2 * math.pi))
    return float(np.trapezoid((1 - np.exp(eps - loss)) * density, loss))


def renyi_divergence_numeric(alpha: float, sigma: float) -> float:
    """D_alpha(N(1, σ²) || N(0, σ²)) by integrating p^alpha q^(1-alpha) on a grid."""
    x = np.linspace(-60 * sigma - 30, 60 * sigma + 30, 600_001)
    log_p = -((x - 1.0) ** 2) / (2 * sigma**2)
    log_q = -(x**2) / (2 * sigma**2)
    log_f = alpha * log_p + (1 - alpha) * log_q - math.log(sigma * math.sqrt(2 * math.pi))
    top = log_f.max()
    return float((top + math.log(np.trapezoid(np.exp(log_f - top), x))) / (alpha - 1))


@pytest.mark.parametrize(("alpha", "sigma"), [(1.5, 1.0), (2.0, 0.7), (8.0, 3.0), (32.0, 10.0)])
def test_one_gaussian_release_is_alpha_over_2_sigma_squared_rdp(alpha, sigma) -> None:
    """Mironov 2017, Prop. 7 -- the per-release cost the closed form composes -- checked
    by integrating the Rényi divergence of sensitivity-1 Gaussians directly."""
    assert renyi_divergence_numeric(alpha, sigma) == pytest.approx(alpha / (2 * sigma**2), rel=1e-6)


@pytest.mark.parametrize(("eps", "mu"), [(0.5, 0.3), (1.0, 1.0), (4.0, 2.0), (8.0, 5.0)])
def test_the_analytic_gaussian_oracle_agrees_with_the_privacy_loss_distribution(eps, mu) -> None:
    assert analytic_delta(eps, mu) == pytest.approx(loss_distribution_delta(eps, mu), rel=1e-5)


@given(st.floats(1.0, 100), st.sampled_from([1e-3, 1e-5, 1e-7, 1e-9]), st.integers(1, 500))
def test_rdp_epsilon_is_never_below_the_exact_epsilon(sigma, delta, rounds) -> None:
    """The accountant may overstate what a node spent, never understate it: at the ε it
    reports, the exact Gaussian mechanism's δ(ε) is within δ (Balle & Wang 2018)."""
    eps = epsilon_for(sigma, delta, rounds)
    mu = math.sqrt(rounds) / sigma
    assert analytic_delta(eps, mu) <= delta * (1 + 1e-9)
    assert analytic_epsilon(delta, mu) <= eps


@pytest.mark.parametrize(
    ("sigma", "rounds", "exact"),
    [(1.0, 1, 4.3772), (2.0, 10, 7.5113), (50.0, 100, 0.7255)],
)
def test_rdp_epsilon_is_a_bounded_overstatement_at_known_points(sigma, rounds, exact) -> None:
    """Exact ε at δ = 1e-5 (bisection on Balle & Wang's δ(ε), pinned to 4 decimals): the
    RDP bound stays above it by no more than 40 % at these points."""
    assert analytic_epsilon(1e-5, math.sqrt(rounds) / sigma) == pytest.approx(exact, abs=1e-4)
    rdp = epsilon_for(sigma, 1e-5, rounds)
    assert exact <= rdp <= 1.4 * exact


@given(st.floats(0.05, 20), st.floats(0.01, 100), st.sampled_from([1e-3, 1e-5, 1e-8]))
def test_releases_within_is_the_largest_count_the_budget_covers(budget, sigma, delta) -> None:
    n = releases_within(budget, sigma, delta)
    assert n == 0 or epsilon_for(sigma, delta, n) <= budget
    assert epsilon_for(sigma, delta, n + 1) > budget

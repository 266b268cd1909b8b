"""Update screening: catches scaled and sign-flipped updates, never a majority, says why."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.collusion import alie_update, alie_z, ipm_update, jitter
from models.errors import InvalidSummaryError, ModelError
from models.screening import MIN_UPDATES, robust_z, screen
from models.strategies import NodeVector, get_strategy

pytestmark = pytest.mark.filterwarnings("error")


def poisoned_round(seed: int, honest_n: int, attackers: int, dim: int, spread: float):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1, dim)
    mean /= np.linalg.norm(mean)
    noise = spread / np.sqrt(dim)  # per coordinate: each update's noise has norm ~spread
    honest = [mean + rng.normal(0, noise, dim) for _ in range(honest_n)]
    attacks = [-10 * (mean + rng.normal(0, noise, dim)) for _ in range(attackers)]
    return honest + attacks, set(range(honest_n, honest_n + attackers))


rounds = {
    "seed": st.integers(0, 2**32 - 1),
    "honest_n": st.integers(6, 30),
    "attackers": st.integers(1, 5),
    "dim": st.integers(2, 40),
}


@settings(deadline=None)
@given(**rounds)
def test_sign_flipped_scaled_updates_are_excluded(seed, honest_n, attackers, dim) -> None:
    vectors, evil = poisoned_round(seed, honest_n, attackers, dim, spread=0.05)
    result = screen(vectors)
    assert set(result.excluded) == evil
    assert all("robust-z" in why for why in result.excluded.values())


@settings(deadline=None)
@given(**rounds)
def test_with_noisy_honest_updates_attackers_are_still_caught(
    seed, honest_n, attackers, dim
) -> None:
    vectors, evil = poisoned_round(seed, honest_n, attackers, dim, spread=0.3)
    excluded = set(screen(vectors).excluded)
    assert evil <= excluded
    assert len(excluded - evil) <= max(1, honest_n // 10)  # rare tail false positives


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    honest_n=st.integers(6, 30),
    share=st.floats(0.05, 0.3),
    dim=st.integers(2, 40),
    noise=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_ipm_is_caught_by_direction_whether_colluders_copy_or_jitter(
    seed, honest_n, share, dim, noise
) -> None:
    """Against a consensus (honest spread 0.3), -0.5 x the honest mean is an opposed
    update; the screen flags it by its cosine, not by finding identical vectors, so
    colluders that each add noise are flagged too."""
    rng = np.random.default_rng(seed)
    honest, _ = poisoned_round(seed, honest_n, 0, dim, 0.3)
    attackers = max(1, round(share * honest_n))
    shared = ipm_update(np.stack(honest), 0.5)
    sent = [jitter(shared, np.stack(honest), noise, rng) for _ in range(attackers)]
    result = screen(honest + sent)
    assert set(result.excluded) == set(range(honest_n, honest_n + attackers))
    assert all(why.startswith("direction") for why in result.excluded.values())


def test_alie_stays_inside_the_spread_and_is_not_screened_so_medians_must_hold_it() -> None:
    """ALIE is built to pass screening: it is not flagged, jittered or not (what contains
    it is the median's vote, see tests/reliability/test_poisoning.py)."""
    honest, _ = poisoned_round(3, 8, 0, 10, 0.3)
    shared = alie_update(np.stack(honest), alie_z(10, 2))
    rng = np.random.default_rng(0)
    for noise in (0.0, 0.1):
        sent = [jitter(shared, np.stack(honest), noise, rng) for _ in range(2)]
        assert screen(honest + sent).excluded == {}


def test_sign_flip_without_scaling_is_caught_by_direction() -> None:
    rng = np.random.default_rng(4)
    mean = np.ones(10)
    honest = [mean + rng.normal(0, 0.05, 10) for _ in range(9)]
    result = screen([*honest, -mean])
    assert list(result.excluded) == [9]
    assert result.excluded[9].startswith("direction: cosine -1.000")


def test_the_reason_names_the_norm_its_z_and_the_round_median() -> None:
    vectors = [np.array([1.0, 0.0]) * (1 + 0.01 * i) for i in range(6)] + [np.array([41.2, 0])]
    why = screen(vectors).excluded[6]
    assert why.startswith("norm 41.2 is ") and "robust-z above the round median 1.0" in why


def test_short_updates_are_never_flagged_for_their_norm() -> None:
    vectors = [np.ones(3) * (1 + 0.01 * i) for i in range(8)] + [np.ones(3) * 1e-6]
    assert screen(vectors).excluded == {}


@settings(deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=25), st.integers(1, 4))
def test_never_excludes_a_majority(values: list[float], dim: int) -> None:
    vectors = [np.full(dim, v) * (1 + i % 3) for i, v in enumerate(values)]
    result = screen(vectors, threshold=0.1)
    assert len(result.excluded) <= (len(vectors) - 1) // 2
    assert sorted(result.kept + list(result.excluded)) == list(range(len(vectors)))


@pytest.mark.parametrize("n", range(MIN_UPDATES))
def test_rounds_too_small_to_have_a_majority_are_kept_whole(n: int) -> None:
    vectors = [np.full(2, 10.0**i) for i in range(n)]
    if n == 0:
        with pytest.raises(InvalidSummaryError):
            screen(vectors)
    else:
        assert screen(vectors).kept == list(range(n)) and screen(vectors).excluded == {}


def test_identical_and_zero_updates_divide_by_nothing() -> None:
    assert screen([np.ones(4)] * 5).excluded == {}
    assert screen([np.zeros(4)] * 5).excluded == {}
    assert robust_z(np.zeros(5)).tolist() == [0.0] * 5


def test_mad_zero_falls_back_to_a_relative_tolerance() -> None:
    z = robust_z(np.array([2.0, 2.0, 2.0, 2.0, 2.002]), rtol=1e-3)
    assert z[:4].tolist() == [0.0] * 4 and z[4] == pytest.approx(0.6745)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), st.floats(-1e3, 1e3))
def test_robust_z_is_shift_invariant(values: list[float], shift: float) -> None:
    x = np.array(values)
    scale = max(float(np.median(np.abs(x - np.median(x)))), 1.0)
    shifted = robust_z(x + shift, rtol=0.0, atol=scale)
    np.testing.assert_allclose(shifted, robust_z(x, rtol=0.0, atol=scale), atol=1e-6)


def test_bad_threshold_is_refused() -> None:
    with pytest.raises(ModelError):
        screen([np.ones(2)] * 3, threshold=0)


def test_screening_before_fedavg_restores_the_clean_aggregate() -> None:
    rng = np.random.default_rng(2)
    honest = [NodeVector(f"h{i:02d}", 1, rng.normal(1, 0.05, 10), 50) for i in range(16)]
    evil = [NodeVector(f"e{i}", 1, -20 * np.ones(10), 50) for i in range(4)]
    clean = get_strategy("fedavg").aggregate(honest).vector
    plain = get_strategy("fedavg").aggregate(honest + evil)
    screened = get_strategy("fedavg", screen=True).aggregate(honest + evil)
    assert np.abs(plain.vector - clean).max() > 1.0
    assert set(screened.excluded) == {f"e{i}" for i in range(4)}
    np.testing.assert_allclose(screened.vector, clean, rtol=1e-12)


def test_screening_uses_deltas_from_the_current_global() -> None:
    current = np.full(5, 100.0)
    rng = np.random.default_rng(3)
    honest = [NodeVector(f"h{i}", 1, current + rng.normal(0.1, 0.01, 5), 10) for i in range(8)]
    flipped = NodeVector("flip", 1, current - 1.0, 10)  # close in raw weights, opposite as a step
    result = get_strategy("fedavg", screen=True).aggregate([*honest, flipped], current)
    assert list(result.excluded) == ["flip"]

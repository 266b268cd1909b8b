"""Properties of the aggregation maths: oracles, robustness, privacy, quantization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models import aggregate as agg
from models.privacy import clip_by_l2_norm, epsilon_for, gaussian_mechanism
from models.quantize import QuantizedArray, dequantize, quantize
from models.screening import screen
from models.staleness import staleness_weight
from models.strategies import Update, get_strategy

finite = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def rounds(draw: st.DrawFn, min_n: int = 1) -> tuple[list[np.ndarray], list[int]]:
    n = draw(st.integers(min_n, 8))
    dim = draw(st.integers(1, 6))
    arrays = [draw(hnp.arrays(np.float64, dim, elements=finite)) for _ in range(n)]
    weights = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return arrays, weights


@given(rounds())
def test_fedavg_equals_numpy_oracle(data: tuple[list[np.ndarray], list[int]]) -> None:
    arrays, weights = data
    expected = np.average(np.stack(arrays), axis=0, weights=weights)
    np.testing.assert_allclose(agg.fedavg(arrays, weights), expected, rtol=1e-9, atol=1e-6)


@given(rounds(), st.floats(0, 0.49))
def test_median_and_trimmed_stay_within_coordinate_range(data, beta: float) -> None:
    arrays, _ = data
    low, high = np.min(arrays, axis=0), np.max(arrays, axis=0)
    for result in (agg.fedmedian(arrays), agg.trimmed_mean(arrays, beta)):
        assert np.all(result >= low - 1e-6) and np.all(result <= high + 1e-6)


@given(st.integers(0, 10_000), st.integers(1, 3), st.floats(1e3, 1e9))
def test_robust_strategies_resist_a_poisoned_minority(seed: int, f: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    honest = [rng.normal(1.0, 0.05, 4) for _ in range(8)]
    poisoned = [rng.normal(0, 1, 4) * scale for _ in range(f)]
    arrays = honest + poisoned
    low, high = np.min(honest, axis=0), np.max(honest, axis=0)
    beta = f / len(arrays) + 1e-9
    for robust in (
        agg.fedmedian(arrays),
        agg.trimmed_mean(arrays, min(beta, 0.49)),
        agg.krum(arrays, f)[0],
    ):
        assert np.all(robust >= low - 1e-9) and np.all(robust <= high + 1e-9)
    dragged = agg.fedavg(arrays, [1] * len(arrays))
    assert np.max(np.abs(dragged - np.mean(honest, axis=0))) > 1.0


def test_screening_excludes_sign_flipped_scaled_updates() -> None:
    rng = np.random.default_rng(1)
    mean = rng.normal(0, 1, 30)
    honest = [mean + rng.normal(0, 0.1, 30) for _ in range(16)]
    attackers = [-10 * (mean + rng.normal(0, 0.1, 30)) for _ in range(4)]
    result = screen(honest + attackers)
    assert sorted(result.excluded) == list(range(16, 20))
    assert all("robust-z" in why for why in result.excluded.values())


def test_screening_never_excludes_a_majority_or_small_rounds() -> None:
    assert screen([np.ones(3), 100 * np.ones(3)]).excluded == {}
    wild = [np.full(2, 10.0**i) for i in range(7)]
    assert len(screen(wild).excluded) <= 3


def test_fedavg_with_screening_matches_clean_run_under_poisoning() -> None:
    rng = np.random.default_rng(2)
    honest = [Update(f"h{i}", 1, rng.normal(1, 0.05, 10), 50) for i in range(16)]
    evil = [Update(f"e{i}", 1, -20 * np.ones(10), 50) for i in range(4)]
    clean = get_strategy("fedavg").aggregate(honest).vector
    plain = get_strategy("fedavg").aggregate(honest + evil)
    screened = get_strategy("fedavg", screen=True).aggregate(honest + evil)
    assert np.abs(plain.vector - clean).max() > 1.0
    assert set(screened.excluded) == {f"e{i}" for i in range(4)}
    np.testing.assert_allclose(screened.vector, clean, rtol=1e-12)


@given(hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(-1e4, 1e4)))
def test_int8_error_is_at_most_half_a_step(values: np.ndarray) -> None:
    q = quantize(values, "int8")
    assert np.all(np.abs(dequantize(q) - values) <= q.scale / 2 + 1e-9 * (1 + np.abs(values)))
    again = QuantizedArray.from_bytes("int8", values.shape, q.to_bytes(), q.scale, q.zero)
    np.testing.assert_array_equal(dequantize(again), dequantize(q))


@given(hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-6e4, 6e4)))
def test_float16_relative_error(values: np.ndarray) -> None:
    restored = dequantize(quantize(values, "float16"))
    tolerance = np.maximum(np.abs(values) * 1e-3, 6.2e-5)
    assert np.all(np.abs(restored - values) <= tolerance)


def test_quantization_refuses_non_finite_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        quantize(np.array([np.nan]), "int8")
    with pytest.raises(ValueError):
        quantize(np.array([1e6]), "float16")
    assert dequantize(quantize(np.full(4, 3.0), "int8")).tolist() == [3.0] * 4


@given(hnp.arrays(np.float64, st.integers(1, 50), elements=finite), st.floats(0.01, 100))
def test_clipping_bounds_the_norm(values: np.ndarray, max_norm: float) -> None:
    assert np.linalg.norm(clip_by_l2_norm(values, max_norm)) <= max_norm * (1 + 1e-9)


def test_gaussian_noise_has_the_stated_std() -> None:
    rng = np.random.default_rng(3)
    noisy = gaussian_mechanism(np.zeros(200_000), max_norm=2.0, noise_multiplier=0.5, rng=rng)
    assert noisy.std() == pytest.approx(1.0, rel=0.01)


def test_epsilon_shrinks_with_noise_and_grows_with_rounds() -> None:
    assert epsilon_for(2.0, 1e-5, 10) < epsilon_for(1.0, 1e-5, 10)
    assert epsilon_for(1.0, 1e-5, 100) > epsilon_for(1.0, 1e-5, 10)


@given(st.integers(0, 1000), st.sampled_from(["polynomial", "hinge"]))
def test_staleness_weight_is_non_increasing(s: int, kind: str) -> None:
    assert 0 < staleness_weight(s + 1, kind=kind) <= staleness_weight(s, kind=kind) <= 1

"""Staleness: FedAsync's decays, the hard bound, the mixing step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.errors import InvalidSummaryError, ModelError, StaleUpdateError
from models.staleness import (
    DECAYS,
    StalenessPolicy,
    async_mix,
    staleness_of,
    staleness_weight,
)

pytestmark = pytest.mark.filterwarnings("error")


@given(
    st.integers(0, 10_000),
    st.sampled_from(DECAYS),
    st.floats(0, 5),
    st.floats(0, 20),
    st.integers(0, 10),
)
def test_weight_is_in_0_1_and_non_increasing(s, kind, exponent, slope, hinge_after) -> None:
    policy = StalenessPolicy(kind=kind, exponent=exponent, slope=slope, hinge_after=hinge_after)
    assert 0 < policy.weight(s + 1) <= policy.weight(s) <= 1
    assert policy.weight(0) == 1.0


def test_polynomial_and_hinge_match_fedasync() -> None:
    assert staleness_weight(3, exponent=0.5) == pytest.approx(0.5)  # (1 + 3)^-0.5
    assert staleness_weight(9, exponent=1.0) == pytest.approx(0.1)
    hinge = StalenessPolicy(kind="hinge", slope=10.0, hinge_after=4)
    assert [hinge.weight(s) for s in (0, 4)] == [1.0, 1.0]
    assert hinge.weight(5) == pytest.approx(1 / 11)  # 1 / (a (s - b) + 1)


def test_too_stale_names_node_staleness_and_bound() -> None:
    with pytest.raises(StaleUpdateError) as info:
        staleness_weight(12, max_staleness=10, node_id="edge-7")
    assert all(part in str(info.value) for part in ("edge-7", "staleness 12", "bound 10"))
    assert staleness_weight(10, max_staleness=10) > 0  # the bound itself is accepted


def test_negative_staleness_is_a_malformed_summary() -> None:
    with pytest.raises(InvalidSummaryError, match="newer than the global"):
        staleness_of(global_version=3, base_version=5, node_id="n1")
    with pytest.raises(InvalidSummaryError):
        staleness_weight(-1)
    assert staleness_of(5, 5) == 0 and staleness_of(9, 2) == 7


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "exponential"},
        {"exponent": -1.0},
        {"slope": float("nan")},
        {"hinge_after": -1},
        {"max_staleness": -1},
    ],
)
def test_bad_policies_are_refused(config: dict) -> None:
    with pytest.raises(ModelError):
        StalenessPolicy(**config)


vectors = hnp.arrays(np.float64, 5, elements=st.floats(-1e6, 1e6))


@given(vectors, vectors, st.floats(0.01, 1), st.floats(0, 1))
def test_async_mix_is_a_convex_step_towards_the_update(current, update, mix, weight) -> None:
    mixed = async_mix(current, update, mix=mix, weight=weight)
    alpha = mix * weight
    np.testing.assert_allclose(mixed, (1 - alpha) * current + alpha * update, atol=1e-6)
    low, high = np.minimum(current, update), np.maximum(current, update)
    assert np.all(mixed >= low - 1e-6) and np.all(mixed <= high + 1e-6)


def test_async_mix_extremes_and_refusals() -> None:
    assert async_mix(np.zeros(2), np.ones(2), mix=1.0).tolist() == [1.0, 1.0]
    assert async_mix(np.zeros(2), np.ones(2), mix=1.0, weight=0.0).tolist() == [0.0, 0.0]
    for bad in ({"mix": 0.0}, {"mix": 1.5}, {"mix": 0.5, "weight": 2.0}):
        with pytest.raises(ModelError):
            async_mix(np.zeros(2), np.ones(2), **bad)
    with pytest.raises(InvalidSummaryError):
        async_mix(np.zeros(2), np.ones(3), mix=0.5)

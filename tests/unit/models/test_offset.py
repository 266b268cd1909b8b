"""The site's logit offset: a prior-shift correction learned from the site's labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ModelError
from models.offset import LogitOffset


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _stream(shift: float, n: int, seed: int):
    """A shared model's probability and a label drawn at the site's shifted log-odds."""
    rng = np.random.default_rng(seed)
    for z in rng.normal(-1.0, 1.5, n):
        yield _sigmoid(z), bool(rng.random() < _sigmoid(z + shift))


@pytest.mark.parametrize("shift", [-2.0, 0.0, 1.5])
def test_it_learns_the_sites_log_odds_shift(shift: float) -> None:
    off = LogitOffset()
    for p, y in _stream(shift, 4000, seed=3):
        off.update(p, y)
    assert off.offset == pytest.approx(shift, abs=0.2)


def test_shifted_probabilities_lose_less_than_the_shared_ones_under_a_prior_shift() -> None:
    off, shared, shifted = LogitOffset(), 0.0, 0.0
    for p, y in _stream(2.0, 3000, seed=5):
        q = off.apply(p)
        shared -= math.log(p if y else 1 - p)
        shifted -= math.log(q if y else 1 - q)
        off.update(p, y)
    assert shifted < 0.9 * shared


def test_the_ranking_within_the_site_is_the_shared_models() -> None:
    off = LogitOffset()
    for p, y in _stream(1.0, 500, seed=7):
        off.update(p, y)
    ps = np.linspace(0.001, 0.999, 50)
    assert np.all(np.diff([off.apply(float(p)) for p in ps]) > 0)


@settings(max_examples=50, deadline=None)
@given(labels=st.lists(st.booleans(), min_size=1, max_size=300), p=st.floats(0.0, 1.0))
def test_any_labels_keep_the_offset_bounded_and_the_state_round_trips(labels, p) -> None:
    off = LogitOffset()
    for y in labels:
        off.update(p, y)
    assert abs(off.offset) <= 12.0 and 0.0 <= off.apply(p) <= 1.0
    again = LogitOffset()
    again.load_state(off.state())
    assert again.state() == off.state()


def test_unusable_settings_and_states_are_refused() -> None:
    with pytest.raises(ModelError, match="precision"):
        LogitOffset(prior=0.0)
    with pytest.raises(ModelError, match="not usable"):
        LogitOffset().load_state({"offset": float("nan"), "curvature": 1.0})
    with pytest.raises(ModelError, match="not usable"):
        LogitOffset().load_state({"offset": 0.0, "curvature": -1.0})

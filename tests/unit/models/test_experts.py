"""ExpertMixer (models/experts.py): the regret bound it documents, tracking, sleeping experts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ModelError
from models.experts import ExpertMixer

CLIP = 1e-4


def log_loss(p: float, y: bool) -> float:
    p = min(max(p, CLIP), 1 - CLIP)
    return -math.log(p if y else 1 - p)


probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
rounds = st.lists(
    st.tuples(st.lists(probabilities, min_size=3, max_size=3), st.booleans()),
    min_size=1,
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(rounds)
def test_without_share_the_mixture_is_within_ln_k_of_the_best_expert(history) -> None:
    """Bayes-mixture bound: L_mix <= min_i L_i + ln K, for any sequence of labels."""
    names = ("a", "b", "c")
    mix = ExpertMixer(names, share=0.0, clip=CLIP)
    loss_mix, loss = 0.0, np.zeros(3)
    for ps, y in history:
        scores = dict(zip(names, ps, strict=True))
        loss_mix += log_loss(mix.predict(scores), y)
        loss += [log_loss(p, y) for p in ps]
        mix.update(scores, y)
    assert loss_mix <= loss.min() + math.log(3) + 1e-6


@settings(max_examples=100, deadline=None)
@given(rounds, st.integers(min_value=0, max_value=199), st.sampled_from([0.01, 0.05]))
def test_fixed_share_is_within_its_bound_of_the_best_sequence_with_one_switch(
    history, switch, share
) -> None:
    """L_mix <= L(a then b) + ln K + m ln(K/alpha) + (T - m - 1) ln(1/(1 - alpha)), m = 1."""
    names = ("a", "b", "c")
    mix = ExpertMixer(names, share=share, clip=CLIP)
    loss_mix = 0.0
    losses = []
    for ps, y in history:
        scores = dict(zip(names, ps, strict=True))
        loss_mix += log_loss(mix.predict(scores), y)
        losses.append([log_loss(p, y) for p in ps])
        mix.update(scores, y)
    t = len(history)
    k = min(switch, t)
    best_sequence = min(
        sum(row[i] for row in losses[:k]) + sum(row[j] for row in losses[k:])
        for i in range(3)
        for j in range(3)
    )
    m = 1
    bound = math.log(3) + m * math.log(3 / share) + max(t - m - 1, 0) * math.log(1 / (1 - share))
    assert loss_mix <= best_sequence + bound + 1e-6


def test_the_mixer_follows_the_best_expert_and_again_after_it_changes() -> None:
    rng = np.random.default_rng(3)
    mix = ExpertMixer(("personal", "global"), share=0.01)
    for phase, best in enumerate(("global", "personal")):
        for _ in range(400):
            y = bool(rng.random() < 0.3)
            good = 0.8 if y else 0.2
            noise = float(rng.random())
            scores = {best: good, ("personal" if best == "global" else "global"): noise}
            mix.update(scores, y)
        weights = mix.weights({"personal": 0.5, "global": 0.5})
        assert weights[best] > 0.95, (phase, weights)


def test_a_sleeping_expert_keeps_its_weight_and_the_awake_one_speaks_alone() -> None:
    mix = ExpertMixer(("personal", "global"), prior=(0.3, 0.7), share=0.0)
    mix.update({"personal": 0.9}, True)  # the global sleeps (no model yet, or cut off)
    assert mix.weights({"personal": 0.1, "global": 0.1}) == pytest.approx(
        {"personal": 0.3, "global": 0.7}
    )
    assert mix.predict({"personal": 0.25}) == 0.25
    assert mix.predict({"personal": 0.2, "global": 0.6}) == pytest.approx(0.3 * 0.2 + 0.7 * 0.6)


def test_state_round_trips_and_bad_input_is_refused() -> None:
    mix = ExpertMixer(("personal", "global"))
    for y in (True, False, True):
        mix.update({"personal": 0.9, "global": 0.4}, y)
    other = ExpertMixer(("personal", "global"))
    other.load_state(mix.state())
    assert other.state() == mix.state()
    with pytest.raises(ModelError, match="unknown expert"):
        mix.predict({"central": 0.5})
    with pytest.raises(ModelError, match="distinct"):
        ExpertMixer(("a", "a"))
    with pytest.raises(ModelError, match="share"):
        ExpertMixer(("a", "b"), share=1.0)
    with pytest.raises(ModelError, match="not a weight"):
        other.load_state({"names": ["personal"], "weights": [float("nan")], "updates": 0})

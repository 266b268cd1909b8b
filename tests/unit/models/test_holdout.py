"""The holdout sample and its metric (models/holdout.py), against direct oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ModelError
from models.holdout import HoldoutScore, Reservoir, log_loss, roc_auc, score_holdout
from models.specs import get_spec

SPEC = get_spec("fraud-linear")


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
        min_size=1,
        max_size=60,
    )
)
def test_auc_is_the_pairwise_auc_ties_counted_half(pairs) -> None:
    y = np.array([p[0] for p in pairs], bool)
    s = np.array([p[1] for p in pairs])
    auc = roc_auc(y, s)
    if y.all() or not y.any():
        assert auc is None
    else:
        assert auc == pytest.approx(pairwise_auc(y, s), abs=1e-12)


def test_log_loss_is_the_mean_negative_log_likelihood_clipped() -> None:
    y = np.array([True, False, True])
    s = np.array([0.8, 0.3, 1.0])
    expected = -(math.log(0.8) + math.log(0.7) + math.log(1 - 1e-15)) / 3
    assert log_loss(y, s) == pytest.approx(expected)
    assert log_loss(np.array([True]), np.array([0.0])) == pytest.approx(-math.log(1e-15))
    with pytest.raises(ModelError):
        log_loss(np.array([], bool), np.array([]))


def test_worse_by_follows_each_metric_direction() -> None:
    assert HoldoutScore("roc_auc", 0.7, 10).worse_by(HoldoutScore("roc_auc", 0.9, 10)) == (
        pytest.approx(0.2)
    )
    assert HoldoutScore("log_loss", 0.9, 10).worse_by(HoldoutScore("log_loss", 0.5, 10)) == (
        pytest.approx(0.4)
    )
    assert HoldoutScore("log_loss", 0.4, 10).worse_by(HoldoutScore("log_loss", 0.5, 10)) < 0
    with pytest.raises(ModelError):
        HoldoutScore("roc_auc", 0.7, 10).worse_by(HoldoutScore("log_loss", 0.5, 10))


def test_reservoir_is_bounded_and_keeps_everything_until_full() -> None:
    r = Reservoir(capacity=3, seed=0)
    for i in range(3):
        r.offer({"i": float(i)}, True)
    assert [x["i"] for x in r.events[0]] == [0.0, 1.0, 2.0] and r.revision == 3
    for i in range(3, 200):
        r.offer({"i": float(i)}, False)
    assert len(r) == 3 and r.seen == 200
    with pytest.raises(ModelError):
        Reservoir(capacity=0)


def test_the_same_events_with_the_same_seed_give_the_same_sample() -> None:
    def sample(seed: int) -> list[float]:
        r = Reservoir(capacity=5, seed=seed)
        for i in range(100):
            r.offer({"i": float(i)}, i % 3 == 0)
        return [x["i"] for x in r.events[0]]

    assert sample(7) == sample(7)  # a restarted merger judges with the same sample
    assert sample(7) != sample(8)


def test_revision_moves_only_when_the_sample_changes() -> None:
    r = Reservoir(capacity=1, seed=3)
    changed = 0
    for i in range(50):
        before, revision = list(r.events[0]), r.revision
        r.offer({"i": float(i)}, True)
        changed += list(r.events[0]) != before
        assert (r.revision != revision) == (list(r.events[0]) != before)
    assert 1 < changed < 50


def test_every_event_is_kept_with_probability_capacity_over_n() -> None:
    n, capacity, trials = 20, 5, 2000
    kept = np.zeros(n)
    for seed in range(trials):
        r = Reservoir(capacity, seed=seed)
        for i in range(n):
            r.offer({"i": float(i)}, True)
        for x in r.events[0]:
            kept[int(x["i"])] += 1
    # binomial(2000, 0.25): sd ~ 19.4; 5 sd either side
    assert np.all(np.abs(kept - trials * capacity / n) < 5 * 19.4), kept


def test_score_holdout_is_score_one_per_event_even_with_missing_features() -> None:
    rng = np.random.default_rng(4)
    model = SPEC.new_model()
    for _ in range(200):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    summary = SPEC.summarize(model)
    r = Reservoir(capacity=100)
    events = []
    for i in range(60):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        if i % 4 == 0:
            del x["hour"]  # missing: absent in score_one, not a zero
        events.append((x, bool(x["amount"] > 3.4)))
        r.offer(*events[-1])
    score = score_holdout(SPEC, summary, r)
    loaded = SPEC.load(summary)
    scores = np.array([SPEC.score_one(loaded, x) for x, _ in events])
    labels = np.array([y for _, y in events])
    assert (score.metric, score.n) == ("roc_auc", 60)
    assert score.value == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)
    assert score.value > 0.9


def test_one_class_is_judged_by_log_loss_and_an_empty_sample_not_at_all() -> None:
    summary = SPEC.summarize(SPEC.new_model())
    r = Reservoir(capacity=10)
    assert score_holdout(SPEC, summary, r) is None
    r.offer({"amount": 1.0}, False)
    score = score_holdout(SPEC, summary, r)
    assert (
        score.metric == "log_loss" and score.n == 1 and score.value == pytest.approx(math.log(2))
    )  # an untrained model says 0.5

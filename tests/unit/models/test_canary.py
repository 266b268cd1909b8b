"""Staged rollout's pure parts: canary membership, paired loss, the verdict (#27 item 3)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.canary import CanaryPolicy, PairedLoss, in_canary, log_loss


def test_membership_is_deterministic_and_near_the_share() -> None:
    nodes = [f"store-{i}" for i in range(5000)]
    chosen = [n for n in nodes if in_canary(n, 0.1)]
    assert chosen == [n for n in nodes if in_canary(n, 0.1)]  # the same every time
    assert 0.08 < len(chosen) / len(nodes) < 0.12


@given(st.text(min_size=1), st.floats(0, 1), st.floats(0, 1))
def test_a_canary_of_a_small_share_is_a_canary_of_every_larger_one(
    node: str, a: float, b: float
) -> None:
    small, large = sorted((a, b))
    assert not in_canary(node, small) or in_canary(node, large)


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        in_canary("n", 1.5)
    with pytest.raises(ValueError, match="--canary"):
        CanaryPolicy(0.0)


def test_paired_loss_sums_both_versions_on_the_same_events() -> None:
    loss = PairedLoss(7).add(0.9, 0.6, True).add(0.2, 0.5, False)
    assert loss.n == 2
    assert loss.new == pytest.approx(-math.log(0.9) - math.log(0.8))
    assert loss.previous == pytest.approx(-math.log(0.6) - math.log(0.5))
    assert PairedLoss.from_metrics(loss.as_metrics()) == loss
    assert PairedLoss.from_metrics({"roc_auc": 0.9}) is None


events = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans()), max_size=30)


@given(events, events)
def test_pooled_reports_equal_the_loss_of_the_concatenated_stream(a: list, b: list) -> None:
    def run(items: list) -> PairedLoss:
        loss = PairedLoss(3)
        for p_new, p_prev, label in items:
            loss = loss.add(p_new, p_prev, label)
        return loss

    pooled, whole = run(a) + run(b), run(a + b)
    assert pooled.n == whole.n
    assert pooled.new == pytest.approx(whole.new) and pooled.previous == pytest.approx(
        whole.previous
    )


def test_versions_do_not_pool_across() -> None:
    with pytest.raises(ValueError, match="do not add"):
        _ = PairedLoss(3, 1, 0.1, 0.1) + PairedLoss(4, 1, 0.1, 0.1)


def test_the_verdict_promotes_a_version_that_is_not_worse_and_rolls_back_one_that_is() -> None:
    policy = CanaryPolicy(0.1, margin=0.05, min_events=100)
    assert policy.verdict(PairedLoss(5, 99, 99.0, 10.0)) is None  # too few events to tell
    better = policy.verdict(PairedLoss(5, 100, 30.0, 40.0))
    assert better is not None and better.action == "promote"
    within = policy.verdict(PairedLoss(5, 100, 44.0, 40.0))  # 0.04 worse per event: within
    assert within is not None and within.action == "promote"
    worse = policy.verdict(PairedLoss(5, 100, 46.0, 40.0))
    assert worse is not None and worse.action == "rollback" and "worse by 0.0600" in worse.reason


def test_log_loss_is_bounded_at_certain_mistakes() -> None:
    assert math.isfinite(log_loss(0.0, True)) and math.isfinite(log_loss(1.0, False))

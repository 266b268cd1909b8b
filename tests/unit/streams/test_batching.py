"""The adaptive batch policy: a batch closes at its size or its fill deadline, whichever first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.central.batching import BatchPolicy
from streams.central.config import CentralConfig

POLICY = BatchPolicy(max_size=100, max_delay_s=0.010)


def test_a_fresh_record_waits_its_share_of_the_budget_less_its_age() -> None:
    assert POLICY.fill_s == pytest.approx(0.003)
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_000.0) == 0.003
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_002.0) == 0.001


def test_a_record_past_its_fill_deadline_waits_for_nothing() -> None:
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_003.0) == 0.0
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_010.0) == 0.0
    # late (a slow fetch, a busy core) is not a backlog: no waiting the budget on top
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_099.0) == 0.0


def test_behind_the_budget_a_batch_fills_for_up_to_the_budget() -> None:
    """A backlog (ten budgets old): full batches keep the throughput; the wait adds a tenth."""
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=10_100.5) == POLICY.max_delay_s
    assert POLICY.fill_wait_s(oldest_ts_ms=10_000, now_ms=99_000.0) == POLICY.max_delay_s


def test_a_producer_clock_ahead_of_ours_never_stretches_the_wait() -> None:
    assert POLICY.fill_wait_s(oldest_ts_ms=20_000, now_ms=10_000.0) == 0.003


def test_no_timestamp_no_wait() -> None:
    assert POLICY.fill_wait_s(oldest_ts_ms=0, now_ms=10_000.0) == 0.0


def test_the_batch_closes_at_max_size_or_the_deadline_whichever_first() -> None:
    assert POLICY.wants_more(99, 0.003)
    assert not POLICY.wants_more(100, 0.003)  # full, time left
    assert not POLICY.wants_more(1, 0.0)  # room left, no time


@given(
    budget_ms=st.floats(0.1, 1000),
    age_ms=st.floats(-1e6, 1e6),
    size=st.integers(1, 5000),
    max_size=st.integers(1, 5000),
)
def test_the_wait_is_the_fill_share_when_fresh_and_the_budget_when_behind(
    budget_ms: float, age_ms: float, size: int, max_size: int
) -> None:
    policy = BatchPolicy(max_size=max_size, max_delay_s=budget_ms / 1000)
    wait = policy.fill_wait_s(oldest_ts_ms=1e9, now_ms=1e9 + age_ms)
    age_s = ((1e9 + age_ms) - 1e9) / 1000  # the age as the policy computes it (float rounding)
    if age_s > policy.max_delay_s * policy.behind_factor:  # behind: fill up to the budget
        assert wait == policy.max_delay_s
    else:
        assert 0.0 <= wait <= policy.fill_s + 1e-6
        if age_s >= policy.fill_s:
            assert wait == 0.0
    if policy.wants_more(size, wait):
        assert size < max_size and wait > 0


def test_the_producer_lingers_a_tenth_of_the_budget_at_most_5_ms() -> None:
    assert BatchPolicy(max_delay_s=0.010).linger_ms == 1.0
    assert BatchPolicy(max_delay_s=0.002).linger_ms == pytest.approx(0.2)
    assert BatchPolicy(max_delay_s=1.0).linger_ms == 5.0


@pytest.mark.parametrize(
    "kwargs", [{"max_size": 0}, {"max_delay_s": 0.0}, {"max_delay_s": -1.0}, {"fill_share": 2}]
)
def test_nonsense_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(**kwargs)


def test_the_cli_config_builds_its_policy_from_batch_size_and_budget() -> None:
    policy = CentralConfig(batch_size=250, max_delay_s=0.02).batching
    assert (policy.max_size, policy.max_delay_s) == (250, 0.02)
    assert policy.fill_s == pytest.approx(0.006)
    with pytest.raises(ValueError, match="latency budget"):
        CentralConfig(max_delay_s=0)

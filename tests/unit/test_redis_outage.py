"""runtime.redis_outage: retry pacing for services that ride out a Redis restart."""

from __future__ import annotations

import pytest
import redis

from runtime.redis_outage import RedisBackoff, RedisUnavailable, wait_for


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_wait_for_returns_once_redis_answers() -> None:
    clock, calls = Clock(), []

    def call() -> str:
        calls.append(clock.t)
        if len(calls) < 4:
            raise redis.ConnectionError("refused")
        return "ok"

    assert wait_for(call, what="x", limit_s=60, sleep=clock.sleep, clock=clock) == "ok"
    assert calls == pytest.approx([0.0, 0.2, 0.6, 1.4])  # 0.2 s doubling


def test_wait_for_gives_up_with_one_clear_error_and_lets_other_errors_through() -> None:
    clock = Clock()

    def down() -> None:
        raise redis.TimeoutError("timed out")

    with pytest.raises(RedisUnavailable, match="did not answer for 30 s while restoring"):
        wait_for(down, what="restoring", limit_s=30, sleep=clock.sleep, clock=clock)
    assert 25 <= clock.t <= 30

    def broken() -> None:
        raise redis.ResponseError("WRONGTYPE")  # a bug, not an outage: not retried

    with pytest.raises(redis.ResponseError):
        wait_for(broken, what="x", limit_s=30, sleep=clock.sleep, clock=clock)


def test_busy_loading_counts_as_away() -> None:
    assert issubclass(redis.BusyLoadingError, redis.ConnectionError)


def test_outage_paces_retries_and_starts_over_when_back() -> None:
    clock = Clock()
    outage = RedisBackoff("checkpoint", first_s=0.5, cap_s=2.0, clock=clock)
    assert outage.ready()
    tries = []
    for _ in range(200):  # 10 s of a loop stepping every 50 ms while Redis is away
        if outage.ready():
            tries.append(clock.t)
            outage.failed(redis.ConnectionError("refused"))
        clock.t += 0.05
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0] + [2.0] * (len(gaps) - 3), abs=0.06)  # capped
    assert outage.since == 0.0 and outage.failures == len(tries)
    outage.succeeded()
    assert outage.ready() and outage.since is None and outage.failures == 0
    outage.failed(redis.ConnectionError("again"))
    assert not outage.ready()
    clock.t += 0.5
    assert outage.ready()  # a new outage starts from the first pause again

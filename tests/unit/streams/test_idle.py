"""IdleClock: a service stops only after being caught up, with nothing new, for the whole limit."""

from __future__ import annotations

import pytest

from streams.idle import MAX_PAUSE_S, IdleClock


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(clock: Clock, idle: IdleClock, seconds: float, caught_up: bool, step: float = 0.5) -> bool:
    """Advance in steps, asking each time; True as soon as the clock says stop."""
    end = clock.t + seconds
    while clock.t < end:
        clock.t += step
        if idle.due(lambda: caught_up):
            return True
    return False


def test_stops_after_the_limit_caught_up() -> None:
    clock = Clock()
    idle = IdleClock(6.0, clock=clock)
    assert not run(clock, idle, 6.0, caught_up=True)  # the first look starts the clock at +1 s
    assert run(clock, idle, 2.0, caught_up=True)


def test_never_without_a_limit() -> None:
    clock = Clock()
    assert not run(clock, IdleClock(None, clock=clock), 100.0, caught_up=True)


def test_an_outage_is_not_idle_and_the_time_after_it_counts_from_the_first_good_look() -> None:
    clock = Clock()
    idle = IdleClock(6.0, clock=clock)
    assert not run(clock, idle, 30.0, caught_up=False)  # broker away: ends unknown
    assert not run(clock, idle, 6.0, caught_up=True)  # back, producers reconnecting
    # the first good look comes within MAX_PAUSE_S of the return, the limit runs from it
    assert run(clock, idle, MAX_PAUSE_S + 1.0, caught_up=True)


def test_failed_looks_back_off_so_an_outage_is_not_hammered() -> None:
    clock = Clock()
    idle = IdleClock(6.0, look_every_s=0.5, clock=clock)
    looks = []
    for _ in range(600):  # 60 s of a loop stepping every 100 ms, the broker away
        clock.t += 0.1
        idle.due(lambda: looks.append(clock.t) and False)
    gaps = [b - a for a, b in zip(looks, looks[1:], strict=False)]
    expected = [1.0, 2.0, 4.0] + [MAX_PAUSE_S] * (len(gaps) - 3)
    assert gaps == pytest.approx(expected, abs=0.11)  # steps of 100 ms


def test_a_long_block_between_two_looks_does_not_count() -> None:
    """A loop blocked 13 s (a checkpoint waiting for acks): the clock starts at the next look."""
    clock = Clock()
    idle = IdleClock(6.0, clock=clock)
    assert not run(clock, idle, 2.0, caught_up=False)
    clock.t += 13.0
    assert not idle.due(lambda: True)
    assert not run(clock, idle, 5.5, caught_up=True)
    assert run(clock, idle, 1.0, caught_up=True)


def test_a_record_starts_over_and_busy_services_are_not_asked() -> None:
    clock = Clock()
    idle = IdleClock(6.0, clock=clock)
    assert not run(clock, idle, 5.0, caught_up=True)
    idle.activity()
    asked = []
    clock.t += 0.5
    assert not idle.due(lambda: asked.append(1) or True)
    assert asked == []  # within look_every_s of a record: no broker round trip
    assert not run(clock, idle, 6.0, caught_up=True)
    assert run(clock, idle, 2.0, caught_up=True)


def test_looks_at_most_once_per_period() -> None:
    clock = Clock()
    idle = IdleClock(60.0, look_every_s=1.0, clock=clock)
    asked = []
    for _ in range(100):
        clock.t += 0.1
        idle.due(lambda: asked.append(1) or True)
    assert 8 <= len(asked) <= 10

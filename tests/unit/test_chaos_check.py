"""``bench/chaos/check.py``'s exactly-once rule on scores, without a broker.

The rule the chaos checker applies to the centre and to each edge: every
event scored, nothing scored that was not sent, a repeat only for a target
that took a kill -9 (counted, with those carrying another score). Each
clause is shown to fire, so a checker that stopped looking would fail here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from chaos.check import _once, repeats  # noqa: E402

WANT = ["a", "b", "c"]


def test_each_once_is_clean() -> None:
    assert _once("centre", [("a", 0.1), ("b", 0.2), ("c", 0.3)], WANT, may_repeat=False) == []


def test_a_missing_event_is_reported() -> None:
    [v] = _once("centre", [("a", 0.1), ("b", 0.2)], WANT, may_repeat=True)
    assert "1 events never scored" in v and "'c'" in v


def test_a_score_of_an_event_never_sent_is_reported() -> None:
    got = [("a", 0.1), ("b", 0.2), ("c", 0.3), ("z", 0.4)]
    [v] = _once("edge e1", got, WANT, may_repeat=False)
    assert "never got" in v and "'z'" in v


def test_a_repeat_without_a_kill_is_reported() -> None:
    got = [("a", 0.1), ("a", 0.1), ("b", 0.2), ("c", 0.3)]
    [v] = _once("centre", got, WANT, may_repeat=False)
    assert "more than once without a kill -9" in v


def test_a_repeat_after_a_kill_passes_and_is_counted() -> None:
    got = [("a", 0.1), ("a", 0.7), ("b", 0.2), ("b", 0.2), ("c", 0.3)]
    assert _once("centre", got, WANT, may_repeat=True) == []
    assert repeats(got) == (2, 1)  # two scores beyond the first, one of them another score

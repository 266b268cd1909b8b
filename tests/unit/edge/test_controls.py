"""An edge's admission of globals under operator pins and quarantine (#27 item 4)."""

from __future__ import annotations

from types import SimpleNamespace

from edge_agents.controls import Admission, refusal


def g(version: int, restored_from: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(version=version, restored_from=restored_from)


def test_a_pinned_node_adopts_only_its_version() -> None:
    a = Admission("n")
    assert a.admit(g(2), 1, pin=3, quarantined=set()) == (None, "pinned to version 3")
    three = g(3)
    assert a.admit(three, 1, pin=3, quarantined=set()) == (three, None)
    assert a.admit(g(4), 3, pin=3, quarantined=set())[0] is None


def test_the_newest_global_skipped_for_a_pin_is_adopted_when_the_pin_goes() -> None:
    a, four, five = Admission("n"), g(4), g(5)
    a.admit(four, 3, pin=3, quarantined=set())
    a.admit(five, 3, pin=3, quarantined=set())
    assert a.admit(None, 3, pin=3, quarantined=set()) == (None, "pinned to version 3")
    assert a.admit(None, 3, pin=None, quarantined=set()) == (five, None)
    assert a.admit(None, 5, pin=None, quarantined=set()) == (None, None)  # taken once


def test_a_quarantined_global_is_refused_and_not_kept() -> None:
    a = Admission("n")
    why = "quarantined: version 4"
    assert a.admit(g(4), 3, pin=None, quarantined={4}) == (None, why)
    assert a.admit(None, 3, pin=None, quarantined=set()) == (None, None)
    restores = g(6, restored_from=2)
    assert a.admit(restores, 3, pin=None, quarantined={2})[0] is None
    assert refusal(restores, None, {2}) is not None  # type: ignore[arg-type]


def test_an_older_or_held_global_is_not_offered_again() -> None:
    a = Admission("n")
    assert a.admit(g(3), 3, pin=None, quarantined=set()) == (None, None)
    assert a.admit(g(2), 3, pin=2, quarantined=set()) == (None, None)  # a pin does not go back

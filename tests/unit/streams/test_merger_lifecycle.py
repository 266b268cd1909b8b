"""The merger's pure lifecycle decisions: rollback requests and quarantine (#27 item 4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.merger.lifecycle import Refusal, Restore, Rollback, Stored, decide, origin

HISTORY = [Stored(5), Stored(4, held_back=True), Stored(3), Stored(2), Stored(1)]


def test_a_rollback_republishes_the_stored_version_with_the_reason() -> None:
    d = decide(5, HISTORY, set(), Rollback(2, "incident 7"))
    assert d == Restore(2, 2, "rollback", "rollback to 2 by an operator: incident 7")


def test_a_rollback_to_a_quarantined_held_back_or_unknown_version_is_refused() -> None:
    refused = Refusal(2, "quarantined", "version 2 is quarantined")
    assert decide(5, HISTORY, {2}, Rollback(2)) == refused
    held = decide(5, HISTORY, set(), Rollback(4))
    assert isinstance(held, Refusal) and held.reason_code == "held-back"
    unknown = decide(5, HISTORY, set(), Rollback(9))
    assert isinstance(unknown, Refusal) and unknown.reason_code == "unknown-version"
    assert "kept: 5, 4, 3, 2, 1" in unknown.reason


def test_a_rollback_to_a_restore_of_a_quarantined_model_is_refused() -> None:
    history = [Stored(6, restored_from=2), *HISTORY]
    d = decide(5, history, {2}, Rollback(6))
    assert isinstance(d, Refusal) and d.reason_code == "quarantined"


def test_a_rollback_to_the_model_already_current_does_nothing() -> None:
    history = [Stored(6, restored_from=2), *HISTORY]
    assert decide(6, history, set(), Rollback(2)) is None
    assert decide(6, history, set(), Rollback(6)) is None
    assert decide(5, HISTORY, set(), Rollback(5)) is None


def test_restoring_a_restore_names_the_original_model() -> None:
    history = [Stored(7), Stored(6, restored_from=2), *HISTORY]
    assert decide(7, history, set(), Rollback(6)) == Restore(
        6, 2, "rollback", "rollback to 6 by an operator"
    )


def test_quarantining_the_current_version_rolls_back_to_the_newest_good_one() -> None:
    d = decide(5, HISTORY, {5})
    assert isinstance(d, Restore) and (d.source, d.reason_code) == (3, "quarantine")  # 4: held
    assert decide(5, HISTORY, {5, 3}).source == 2  # type: ignore[union-attr]


def test_a_current_version_serving_a_quarantined_model_is_rolled_back_too() -> None:
    history = [Stored(6, restored_from=2), *HISTORY]
    d = decide(6, history, {2})
    assert isinstance(d, Restore) and d.source == 5


def test_nothing_happens_when_the_current_version_is_clean() -> None:
    assert decide(5, HISTORY, {1, 2, 3}) is None
    assert decide(0, [], {1}) is None  # nothing published yet


def test_when_every_published_version_is_quarantined_the_merger_says_so() -> None:
    d = decide(5, HISTORY, {1, 2, 3, 5})
    assert isinstance(d, Refusal) and d.reason_code == "nothing-to-restore"


versions = st.lists(
    st.builds(
        Stored,
        version=st.integers(1, 30),
        held_back=st.booleans(),
        restored_from=st.none() | st.integers(1, 30),
    ),
    max_size=12,
    unique_by=lambda s: s.version,
)


@given(
    versions,
    st.sets(st.integers(1, 30)),
    st.none() | st.builds(Rollback, to=st.integers(1, 30)),
    st.integers(0, 30),
)
def test_no_decision_ever_serves_a_quarantined_or_held_back_model(
    history: list[Stored], quarantined: set[int], request: Rollback | None, current: int
) -> None:
    d = decide(current, history, quarantined, request)
    if isinstance(d, Restore):
        source = {v.version: v for v in history}[d.source]
        assert not source.held_back
        assert d.source not in quarantined and d.restored_from not in quarantined
        assert d.restored_from == origin(source)

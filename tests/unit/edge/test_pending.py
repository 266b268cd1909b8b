"""Unacknowledged scores (#25.2, chaos seed 1861302288): what a save must keep, and keeps.

A score leaves :class:`PendingScores` only on its delivery report; a save stores
what is left with the read position in one SQLite transaction, so a kill -9
after it loses no score whose event the position covers.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agents.learner import EdgeLearner, EdgePolicy
from edge_agents.outbox import Outbox
from edge_agents.pending import PendingScores
from schemas import Codec

# an operation: produce a new score (None) or a delivery report for the i-th score produced
ops = st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=60)), max_size=120)


@given(ops)
def test_a_snapshot_is_every_score_without_a_delivery_report_in_produce_order(steps) -> None:
    pending, tokens, reported = PendingScores(), [], set()
    for step in steps:
        if step is None:
            i = len(tokens)
            tokens.append(pending.add(f"e{i}".encode(), f"score-{i}".encode()))
        elif step < len(tokens):
            pending.settle(tokens[step])  # a second report for one score changes nothing
            reported.add(step)
    want = [(f"e{i}".encode(), f"score-{i}".encode()) for i in range(len(tokens))
            if i not in reported]  # fmt: skip
    assert pending.snapshot() == want
    assert len(pending) == len(want)


def box(tmp_path) -> Outbox:
    return Outbox(tmp_path / "o.sqlite3", node_id="n1", model_name="fraud-linear", codec=Codec())


def test_a_save_keeps_the_unacknowledged_scores_with_the_position(tmp_path) -> None:
    learner = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    for i in range(20):
        learner.observe(f"e{i}", {"amount": float(i)}, i % 3 == 0)
    outbox = box(tmp_path)
    outbox.commit(learner.state(), 20, None, [(b"e18", b"s18"), (b"e19", b"s19")])
    outbox.close()  # a kill -9 after the save: only what SQLite holds is left
    reopened = box(tmp_path)
    assert reopened.load().position == 20
    assert reopened.unacked_scores() == [(b"e18", b"s18"), (b"e19", b"s19")]
    reopened.commit(learner.state(), 21, None, None)  # None: a save that says nothing keeps them
    assert reopened.unacked_scores() == [(b"e18", b"s18"), (b"e19", b"s19")]
    reopened.commit(learner.state(), 22, None, [(b"e19", b"s19")])  # e18 acknowledged since
    assert reopened.unacked_scores() == [(b"e19", b"s19")]
    reopened.save_unacked([])  # a clean stop with everything delivered
    assert reopened.unacked_scores() == []
    reopened.close()

"""The edge's secure-round bookkeeping (edge_agents/secagg.py) over a real SQLite outbox:
a row is marked sent only when a round's ``done`` lists the node, and a restart after the
masked input settles that round by its outcome -- never a second offer of a merged row,
never a lost one. (The steps themselves run against the real broker in
tests/integration/test_secure_agg.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agents.learner import EdgeLearner, EdgePolicy
from edge_agents.outbox import Outbox
from edge_agents.secagg import MARKER, SecureSender
from schemas import Codec


def sender(tmp_path: Path) -> SecureSender:
    outbox = Outbox(tmp_path / "outbox.sqlite3", node_id="n1", model_name="fraud-linear",
                    codec=Codec())  # fmt: skip
    state = EdgeLearner("fraud-linear", "n1", EdgePolicy()).state()
    outbox.commit(state, 0, b"row-1")  # the payload is not read by the bookkeeping
    return SecureSender(None, outbox, node_id="n1", model_name="fraud-linear",  # type: ignore[arg-type]
                        codec=Codec(), topics={}, consumer=None, state_dir=tmp_path)  # fmt: skip


def rec(rid: str, phase: str, nodes=(), version=0) -> dict:
    return {"round_id": rid, "phase": phase, "nodes": list(nodes), "version": version,
            "reason": "why" if phase == "abandoned" else None}  # fmt: skip


def unsent(s: SecureSender) -> int:
    return s.outbox.counts()["unsent"]


def restarted_after_masked_input(tmp_path: Path, rid: str = "R1") -> SecureSender:
    seq = sender(tmp_path).outbox.unsent(1)[0].sequence
    (tmp_path / MARKER).write_text(json.dumps({"round_id": rid, "sequence": seq}))
    return sender_again(tmp_path)


def sender_again(tmp_path: Path) -> SecureSender:
    outbox = Outbox(tmp_path / "outbox.sqlite3", node_id="n1", model_name="fraud-linear",
                    codec=Codec())  # fmt: skip
    return SecureSender(None, outbox, node_id="n1", model_name="fraud-linear",  # type: ignore[arg-type]
                        codec=Codec(), topics={}, consumer=None, state_dir=tmp_path)  # fmt: skip


def test_a_restart_after_the_masked_input_counts_the_row_sent_when_the_round_held_it(tmp_path):
    s = restarted_after_masked_input(tmp_path)
    for r in (rec("R0", "done", ["n1"], 1), rec("R1", "keys"), rec("R1", "done", ["n1"], 2)):
        s._settle(r)  # the rounds topic read from the beginning
    assert unsent(s) == 0 and s.delivered == 1
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "outcome",
    [[rec("R1", "abandoned")], [rec("R1", "done", ["n2", "n3"], 2)], [rec("R2", "keys")]],
    ids=["abandoned", "done-without-it", "merger-restarted"],
)
def test_a_restart_whose_round_did_not_hold_the_row_offers_it_again(tmp_path, outcome):
    s = restarted_after_masked_input(tmp_path)
    for r in outcome:
        s._settle(r)
    assert unsent(s) == 1 and s.delivered == 0
    assert s.marker is None and not (tmp_path / MARKER).exists()


def test_the_outcome_of_an_earlier_round_does_not_settle_the_row(tmp_path):
    s = restarted_after_masked_input(tmp_path, "R5")
    s._settle(rec("R4", "done", ["n1"], 3))  # n1 with another row, before
    assert unsent(s) == 1 and s.marker is not None

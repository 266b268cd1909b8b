"""The SQLite outbox: state and summary saved together, sent only on confirmation."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from edge_agents.config import EdgeConfig, parse_cadence
from edge_agents.fleet import plan
from edge_agents.learner import EdgeLearner, EdgePolicy
from edge_agents.outbox import Outbox
from schemas import Codec

CODEC = Codec()


def learner_with(n: int) -> EdgeLearner:
    learner = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    rng = np.random.default_rng(0)
    for i in range(n):
        x = {"amount": float(rng.normal(3, 1))}
        learner.observe(f"e{i}", x, bool(x["amount"] > 3.5) if i % 5 else None)
    return learner


def box(tmp_path, node: str = "n1") -> Outbox:
    return Outbox(tmp_path / "o.sqlite3", node_id=node, model_name="fraud-linear", codec=CODEC)


def test_a_summary_and_its_state_survive_a_reopen_and_rows_wait_for_confirmation(tmp_path):
    learner = learner_with(50)
    increment = learner.cut()
    outbox = box(tmp_path)
    outbox.commit(learner.state(), 50, b"summary-1")
    outbox.close()
    reopened = box(tmp_path)
    saved = reopened.load()
    assert saved.position == 50 and saved.state.sequence == increment.sequence == 1
    assert saved.state.pending.keys() == learner.pending.keys()
    assert [(r.sequence, r.payload) for r in reopened.unsent()] == [(1, b"summary-1")]
    restored = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    restored.restore(saved.state)
    x = {"amount": 4.2}
    assert restored.score(x, 0, False) == learner.score(x, 0, False)
    reopened.mark_sent(1)
    assert reopened.unsent() == [] and reopened.counts() == {
        "summaries": 1,
        "sent": 1,
        "set_aside": 0,
        "unsent": 0,
    }


def test_a_sequence_number_is_never_stored_twice(tmp_path):
    learner = learner_with(10)
    learner.cut()
    outbox = box(tmp_path)
    outbox.commit(learner.state(), 10, b"a")
    with pytest.raises(sqlite3.IntegrityError):
        outbox.commit(learner.state(), 11, b"b")
    saved = outbox.load()
    assert saved.position == 10  # the failed transaction left the state as it was
    assert [r.payload for r in outbox.unsent()] == [b"a"]


def test_another_nodes_outbox_is_refused(tmp_path):
    box(tmp_path).commit(learner_with(3).state(), 3)
    with pytest.raises(ValueError, match="another --state-dir"):
        box(tmp_path, node="n2").load()


def test_forward_buffer_drains_in_order(tmp_path):
    outbox = box(tmp_path)
    outbox.buffer_forward([("t", b"k1", b"v1"), ("t", None, b"v2"), ("t", b"k3", b"v3")])
    rows = outbox.forward_batch(2)
    assert [(k, v) for _, _, k, v in rows] == [(b"k1", b"v1"), (None, b"v2")]
    outbox.drop_forwarded(rows[-1][0])
    assert [v for *_, v in outbox.forward_batch()] == [b"v3"]


def test_cadence_and_config_errors_are_clear():
    assert parse_cadence("10,2s") == (10, 2.0)
    for bad in ("", "x", "0", "-3s"):
        with pytest.raises(ValueError):
            parse_cadence(bad)
    with pytest.raises(ValueError, match="--node"):
        EdgeConfig(node_id="bad id", source="f.avro")
    with pytest.raises(ValueError, match="--source"):
        EdgeConfig(node_id="n1")


def test_fleet_plan_deals_sites_round_robin_and_refuses_too_many_nodes():
    assert plan(["s1", "s2", "s3", "s4"], 3) == [
        ("edge-0", ["s1", "s4"]), ("edge-1", ["s2"]), ("edge-2", ["s3"])
    ]  # fmt: skip
    with pytest.raises(ValueError, match="fewer than"):
        plan(["s1"], 2)


def test_the_personal_model_and_the_mixer_weights_survive_a_reopen(tmp_path):
    learner = learner_with(60)
    learner.cut()
    other = learner_with(90)
    learner.adopt(other.state().replica, 1, 0)  # the replica moves, the personal model does not
    for i in range(30):
        x = {"amount": 2.0 + i / 10}
        learner.score(x, 0, True, event_id=f"m{i}")
        learner.observe(f"m{i}", x, i % 3 == 0)
    outbox = box(tmp_path)
    outbox.commit(learner.state(), 90)
    outbox.close()
    saved = box(tmp_path).load()
    restored = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    restored.restore(saved.state)
    assert restored.mixer.state() == learner.mixer.state() and learner.mixer.updates == 30
    x = {"amount": 4.2}
    assert restored.score(x, 0, True) == learner.score(x, 0, True)
    assert restored.score(x, 0, False) == learner.score(x, 0, False)  # the personal model alone


def test_a_state_saved_before_personal_models_restores_with_the_replica_as_personal(tmp_path):
    learner = learner_with(40)
    outbox = box(tmp_path)
    outbox.commit(learner.state(), 40)
    outbox._db.execute("DROP TABLE personal")  # the layout of older agents
    outbox.close()
    saved = box(tmp_path).load()
    assert saved.state.personal is None and saved.state.mixer is None
    restored = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    restored.restore(saved.state)
    x = {"amount": 4.2}
    assert restored.score(x, 0, False) == learner.score(x, 0, False)

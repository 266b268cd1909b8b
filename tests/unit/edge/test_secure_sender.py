"""The edge's secure-round bookkeeping (edge_agents/secagg.py) over a real SQLite outbox:
a row is marked sent only when a round's ``done`` lists the node, and a restart after the
masked input settles that round by its outcome -- never a second offer of a merged row,
never a lost one. (The steps themselves run against the real broker in
tests/integration/test_secure_agg.py.)"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agents.learner import EdgeLearner, EdgePolicy
from edge_agents.outbox import Outbox
from edge_agents.secagg import MARKER, SecureSender, _Mine
from models.secagg.node import NodeKeys
from models.serialization import weight_summary_record
from models.specs import get_spec
from schemas import Codec
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    parse_trust_file,
    trust_entry,
)


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


# -- the merger's phase records are signed: the node acts on nothing else ------------------------
MERGER_KEY, NODE_KEY = generate_private_key(), generate_private_key()
TRUST = parse_trust_file(json.dumps({
    "merger-k": trust_entry(MERGER_KEY, ["global:*"], "2999-01-01"),
    "n1-k": trust_entry(NODE_KEY, ["n1"], "2999-01-01"),
}))  # fmt: skip
MERGER = KeySigner("merger-k", MERGER_KEY)


def signed(rid: str, phase: str, nodes=(), version=0, signer: KeySigner | None = MERGER) -> dict:
    record = dict(rec(rid, phase, nodes, version), model_name="fraud-linear", created_at=1,
                  key_id=None, signature=None)  # fmt: skip
    return record if signer is None else signer.sign(record, "SecAggRound")


def checking_sender(tmp_path: Path, bad: list) -> SecureSender:
    s = sender_again(tmp_path)
    s.verifier = KeyVerifier(TRUST, contract="SecAggRound")
    s.on_bad = lambda code, why, where, raw: bad.append((code, where["round_id"]))
    return s


def test_forged_unsigned_and_node_signed_round_records_are_refused_counted_and_dead_lettered(
    tmp_path,
):
    seq = sender(tmp_path).outbox.unsent(1)[0].sequence
    (tmp_path / MARKER).write_text(json.dumps({"round_id": "R1", "sequence": seq}))
    bad: list = []
    s = checking_sender(tmp_path, bad)
    stranger = KeySigner("merger-k", generate_private_key())  # the merger's key id, not its key
    for forged in (
        signed("R1", "done", ["n1"], 7, stranger),
        signed("R1", "done", ["n1"], 7, None),
        signed("R1", "done", ["n1"], 7, KeySigner("n1-k", NODE_KEY)),  # an edge's key
        dict(signed("R1", "done", ["n2"], 7), nodes=["n1"]),  # altered after signing
    ):
        assert s.receive(forged, b"raw") is False
    assert unsent(s) == 1 and s.marker is not None and s.delivered == 0  # nothing settled
    assert s.refused == {"bad-signature": 2, "unsigned": 1, "key-not-for-node": 1}
    assert sorted(bad) == [("bad-signature", "R1"), ("bad-signature", "R1"),
                           ("key-not-for-node", "R1"), ("unsigned", "R1")]  # fmt: skip
    assert s.receive(signed("R1", "done", ["n1"], 7)) is True  # the merger's own
    assert unsent(s) == 0 and s.delivered == 1 and s.rounds["delivered"] == 1


def test_a_merger_that_says_two_things_at_one_phase_of_a_round_is_refused(tmp_path):
    bad: list = []
    sender(tmp_path)  # one row cut
    s = checking_sender(tmp_path, bad)
    s.mine = _Mine("R1", 1, None, NodeKeys.generate(), step="input")  # type: ignore[arg-type]
    first = signed("R1", "confirm", ["n1", "n2", "n3"])
    assert s.receive(first) and s.receive(first)  # delivered twice: the same word
    assert s.receive(signed("R1", "confirm", ["n1", "n2"])) is False  # n3 dropped, now?
    assert s.refused == {"secagg-equivocation": 1} and bad == [("secagg-equivocation", "R1")]
    assert s.mine is None and s.rounds == {"left": 1} and unsent(s) == 1  # offered again


# -- a merged row whose marker was lost: the round's records settle it ---------------------------
def shares(rid: str, roster: dict[str, int]) -> dict:
    peers = [{"node_id": v, "sequence": q, "cipher_public": b"", "mask_public": b""}
             for v, q in roster.items()]  # fmt: skip
    return dict(rec(rid, "shares"), roster=peers)


def test_a_row_merged_before_is_marked_sent_from_the_roster_and_done_without_a_marker(tmp_path):
    s = sender(tmp_path)  # no marker, nothing in memory: as after a lost marker and a restart
    seq = s.outbox.unsent(1)[0].sequence
    for r in (rec("R1", "keys"), shares("R1", {"n1": seq, "n2": 4}), rec("R1", "input"),
              rec("R1", "done", ["n1", "n2"], 1)):  # fmt: skip
        s._settle(r)
    assert unsent(s) == 0 and s.delivered == 1  # never offered again, so never refused
    again = sender_again(tmp_path)  # and replaying the topic after that changes nothing
    for r in (rec("R1", "keys"), shares("R1", {"n1": seq}), rec("R1", "done", ["n1"], 1)):
        again._settle(r)
    assert again.delivered == 0


@pytest.mark.parametrize(
    "outcome",
    [rec("R1", "done", ["n2"], 1), rec("R1", "abandoned"), rec("R2", "keys")],
    ids=["done-without-it", "abandoned", "next-round-without-outcome"],
)
def test_a_roster_alone_never_marks_a_row_sent(tmp_path, outcome):
    s = sender(tmp_path)
    seq = s.outbox.unsent(1)[0].sequence
    for r in (shares("R1", {"n1": seq, "n2": 4}), outcome, rec("R2", "done", ["n1"], 2)):
        s._settle(r)  # R2's done cannot settle R1's roster entry either
    assert unsent(s) == 1 and s.delivered == 0


def test_the_round_a_node_is_in_counts_its_row_once(tmp_path):
    s = sender(tmp_path)
    seq = s.outbox.unsent(1)[0].sequence
    s.mine = _Mine("R1", seq, None, NodeKeys.generate())  # type: ignore[arg-type]
    for r in (shares("R1", {"n1": seq}), rec("R1", "done", ["n1"], 1)):
        s._settle(r)
    assert unsent(s) == 0 and s.delivered == 1 and s.rounds == {"delivered": 1}


# -- a row out of the fixed-point range never blocks the queue ----------------------------------
def gauss_row(outbox: Outbox, centre: float, sequence: int) -> None:
    """An iot-gauss increment of 10 readings near ``centre`` (all sensors), as the agent stores
    it: ``n * (cov + mean^2)`` is about ``10 * centre^2``."""
    spec = get_spec("iot-gauss")
    model = spec.new_model()
    rng = np.random.default_rng(sequence)
    spec.learn_many(model, centre + rng.normal(size=(10, 2)), features=["temp", "vibration"])
    summary = spec.summarize(model).with_provenance(node_id="n1", sequence=sequence,
                                                    base_version=0)  # fmt: skip
    record = weight_summary_record(summary, tier="edge", created_at_ms=1)
    state = EdgeLearner("iot-gauss", "n1", EdgePolicy()).state()
    outbox.commit(replace(state, sequence=sequence), 0, Codec().encode("WeightSummary", record))


def test_a_row_no_secure_round_can_take_is_set_aside_dead_lettered_and_the_next_row_goes(
    tmp_path,
):
    """10 readings near 1e7: ``n * mean^2`` = 1e15 > 2^47, which fixed point refuses (never
    wraps) at every offer. Offered anyway it would leave every round after sharing, forever
    unsent, with every later row queued behind it."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", node_id="n1", model_name="iot-gauss",
                    codec=Codec())  # fmt: skip
    gauss_row(outbox, 1e7, 1)
    gauss_row(outbox, 20.0, 2)
    bad: list = []
    s = SecureSender(None, outbox, node_id="n1", model_name="iot-gauss", codec=Codec(),  # type: ignore[arg-type]
                     topics={}, consumer=None, state_dir=tmp_path)  # type: ignore[arg-type]  # fmt: skip
    s.on_bad = lambda code, why, where, raw: bad.append((code, where, raw))
    s._join("R1")
    assert s.mine is None and "R1" not in s.tried  # no keys advertised: no round disturbed
    [(code, where, raw)] = bad
    assert code == "secagg-out-of-range" and where["sequence"] == 1
    assert raw == outbox.payloads()[0][1]  # the increment itself, kept for a replay
    assert s.set_aside == {"secagg-out-of-range": 1}
    assert [r.sequence for r in outbox.unsent()] == [2]  # the next row is offered next
    assert outbox.counts() == {"summaries": 2, "sent": 0, "set_aside": 1, "unsent": 1}
    assert not outbox.set_aside(1, "again")  # set aside once, for good


def test_an_outbox_written_before_rows_could_be_set_aside_opens_and_keeps_its_rows(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (sequence INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, "
               "payload BLOB NOT NULL, sent_ms INTEGER)")  # fmt: skip
    db.execute("INSERT INTO outbox VALUES (1, 0, x'00', NULL), (2, 0, x'01', 5)")
    db.commit()
    db.close()
    outbox = Outbox(path, node_id="n1", model_name="iot-gauss", codec=Codec())
    assert [r.sequence for r in outbox.unsent()] == [1]
    assert outbox.counts() == {"summaries": 2, "sent": 1, "set_aside": 0, "unsent": 1}


def test_a_routed_record_late_behind_a_later_phase_does_not_take_its_place(tmp_path):
    """The routed record (secagg-routed) and the round-wide ones (secagg-rounds) are two
    topics: the newest phase of a round stays the one the node acts on."""
    s = sender_again(tmp_path)
    s.receive(rec("R1", "keys"))
    s.receive(rec("R1", "confirm", ["n1"]))
    s.receive(dict(rec("R1", "input", ["n1"]), routed={"n1": {}}))
    assert s.latest["phase"] == "confirm"
    s.receive(rec("R2", "keys"))  # a new round's first record does
    assert s.latest["round_id"] == "R2"

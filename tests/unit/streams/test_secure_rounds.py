"""The merger's secure rounds (streams/merger/secure.py) driven by real nodes' steps.

No Kafka: the step records are built and signed as the edge agents build them
(runtime/secagg.py), encoded and decoded with the real codec, and verified
with the real Ed25519 trust file; the sum is checked against clear FedAvg of
the very increments the test made.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from models.merge import merge
from models.secagg.aggregate import global_from_total, node_vector
from models.secagg.messages import Advertise, RoundSpec
from models.secagg.node import Node, NodeKeys
from models.specs import get_spec
from runtime.secagg import (
    StepRefused,
    confirm_record,
    keys_record,
    masked_record,
    require_confirmed,
    routed_to,
    shares_record,
    unmask_record,
)
from schemas import Codec
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    parse_trust_file,
    trust_entry,
)
from schemas.signing import SignatureError
from streams.merger.secure import SecureConfig, SecureRounds

SPEC = get_spec("fraud-linear")
CODEC = Codec()
STEPS = ("SecAggKeys", "SecAggShares", "SecAggMasked", "SecAggConfirm", "SecAggUnmask")


def increment(node: str, seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(n):
        x = {f"f{j}": float(rng.normal(j, 1 + j)) for j in range(3 + seed % 2)}
        SPEC.learn_one(model, x, bool(rng.random() < 0.3))
    return replace(SPEC.summarize(model), node_id=node, sequence=seed + 1)


class Fleet:
    """Nodes that answer each SecAggRound record like edge agents do."""

    def __init__(self, names, *, signed=True):
        self.keys = {v: generate_private_key() for v in names}
        trust = {f"{v}-k": trust_entry(k, [v], "2999-01-01") for v, k in self.keys.items()}
        self.trust = parse_trust_file(json.dumps(trust))
        self.signers = {v: KeySigner(f"{v}-k", k) for v, k in self.keys.items()}
        self.verifiers = {c: KeyVerifier(self.trust, contract=c) for c in STEPS}
        self.incs = {v: increment(v, i) for i, v in enumerate(names)}
        self.secrets = {v: NodeKeys.generate() for v in names}
        self.nodes: dict[str, Node] = {}
        self.features: tuple[str, ...] = ()
        self.signed = signed

    def wire(self, contract, node, record):
        record = dict(record, key_id=None, signature=None)
        if self.signed:
            record = self.signers[node].sign(record, contract)
        data = CODEC.encode(contract, record)
        decoded = CODEC.decode(data, expected=contract)
        return decoded, self.verifiers[contract].check(decoded), len(data)

    def answer(self, rounds, record, who, now):
        """Every node in ``who`` takes the step ``record`` asks for."""
        rid, phase = record["round_id"], record["phase"]
        for v in who:
            if phase == "keys":
                s, k = self.incs[v], self.secrets[v]
                ad = Advertise(v, k.cipher.public, k.mask.public)
                rec = keys_record(rid, ad, model_name=s.model_name, sequence=s.sequence,
                                  base_version=0, features=s.features, now_ms=now)  # fmt: skip
                rounds.take("SecAggKeys", *self.wire("SecAggKeys", v, rec), now)
            elif phase == "shares":
                roster = {p["node_id"]: p for p in record["roster"]}
                spec = RoundSpec.create(rid, list(roster), record["length"],
                                        max_dropout=record["max_dropout"])  # fmt: skip
                self.nodes[v] = Node(v, spec, keys=self.secrets[v])
                self.features = tuple(record["features"])
                ads = {u: Advertise(u, p["cipher_public"], p["mask_public"])
                       for u, p in roster.items()}  # fmt: skip
                rec = shares_record(rid, self.nodes[v].share(ads), now)
                rounds.take("SecAggShares", *self.wire("SecAggShares", v, rec), now)
            elif phase == "input":
                vec = node_vector(self.incs[v], self.features)
                masked = self.nodes[v].masked_input(vec, record["routed"].get(v, {}))
                rec = masked_record(rid, masked, now)
                rounds.take("SecAggMasked", *self.wire("SecAggMasked", v, rec), now)
            elif phase == "confirm":
                self.nodes[v].confirm(record["nodes"])
                rec = confirm_record(rid, v, record["nodes"], now)
                rounds.take("SecAggConfirm", *self.wire("SecAggConfirm", v, rec), now)
            elif phase == "unmask":  # as the edge does: the confirmations first
                require_confirmed(record, self.nodes[v].spec, self.verifiers["SecAggConfirm"])
                rec = unmask_record(rid, self.nodes[v].unmask(record["nodes"]), now)
                rounds.take("SecAggUnmask", *self.wire("SecAggUnmask", v, rec), now)


def answer_phase(fleet, rounds, who, now):
    """``who`` take the step of the newest phase; at ``input`` each answers the record
    addressed to it (one per node, holding only its ciphertexts)."""
    record = rounds.out[-1]
    if record["phase"] != "input":
        fleet.answer(rounds, record, who, now)
        return
    own = {routed_to(r): r for r in rounds.out
           if r["round_id"] == record["round_id"] and r["phase"] == "input"}  # fmt: skip
    for v in who:
        fleet.answer(rounds, own[v], [v], now)


def run(fleet, rounds, drop_before=None, now=1_000):
    """Drive one round; ``drop_before``: phase -> nodes that vanish from it on."""
    drop_before = drop_before or {}
    gone: set[str] = set()
    rounds.open(now)
    live = list(fleet.incs)
    for _ in range(7):
        record = rounds.out[-1]
        if record["phase"] in ("done", "abandoned"):
            break
        gone |= set(drop_before.get(record["phase"], ()))
        answer_phase(fleet, rounds, [v for v in live if v not in gone], now)
        now += 60_000  # past every timeout: the phase closes with whoever answered
        finished = rounds.advance(now)
        if finished is not None:
            return finished
    return None


def make(fleet, **kw):
    cfg = SecureConfig(round_size=len(fleet.incs), keys_timeout_s=5, step_timeout_s=5, **kw)
    return SecureRounds(cfg, current=lambda _m: None, merged_before=lambda _n, _s: False)


def assert_fedavg(finished, fleet, names):
    assert sorted(v for v, _s in finished.included) == sorted(names)
    got = global_from_total("fraud-linear", finished.features, finished.total,
                            finished.included, None).summary  # fmt: skip
    clear = merge([fleet.incs[v] for v in names], "fedavg").summary
    features = clear.features
    got = SPEC.algebra.align(got, features)
    for name in ("weights", "intercept", "mean", "var"):
        np.testing.assert_allclose(got.tensor(name), clear.tensor(name), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.tensor("count"), clear.tensor("count"))


def test_signed_steps_over_the_wire_unmask_the_fedavg_of_every_node():
    fleet = Fleet(["a", "b", "c", "d"])
    finished = run(fleet, make(fleet))
    assert finished is not None
    assert_fedavg(finished, fleet, ["a", "b", "c", "d"])
    assert finished.metrics["secagg_bytes_up"] > 0


def test_the_input_phase_goes_to_each_node_alone_with_only_the_ciphertexts_for_it():
    """No node's record carries another receiver's ciphertexts: the loop writes each to its
    receiver's partition of secagg-routed, so what a node downloads grows with its
    neighbours, not with the round."""
    fleet = Fleet(["a", "b", "c", "d", "e"])
    rounds = make(fleet)
    rounds.open(0)
    now = 0
    for _ in range(2):  # keys, shares
        answer_phase(fleet, rounds, list(fleet.incs), now)
        now += 60_000
        rounds.advance(now)
    inputs = [r for r in rounds.out if r["phase"] == "input"]
    assert sorted(routed_to(r) for r in inputs) == ["a", "b", "c", "d", "e"]
    for r in inputs:
        v = routed_to(r)
        assert r["nodes"] == [v] and set(r["routed"]) == {v}
        assert set(r["routed"][v]) == set(fleet.nodes[v].spec.graph.neighbours(v))
    assert all(routed_to(r) is None for r in rounds.out if r["phase"] != "input")
    bytes_of = {routed_to(r): len(CODEC.encode("SecAggRound", dict(r, key_id=None,
                signature=None))) for r in inputs}  # fmt: skip
    rounds.count_down(100)
    for v, n in bytes_of.items():
        rounds.count_down(n, partition=ord(v))
    assert rounds.round.bytes_wide == 100 and rounds.round.bytes_routed[ord("a")] == bytes_of["a"]


def test_a_node_gone_before_its_masked_input_is_left_out_and_the_rest_unmask():
    fleet = Fleet(["a", "b", "c", "d"])
    finished = run(fleet, make(fleet), {"input": ["d"]})  # shared its keys, then vanished
    assert finished is not None
    assert_fedavg(finished, fleet, ["a", "b", "c"])
    assert finished.metrics["secagg_dropped"] == 1


def test_too_many_dropouts_abandon_the_round_with_a_reason_and_publish_nothing():
    fleet = Fleet(["a", "b", "c", "d"])
    rounds = make(fleet)
    assert run(fleet, rounds, {"input": ["c", "d"]}) is None
    last = rounds.out[-1]
    assert last["phase"] == "abandoned"
    assert "needs 3" in last["reason"]
    assert sorted(last["nodes"]) == ["a", "b", "c", "d"]  # all of them offer again
    assert rounds.round is None and rounds.counters["abandoned"] == 1


def test_forged_unsigned_wrong_node_and_replayed_steps_are_refused_with_reasons():
    fleet = Fleet(["a", "b"])
    rounds = make(fleet)
    rid = rounds.open(0)
    k = fleet.secrets["a"]
    rec = keys_record(rid, Advertise("a", k.cipher.public, k.mask.public),
                      model_name="fraud-linear", sequence=1, base_version=0,
                      features=("f0",), now_ms=0)  # fmt: skip
    verifier = fleet.verifiers["SecAggKeys"]
    unsigned = dict(rec, key_id=None, signature=None)
    with pytest.raises(SignatureError) as e:
        verifier.check(unsigned)
    assert e.value.reason_code == "unsigned"
    signed = fleet.signers["a"].sign(unsigned, "SecAggKeys")
    with pytest.raises(SignatureError) as e:
        verifier.check(dict(signed, sequence=2))  # tampered after signing
    assert e.value.reason_code == "bad-signature"
    wrong = fleet.signers["b"].sign(unsigned, "SecAggKeys")  # b's key, a's name
    with pytest.raises(SignatureError) as e:
        verifier.check(wrong)
    assert e.value.reason_code == "key-not-for-node"
    rounds.take("SecAggKeys", signed, verifier.check(signed), 100, 0)
    rounds.take("SecAggKeys", signed, verifier.check(signed), 100, 0)  # redelivered: ignored
    again = fleet.signers["a"].sign(dict(unsigned, sequence=5), "SecAggKeys")
    with pytest.raises(StepRefused) as e2:
        rounds.take("SecAggKeys", again, verifier.check(again), 100, 0)
    assert e2.value.reason_code == "replayed"
    rounds._abandon(rounds.round, "test", 1)
    rounds.open(2)
    with pytest.raises(StepRefused) as e2:  # the old round's record, replayed into the next
        rounds.take("SecAggKeys", signed, verifier.check(signed), 100, 3)
    assert e2.value.reason_code == "replayed"


def test_an_increment_merged_before_is_refused_when_offered_again():
    fleet = Fleet(["a", "b"])
    cfg = SecureConfig(round_size=2)
    rounds = SecureRounds(cfg, current=lambda _m: None, merged_before=lambda n, s: n == "a")
    rid = rounds.open(0)
    k = fleet.secrets["a"]
    rec = keys_record(rid, Advertise("a", k.cipher.public, k.mask.public),
                      model_name="fraud-linear", sequence=1, base_version=0,
                      features=("f0",), now_ms=0)  # fmt: skip
    with pytest.raises(StepRefused) as e:
        rounds.take("SecAggKeys", dict(rec, key_id=None, signature=None), None, 1, 0)
    assert e.value.reason_code == "duplicate"


# -- the consistency check: survivors confirm the set before anyone reveals ----------------------
def test_a_survivor_that_confirms_and_then_vanishes_is_still_in_the_sum():
    fleet = Fleet(["a", "b", "c", "d"])
    rounds = make(fleet)
    finished = run(fleet, rounds, {"unmask": ["d"]})  # confirmed, never revealed
    assert finished is not None
    assert_fedavg(finished, fleet, ["a", "b", "c", "d"])
    [unmask] = [r for r in rounds.out if r["phase"] == "unmask"]
    assert [c["node_id"] for c in unmask["confirmations"]] == ["a", "b", "c", "d"]
    [outcome] = rounds.outcomes
    assert (outcome.outcome, outcome.reason, outcome.dropouts["unmask"]) == ("unmasked", None, 1)


def test_too_few_confirmations_abandon_the_round_before_any_share_is_revealed():
    fleet = Fleet(["a", "b", "c", "d"])
    rounds = make(fleet)
    assert run(fleet, rounds, {"confirm": ["c", "d"]}) is None
    assert [r["phase"] for r in rounds.out][-2:] == ["confirm", "abandoned"]  # no unmask asked
    last = rounds.out[-1]
    assert "consistency check: 2 of 4 survivors confirmed" in last["reason"]
    assert sorted(last["nodes"]) == ["a", "b", "c", "d"]  # every increment offered again
    [outcome] = rounds.outcomes
    assert (outcome.outcome, outcome.reason, outcome.dropouts["confirm"]) == (
        "abandoned", "unconfirmed", 2
    )  # fmt: skip


def test_a_confirmation_of_another_survivor_set_is_refused_as_inconsistent():
    fleet = Fleet(["a", "b", "c"])
    rounds = make(fleet)
    rounds.open(0)
    now = 0
    for _ in range(3):  # keys, shares, input
        answer_phase(fleet, rounds, ["a", "b", "c"], now)
        now += 60_000
        rounds.advance(now)
    record = rounds.out[-1]
    assert record["phase"] == "confirm" and record["nodes"] == ["a", "b", "c"]
    lie = confirm_record(record["round_id"], "a", ["a", "b"], now)
    with pytest.raises(StepRefused) as e:
        rounds.take("SecAggConfirm", *fleet.wire("SecAggConfirm", "a", lie), now)
    assert e.value.reason_code == "secagg-inconsistent"


@pytest.mark.parametrize("strategy", ["async", "fedavgm:server_lr=0.5,momentum=0.5"])
def test_the_merger_publishes_secure_rounds_with_its_strategy_or_fedavg_beside_async(strategy):
    """``async`` applies to the clear nodes only: a secure round beside it is FedAvg. A
    server optimizer steps on each unmasked mean, as the clear merge of the same updates."""
    from models.strategies import get_strategy
    from runtime.secagg import STEP_TOPICS
    from streams.merger.rounds import Merger, MergerConfig
    from streams.merger.secure_loop import SecureFeed

    merger = Merger(MergerConfig(strategy=strategy, quantize="float64", deltas=None))
    feed = SecureFeed(make(Fleet(["a", "b"])), consumer=None, producer=None, codec=None,  # type: ignore[arg-type]
                      topics={t: t for t in STEP_TOPICS.values()}, verifiers={}, dead=None)  # type: ignore[arg-type]  # fmt: skip
    clear_strategy = "fedavg" if strategy == "async" else get_strategy(strategy)
    current = None
    for names in (["a", "b"], ["a", "b", "c"], ["b", "c", "d"]):
        fleet = Fleet(names)
        finished = run(fleet, make(fleet))
        closed = feed._publishable(merger, finished, 1_000)
        incs = [fleet.incs[v] for v in names]
        clear = merge(incs, clear_strategy, current=current, accumulate=current is not None)
        got = SPEC.algebra.align(closed.result.summary, clear.summary.features)
        for name in ("weights", "intercept"):
            np.testing.assert_allclose(
                got.tensor(name), clear.summary.tensor(name), rtol=0, atol=1e-9
            )
        assert closed.strategy == ("fedavg" if strategy == "async" else "fedavgm")
        current = merger.tiers["fraud-linear"].current

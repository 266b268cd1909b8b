"""Secure aggregation's consistency check against a merger that lies about who dropped.

The attack (Bonawitz et al. 2017, section 4): the server tells some of a
node's neighbours that it survived (they reveal its self-mask seed shares) and
the others that it dropped (they reveal its mask key shares); with both, it
removes every mask from that node's input alone. The defence is in
``models/secagg/node.py`` (a node confirms one survivor set and reveals only
for it, once) and ``runtime/secagg.py`` (a node reveals only when a quorum of
survivors' *signed* confirmations of that very set verifies). Here a merger
tries every split of the nodes, padded with forged, unsigned and misdirected
confirmations, and never gets a seed share and a key share of the same node.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from models.secagg.messages import Inconsistent, RoundSpec
from models.secagg.node import Node
from models.secagg.server import Server
from runtime.secagg import (
    StepRefused,
    confirm_record,
    confirmation_of,
    confirmed_by,
    require_confirmed,
)
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    parse_trust_file,
    trust_entry,
)
from schemas.signing import SignatureError

NAMES = ("a", "b", "c", "d", "e")
RID = "fraud-linear/1/1"
TARGET = "e"  # the node whose input the merger wants alone


def identities():
    keys = {v: generate_private_key() for v in (*NAMES, "merger")}
    trust = parse_trust_file(json.dumps({
        f"{v}-k": trust_entry(k, ["global:*" if v == "merger" else v], "2999-01-01")
        for v, k in keys.items()
    }))  # fmt: skip
    return {v: KeySigner(f"{v}-k", k) for v, k in keys.items()}, trust


SIGNERS, TRUST = identities()
VERIFIER = KeyVerifier(TRUST, contract="SecAggConfirm")


def round_up_to_unmask():
    """Five nodes through keys, shares and masked input; every one of them survives."""
    spec = RoundSpec.create(RID, list(NAMES), 4)
    nodes = {v: Node(v, spec) for v in NAMES}
    server = Server(spec)
    server.collect_keys(n.advertise() for n in nodes.values())
    ads = {v: n.advertise() for v, n in nodes.items()}
    routed = server.route_shares([n.share(ads) for n in nodes.values()])
    x = np.arange(4, dtype=np.uint64)
    server.collect_masked([n.masked_input(x, routed[v]) for v, n in nodes.items()])
    return spec, nodes


def confirmation(node: str, survivors, signer: KeySigner | None = None) -> dict:
    record = dict(confirm_record(RID, node, sorted(survivors), 5), key_id=None, signature=None)
    if signer is not None:
        record = signer.sign(record, "SecAggConfirm")
    return confirmation_of(record)


def unmask_record(survivors, confirmations) -> dict:
    return {"round_id": RID, "nodes": sorted(survivors), "confirmations": list(confirmations)}


def test_a_node_reveals_only_for_the_one_set_it_confirmed_and_only_once():
    spec, nodes = round_up_to_unmask()
    a = nodes["a"]
    with pytest.raises(Inconsistent, match="confirmed none"):
        a.unmask(NAMES)
    a.confirm(NAMES)
    a.confirm(NAMES)  # the same set again: fine
    with pytest.raises(Inconsistent, match="after it confirmed"):
        a.confirm([v for v in NAMES if v != TARGET])
    with pytest.raises(Inconsistent, match="refuses to unmask"):
        a.unmask([v for v in NAMES if v != TARGET])
    reply = a.unmask(NAMES)
    assert TARGET in reply.seed_shares and not reply.key_shares
    with pytest.raises(Inconsistent, match="once"):
        a.unmask(NAMES)


def test_a_node_does_not_confirm_a_set_without_itself_or_with_strangers():
    _spec, nodes = round_up_to_unmask()
    with pytest.raises(Inconsistent, match="without itself"):
        nodes["a"].confirm(["b", "c", "d", "e"])
    with pytest.raises(Inconsistent, match="not in the round"):
        nodes["a"].confirm([*NAMES, "mallory"])


def test_forged_unsigned_misdirected_and_stolen_confirmations_do_not_count():
    spec, _nodes = round_up_to_unmask()
    everyone, without = sorted(NAMES), [v for v in NAMES if v != TARGET]
    forged = [
        confirmation("a", everyone, SIGNERS["merger"]),  # the merger's key, a's name
        confirmation("b", everyone),  # unsigned
        confirmation("c", without, SIGNERS["c"]),  # c's real signature, over the other set
        confirmation("d", everyone, SIGNERS["e"]),  # e's key, d's name
        confirmation("mallory", everyone, SIGNERS["merger"]),  # not a survivor
    ]
    good, bad = confirmed_by(unmask_record(everyone, forged), VERIFIER)
    assert good == set()
    assert [b.split(": ")[1] for b in bad] == [
        "key-not-for-node", "unsigned", "bad-signature", "key-not-for-node",
        "not a survivor, or twice",
    ]  # fmt: skip
    honest = [confirmation(v, everyone, SIGNERS[v]) for v in ("a", "b", "c")]
    with pytest.raises(StepRefused) as e:  # three honest, two forged: below the quorum of 4
        require_confirmed(unmask_record(everyone, [*honest, *forged]), spec, VERIFIER)
    assert e.value.reason_code == "secagg-unconfirmed" and "3 valid confirmations" in str(e.value)
    twice = [*honest, honest[0]]  # one node's confirmation counted once
    with pytest.raises(StepRefused):
        require_confirmed(unmask_record(everyone, twice), spec, VERIFIER)
    four = [*honest, confirmation("d", everyone, SIGNERS["d"])]
    assert require_confirmed(unmask_record(everyone, four), spec, VERIFIER) == {"a", "b", "c", "d"}


def test_the_confirmations_are_checked_against_the_trust_file_not_taken_on_trust():
    with pytest.raises(SignatureError):
        KeyVerifier(TRUST, contract="SecAggConfirm").check(
            SIGNERS["merger"].sign(
                dict(confirm_record(RID, "a", NAMES, 1), key_id=None, signature=None),
                "SecAggConfirm",
            )  # fmt: skip
        )


@pytest.mark.parametrize("told_alive", [set(c) for n in range(5)
                                        for c in itertools.combinations("abcd", n)])  # fmt: skip
def test_a_merger_that_splits_the_survivor_set_never_gets_both_secrets_of_a_node(told_alive):
    """Nodes in ``told_alive`` hear that e survived, the rest that it dropped (e itself hears
    it survived). The merger forwards every confirmation it got, adds forged ones for the
    rest, and shows each node both unmask records; honest nodes act as the edge does."""
    spec, nodes = round_up_to_unmask()
    alive, dropped = sorted(NAMES), sorted(v for v in NAMES if v != TARGET)
    shown = {v: alive if v in told_alive | {TARGET} else dropped for v in NAMES}
    got = {"alive": [], "dropped": []}
    for v, survivors in shown.items():
        nodes[v].confirm(survivors)
        got["alive" if survivors == alive else "dropped"].append(
            confirmation(v, survivors, SIGNERS[v])
        )
    pad = {name: [confirmation(v, s, SIGNERS["merger"]) for v in NAMES]
           for name, s in (("alive", alive), ("dropped", dropped))}  # fmt: skip
    records = [unmask_record(s, got[name] + pad[name])
               for name, s in (("alive", alive), ("dropped", dropped))]  # fmt: skip
    seed_shares, key_shares = 0, 0
    for v, node in nodes.items():
        for record in records:
            if v not in record["nodes"]:
                continue
            try:
                require_confirmed(record, spec, VERIFIER)
                reply = node.unmask(record["nodes"])
            except (StepRefused, Inconsistent):
                continue
            seed_shares += TARGET in reply.seed_shares
            key_shares += TARGET in reply.key_shares
    assert not (seed_shares and key_shares)  # never both kinds of e's shares, from anyone
    if told_alive == set("abcd"):  # nobody lied to: the round unmasks as it should
        assert seed_shares >= spec.threshold

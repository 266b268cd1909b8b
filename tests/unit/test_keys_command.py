"""`prism keys generate | revoke`: files the services accept, and refusals that say why."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import numpy as np
import pytest

from models.serialization import weight_summary_record
from models.specs import get_spec
from prism.cli import main
from schemas.identity import KeySigner, KeyVerifier, load_private_key, load_trust_file
from schemas.signing import SignatureError

NOW = datetime(2027, 1, 15, 12, tzinfo=UTC).timestamp()


def a_summary(node: str) -> dict:
    spec = get_spec("fraud-linear")
    model = spec.new_model()
    spec.learn_one(model, {"amount": float(np.float64(3.0))}, True)
    s = spec.summarize(model).with_provenance(node_id=node, sequence=1, base_version=0)
    return weight_summary_record(s, tier="edge", created_at_ms=1_700_000_000_000)


def generate(tmp_path, kid: str, nodes: str, *extra: str) -> int:
    return main(["keys", "generate", "--id", kid, "--key-file", str(tmp_path / f"{kid}.pem"),
                 "--nodes", nodes, "--not-after", "2027-06-30", *extra])  # fmt: skip


def test_a_generated_key_signs_what_its_trust_entry_verifies(tmp_path) -> None:
    trust = tmp_path / "trust.json"
    assert generate(tmp_path, "store-1-k1", "store-*", "--trust-file", str(trust)) == 0
    assert generate(tmp_path, "merger-k1", "global:*", "--trust-file", str(trust)) == 0
    pem = tmp_path / "store-1-k1.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    keys = load_trust_file(trust)
    assert set(keys) == {"store-1-k1", "merger-k1"}
    signed = KeySigner("store-1-k1", load_private_key(pem)).sign(a_summary("store-7"))
    verifier = KeyVerifier(keys, contract="WeightSummary", clock=lambda: NOW)
    assert verifier.check(signed) == signed["signature"]
    wrong_node = KeySigner("store-1-k1", load_private_key(pem)).sign(a_summary("plant-1"))
    with pytest.raises(SignatureError) as info:
        verifier.check(wrong_node)
    assert info.value.reason_code == "key-not-for-node"


def test_without_a_trust_file_the_entry_is_printed(tmp_path, capsys) -> None:
    assert generate(tmp_path, "k1", "store-1") == 0
    entry = json.loads(capsys.readouterr().out)["k1"]
    assert entry["nodes"] == ["store-1"] and entry["not_after"] == "2027-06-30"


def test_revoke_makes_the_verifiers_refuse_the_key_with_its_reason(tmp_path, capsys) -> None:
    trust = tmp_path / "trust.json"
    assert generate(tmp_path, "k1", "store-1", "--trust-file", str(trust)) == 0
    signed = KeySigner("k1", load_private_key(tmp_path / "k1.pem")).sign(a_summary("store-1"))
    argv = ["keys", "revoke", "--id", "k1", "--trust-file", str(trust), "--reason", "key-leaked"]
    assert main([*argv, "--at", "2027-01-10T00:00:00+00:00"]) == 0
    entry = json.loads(trust.read_text())["k1"]
    assert entry["reason"] == "key-leaked"
    verifier = KeyVerifier(load_trust_file(trust), contract="WeightSummary", clock=lambda: NOW)
    with pytest.raises(SignatureError) as info:
        verifier.check(signed)
    assert info.value.reason_code == "revoked-key"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--not-after", "someday"], "not an ISO 8601"),
        (["again"], "never overwritten"),
        (["same-id"], "already in"),
        (["revoke-unknown"], "is not in"),
    ],
)
def test_refusals_exit_2_and_say_why(tmp_path, capsys, argv, message) -> None:
    trust = tmp_path / "trust.json"
    assert generate(tmp_path, "k1", "store-1", "--trust-file", str(trust)) == 0
    capsys.readouterr()
    if argv == ["again"]:  # a new id, but the key file of k1
        code = main(["keys", "generate", "--id", "k2", "--key-file", str(tmp_path / "k1.pem"),
                     "--nodes", "store-2", "--not-after", "2027-06-30"])  # fmt: skip
    elif argv == ["same-id"]:
        code = generate(tmp_path, "k1", "store-1", "--trust-file", str(trust))
    elif argv == ["revoke-unknown"]:
        code = main(["keys", "revoke", "--id", "nope", "--trust-file", str(trust),
                     "--reason", "x"])  # fmt: skip
    else:
        code = main(["keys", "generate", "--id", "k3", "--key-file", str(tmp_path / "k3.pem"),
                     "--nodes", "store-3", *argv])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
    assert json.loads(trust.read_text()).keys() == {"k1"}  # nothing half-written

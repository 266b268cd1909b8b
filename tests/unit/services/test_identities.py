"""`prism up`'s identities: a key per signing service, reused across `up`s, and a trust
file that vouches for each key for exactly the node ids its service signs for."""

from __future__ import annotations

import argparse
import json
import stat
import time
from pathlib import Path

import pytest

from models.serialization import global_model_record
from models.specs import get_spec
from prism.commands.up import plan, sign, supervisor_env
from prism.services.identities import Identity, ensure, key_file
from prism.services.supervisor import service_env
from schemas.identity import KeySigner, KeyVerifier, load_private_key, load_trust_file
from schemas.signing import SignatureError

RECORD = {"tier": "edge", "sequence": 1, "base_version": 0, "created_at": 0,
          "state": {"model_name": "m", "model_kind": "k", "features": [], "n_samples": 0,
                    "tensors": []}}  # fmt: skip
SPEC = get_spec("fraud-linear")
GLOBAL = global_model_record(SPEC.summarize(SPEC.new_model()), version=3, strategy="fedavg",
                             created_at_ms=1_700_000_000_000)  # fmt: skip


def up_args() -> argparse.Namespace:
    return argparse.Namespace(
        task="both", edges=2, round_size=None, edge_rate=200.0, edge_mode="private"
    )


def check(trust: Path, record: dict, contract: str = "WeightSummary") -> str | None:
    """None when ``record`` verifies against the trust file, else the reason code."""
    try:
        KeyVerifier(load_trust_file(trust), contract=contract).check(record)
    except SignatureError as e:
        return e.reason_code
    return None


def signer(directory: Path, key_id: str) -> KeySigner:
    return KeySigner(key_id, load_private_key(key_file(directory, key_id)))


def test_a_second_up_reuses_every_key_and_writes_the_same_trust_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    identities = [Identity("merger", ("global:*",)), Identity("edge-0", ("edge-0",))]
    trust = ensure(keys, identities)
    first = {i.key_id: key_file(keys, i.key_id).read_bytes() for i in identities}
    text = trust.read_text()
    assert ensure(keys, identities) == trust
    assert {i.key_id: key_file(keys, i.key_id).read_bytes() for i in identities} == first
    assert trust.read_text() == text
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for identity in identities:
        assert stat.S_IMODE(key_file(keys, identity.key_id).stat().st_mode) == 0o600
    assert stat.S_IMODE(trust.stat().st_mode) == 0o644  # public keys only
    assert {k: v["nodes"] for k, v in json.loads(text).items()} == {
        "merger": ["global:*"],
        "edge-0": ["edge-0"],
    }


def test_a_lost_trust_file_is_rebuilt_from_the_key_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    trust = ensure(keys, [Identity("edge-0", ("edge-0",))])
    before = key_file(keys, "edge-0").read_bytes()
    trust.write_text("{not json")
    ensure(keys, [Identity("edge-0", ("edge-0",))])
    assert key_file(keys, "edge-0").read_bytes() == before
    assert check(trust, signer(keys, "edge-0").sign(dict(RECORD, node_id="edge-0"))) is None


def test_a_key_near_its_not_after_is_replaced_and_an_unplanned_one_dropped(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    trust = ensure(keys, [Identity("edge-0", ("edge-0",)), Identity("edge-1", ("edge-1",))])
    old = signer(keys, "edge-0")
    in_a_year = time.time() + 360 * 86400  # under RENEW_DAYS left
    ensure(keys, [Identity("edge-0", ("edge-0",))], clock=lambda: in_a_year)
    assert set(json.loads(trust.read_text())) == {"edge-0"}
    record = dict(RECORD, node_id="edge-0")
    assert check(trust, old.sign(record)) == "bad-signature"  # the old key is gone
    assert check(trust, signer(keys, "edge-0").sign(record)) is None


def test_up_gives_every_service_its_own_key_for_its_own_nodes_only(tmp_path: Path) -> None:
    services = plan(up_args(), tmp_path / "edges.avro", ["s0", "s1"])
    keys = tmp_path / "up" / "keys"
    readers = sign(services, keys)
    trust = Path(readers["PRISM_TRUST_FILE"])
    assert trust == keys / "trust.json"
    by_name = {s.name: s for s in services}
    assert set(by_name) == {"central-fraud", "central-iot", "merger", "edge-0", "edge-1"}
    for s in services:
        env = service_env(s)
        assert env["PRISM_SIGNING_KEY_ID"] == s.name
        assert env["PRISM_SIGNING_KEY_FILE"] == str(key_file(keys, s.name))
        assert env["PRISM_TRUST_FILE"] == str(trust) and env["PRISM_REQUIRE_SIGNED"] == "true"
    central = signer(keys, "central-fraud")
    assert check(trust, central.sign(dict(RECORD, node_id="prism-central-fraud/p2"))) is None
    refused = {
        "central-fraud for an edge": central.sign(dict(RECORD, node_id="edge-0")),
        "central-fraud for an iot shard": central.sign(
            dict(RECORD, node_id="prism-central-iot/p0")
        ),
        "edge-0 for edge-1": signer(keys, "edge-0").sign(dict(RECORD, node_id="edge-1")),
        "merger for a summary": signer(keys, "merger").sign(dict(RECORD, node_id="edge-0")),
    }
    assert {k: check(trust, r) for k, r in refused.items()} == dict.fromkeys(
        refused, "key-not-for-node"
    )
    merger = signer(keys, "merger").sign(GLOBAL, "GlobalModel")
    assert check(trust, merger, "GlobalModel") is None
    stolen = signer(keys, "edge-0").sign(GLOBAL, "GlobalModel")
    assert check(trust, stolen, "GlobalModel") == "key-not-for-node"


def test_a_service_that_signs_nothing_still_verifies(tmp_path: Path) -> None:
    from prism.services.supervisor import Service

    reader = Service("reader", ["models", "list"])
    sign([reader], tmp_path / "keys")
    assert reader.env == {
        "PRISM_TRUST_FILE": str(tmp_path / "keys" / "trust.json"),
        "PRISM_REQUIRE_SIGNED": "true",
    }


@pytest.mark.parametrize("field", ["signs_for", "env"])
def test_the_plan_file_keeps_what_the_supervisor_needs(tmp_path: Path, field: str) -> None:
    from prism.services.supervisor import load_plan, save_plan

    services = plan(up_args(), tmp_path / "edges.avro", ["s0", "s1"])
    sign(services, tmp_path / "keys")
    save_plan(tmp_path / "plan.json", services)
    loaded = load_plan(tmp_path / "plan.json")
    assert [getattr(s, field) for s in loaded] == [getattr(s, field) for s in services]


def test_a_damaged_key_file_is_replaced(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    trust = ensure(keys, [Identity("merger", ("global:*",))])
    key_file(keys, "merger").write_text("not a key")
    ensure(keys, [Identity("merger", ("global:*",))])
    merger = signer(keys, "merger").sign(GLOBAL, "GlobalModel")
    assert check(trust, merger, "GlobalModel") is None


def test_hmac_settings_of_the_users_shell_do_not_reach_the_services(tmp_path: Path) -> None:
    """A key file next to an HMAC secret is refused at start: every service would exit."""
    shell = {"PATH": "/bin", "PRISM_SIGNING_KEY": "s" * 16, "PRISM_TRUSTED_KEYS": "{}"}
    env = supervisor_env(shell, {"PRISM_KAFKA_BOOTSTRAP": "h:1"}, tmp_path)
    assert env == {"PATH": "/bin", "PRISM_KAFKA_BOOTSTRAP": "h:1", "PRISM_STATE_DIR": str(tmp_path)}

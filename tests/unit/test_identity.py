"""Public-key identities (schemas/identity.py): Ed25519 signatures against a trust file."""

from __future__ import annotations

import copy
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.serialization import global_model_record, weight_summary_record
from models.specs import get_spec
from schemas import Codec
from schemas.canonical import SIGNED_FIELDS, canonical_bytes
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    load_private_key,
    load_trust_file,
    parse_trust_file,
    public_key_b64,
    trust_entry,
    write_private_key,
)
from schemas.registry import load_schema
from schemas.signing import SignatureError

SPEC = get_spec("fraud-linear")
KEY_1, KEY_2, MERGER, STRANGER = (generate_private_key() for _ in range(4))
NOW = datetime(2027, 1, 15, 12, tzinfo=UTC).timestamp()
TRUST_TEXT = json.dumps(
    {
        "k-store-1": trust_entry(KEY_1, ["store-1"], "2027-06-30"),
        "k-store-2": trust_entry(KEY_2, ["store-2", "plant-*"], "2027-06-30"),
        "k-merger": trust_entry(MERGER, ["global:*"], "2027-06-30"),
    }
)
TRUST = parse_trust_file(TRUST_TEXT)


def at(when: float | str, keys=None, contract: str = "WeightSummary") -> KeyVerifier:
    t = datetime.fromisoformat(when).timestamp() if isinstance(when, str) else when
    return KeyVerifier(TRUST if keys is None else keys, contract=contract, clock=lambda: t)


def summary(node: str = "store-1", seq: int = 7) -> dict[str, Any]:
    rng = np.random.default_rng(seq)
    model = SPEC.new_model()
    for _ in range(30):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    s = SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=2)
    return weight_summary_record(
        s, tier="edge", region="eu", created_at_ms=1_700_000_000_000 + seq,
        metrics={"events": 30.0}, meta={"stats": "increment"},
    )  # fmt: skip


def global_model(name: str = "fraud-linear", version: int = 3) -> dict[str, Any]:
    model = SPEC.new_model()
    SPEC.learn_one(model, {"amount": 1.0, "hour": 2.0}, True)
    return global_model_record(SPEC.summarize(model), version=version, strategy="fedavg",
                               created_at_ms=1_700_000_000_000)  # fmt: skip


def reason(rec: dict[str, Any], verifier: KeyVerifier) -> str:
    with pytest.raises(SignatureError) as info:
        verifier.check(rec)
    return info.value.reason_code


def wire(rec: dict[str, Any], contract: str, mode: str = "avro") -> dict[str, Any]:
    return Codec().decode(Codec(mode=mode).encode(contract, rec), expected=contract)


@pytest.mark.parametrize("mode", ["avro", "json"])
@pytest.mark.parametrize("contract", ["WeightSummary", "GlobalModel"])
def test_a_signed_record_verifies_after_the_wire_in_either_mode(contract: str, mode: str) -> None:
    key, kid, rec = (MERGER, "k-merger", global_model()) if contract == "GlobalModel" else (
        KEY_1, "k-store-1", summary())  # fmt: skip
    signed = KeySigner(kid, key).sign(rec, contract)
    assert signed["key_id"] == kid and len(signed["signature"]) == 64
    assert at(NOW, contract=contract).check(wire(signed, contract, mode)) == signed["signature"]


def test_ed25519_signs_the_same_canonical_bytes_as_hmac() -> None:
    signed = KeySigner("k-store-1", KEY_1).sign(summary())
    KEY_1.public_key().verify(signed["signature"], canonical_bytes(signed))  # raises if not


def test_every_field_but_the_signature_is_signed_for_both_contracts() -> None:
    for contract, fields in SIGNED_FIELDS.items():
        names = [f["name"] for f in load_schema(contract)["fields"]]
        assert sorted(fields) == sorted(n for n in names if n != "signature"), contract


def test_a_forged_signature_is_refused() -> None:
    rec = summary()
    forged = KeySigner("k-store-1", STRANGER).sign(rec)  # right key id, another private key
    assert reason(forged, at(NOW)) == "bad-signature"
    junk = dict(KeySigner("k-store-1", KEY_1).sign(rec), signature=bytes(64))
    assert reason(junk, at(NOW)) == "bad-signature"
    assert reason(dict(junk, signature=b"short"), at(NOW)) == "bad-signature"


def test_a_tampered_summary_and_a_tampered_global_are_refused() -> None:
    s = KeySigner("k-store-1", KEY_1).sign(summary())
    s["state"]["n_samples"] *= 10
    assert reason(s, at(NOW)) == "bad-signature"
    g = KeySigner("k-merger", MERGER).sign(global_model(), "GlobalModel")
    for change in (
        lambda r: r.update(version=r["version"] + 1),
        lambda r: r["state"]["packed"].update(values=b"\x00" + r["state"]["packed"]["values"][1:]),
        lambda r: r.update(strategy="fedmedian"),
        lambda r: r["metrics"].update(auc=0.99),
    ):
        bad = copy.deepcopy(g)
        change(bad)
        assert reason(bad, at(NOW, contract="GlobalModel")) == "bad-signature"


def test_a_summary_signature_cannot_be_reused_as_a_global() -> None:
    # the domain tag differs per contract: the same key over the same fields still fails
    g = global_model()
    sig = MERGER.sign(canonical_bytes(dict(g, key_id="k-merger"), "GlobalModel"))
    ok = dict(g, key_id="k-merger", signature=sig)
    assert at(NOW, contract="GlobalModel").check(ok) == sig
    assert canonical_bytes(summary()).startswith(b"prism.WeightSummary")
    assert canonical_bytes(ok, "GlobalModel").startswith(b"prism.GlobalModel")


def test_a_key_cannot_sign_for_another_node_and_edge_keys_cannot_sign_globals() -> None:
    assert reason(KeySigner("k-store-1", KEY_1).sign(summary("store-2")), at(NOW)) == (
        "key-not-for-node"
    )
    assert at(NOW).check(KeySigner("k-store-2", KEY_2).sign(summary("plant-9")))  # a glob
    stolen = KeySigner("k-store-2", KEY_2).sign(global_model(), "GlobalModel")
    assert reason(stolen, at(NOW, contract="GlobalModel")) == "key-not-for-node"
    merger_as_node = KeySigner("k-merger", MERGER).sign(summary("store-1"))
    assert reason(merger_as_node, at(NOW)) == "key-not-for-node"


def test_unknown_keys_and_unsigned_records_are_refused_when_required() -> None:
    assert reason(KeySigner("k-nobody", STRANGER).sign(summary()), at(NOW)) == "unknown-key"
    assert reason(summary(), at(NOW)) == "unsigned"
    assert reason(global_model(), at(NOW, contract="GlobalModel")) == "unsigned"
    lax = KeyVerifier(TRUST, required=False, clock=lambda: NOW)
    assert lax.check(summary()) is None  # a migration: unsigned passes
    assert reason(KeySigner("k-store-1", STRANGER).sign(summary()), lax) == "bad-signature"
    with pytest.raises(ValueError, match="lists no key"):
        KeyVerifier({}, required=True)


def test_a_revoked_key_is_refused_from_its_revocation_time_on() -> None:
    entry = trust_entry(KEY_1, ["store-1"], "2027-06-30")
    entry.update(revoked_at="2027-01-10T08:00:00Z", reason="laptop stolen")
    keys = parse_trust_file(json.dumps({"k-store-1": entry}))
    rec = KeySigner("k-store-1", KEY_1).sign(summary())
    assert at("2027-01-10T07:59:59+00:00", keys).check(rec) == rec["signature"]
    with pytest.raises(SignatureError, match="laptop stolen") as info:
        at("2027-01-10T08:00:00+00:00", keys).check(rec)
    assert info.value.reason_code == "revoked-key"
    # created_at is signed by the revoked key itself: backdating it changes nothing
    backdated = KeySigner("k-store-1", KEY_1).sign(dict(summary(), created_at=0))
    assert reason(backdated, at("2027-02-01T00:00:00", keys)) == "revoked-key"


def test_a_key_expires_after_its_not_after_date_which_is_a_whole_day() -> None:
    rec = KeySigner("k-store-1", KEY_1).sign(summary())
    assert at("2027-06-30T23:59:59+00:00").check(rec)
    assert reason(rec, at("2027-07-01T00:00:00+00:00")) == "expired-key"
    keys = parse_trust_file(json.dumps(
        {"k": trust_entry(KEY_1, ["store-1"], "2027-06-30T12:00:00+02:00")}))  # fmt: skip
    rec = KeySigner("k", KEY_1).sign(summary())
    assert at("2027-06-30T09:59:59+00:00", keys).check(rec)
    assert reason(rec, at("2027-06-30T10:00:00+00:00", keys)) == "expired-key"


def test_rotation_both_keys_verify_during_the_overlap_then_only_the_new_one() -> None:
    old, new = generate_private_key(), generate_private_key()
    keys = parse_trust_file(json.dumps({
        "store-1-2026": trust_entry(old, ["store-1"], "2027-01-31"),
        "store-1-2027": trust_entry(new, ["store-1"], "2028-01-31"),
    }))  # fmt: skip
    by_old = KeySigner("store-1-2026", old).sign(summary())
    by_new = KeySigner("store-1-2027", new).sign(summary())
    assert at("2027-01-20T00:00:00", keys).check(by_old)
    assert at("2027-01-20T00:00:00", keys).check(by_new)
    assert reason(by_old, at("2027-02-01T00:00:00", keys)) == "expired-key"
    assert at("2027-02-01T00:00:00", keys).check(by_new)
    # a key id names one key: the new key under the old id is a forgery
    assert reason(KeySigner("store-1-2026", new).sign(summary()), at(NOW, keys)) == (
        "bad-signature"
    )


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"public_key": "AAAA", "nodes": ["a"], "not_after": "2027-01-01"}, "32-byte"),
        ({"public_key": "not base64!", "nodes": ["a"], "not_after": "2027-01-01"}, "32-byte"),
        ({"nodes": ["a"], "not_after": "2027-01-01"}, "public_key"),
        ({"public_key": public_key_b64(KEY_1), "nodes": [], "not_after": "2027-01-01"}, "nodes"),
        ({"public_key": public_key_b64(KEY_1), "nodes": ["a"]}, "not_after"),
        ({"public_key": public_key_b64(KEY_1), "nodes": ["a"], "not_after": "soon"}, "not_after"),
        (
            {
                "public_key": public_key_b64(KEY_1),
                "nodes": ["a"],
                "not_after": "2027-01-01",
                "revoked_at": "yesterday",
            },
            "revoked_at",
        ),  # fmt: skip
        ("just a string", "must be an object"),
    ],
)
def test_a_bad_trust_entry_is_named(entry: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_trust_file(json.dumps({"k-bad": entry}))
    assert "k-bad" in str(info.value)


def test_a_trust_file_that_is_not_json_or_not_an_object_is_named(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="trust.json.*not valid JSON"):
        load_trust_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_trust_file(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="must be"):
        parse_trust_file("[]")


def test_a_private_key_file_is_0600_never_overwritten_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "store-1.pem"
    write_private_key(path, KEY_1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private_key(path, KEY_2)
    loaded = load_private_key(path)
    assert public_key_b64(loaded) == public_key_b64(KEY_1)
    rec = KeySigner("k-store-1", loaded).sign(summary())
    assert at(NOW).check(rec)
    assert "PRIVATE" not in repr(KeySigner("k", loaded))
    (tmp_path / "junk.pem").write_text("-----BEGIN NOTHING-----")
    with pytest.raises(ValueError, match="junk.pem is not an unencrypted PEM"):
        load_private_key(tmp_path / "junk.pem")


@settings(max_examples=40, deadline=None)
@given(
    node=st.from_regex(r"[A-Za-z0-9._:@-]{1,20}", fullmatch=True),
    seq=st.integers(min_value=1, max_value=2**62),
    metrics=st.dictionaries(
        st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False), max_size=4
    ),
    mode=st.sampled_from(["avro", "json"]),
    flip=st.integers(min_value=0, max_value=64 * 8 - 1),
)
def test_round_trip_and_any_flipped_signature_bit_property(node, seq, metrics, mode, flip) -> None:
    keys = parse_trust_file(json.dumps({"k": trust_entry(KEY_1, [node], "2999-01-01")}))
    good = KeySigner("k", KEY_1).sign(dict(summary(), node_id=node, sequence=seq, metrics=metrics))
    assert at(NOW, keys).check(wire(good, "WeightSummary", mode)) == good["signature"]
    sig = bytearray(good["signature"])
    sig[flip // 8] ^= 1 << (flip % 8)
    assert reason(dict(good, signature=bytes(sig)), at(NOW, keys)) == "bad-signature"
    assert reason(dict(good, sequence=seq + 1), at(NOW, keys)) == "bad-signature"
    assert reason(KeySigner("k", KEY_2).sign(good), at(NOW, keys)) == "bad-signature"


def test_a_global_from_the_writer_before_signatures_decodes_as_unsigned() -> None:
    import io

    import fastavro

    from schemas.codec import MARKER
    from schemas.registry import HISTORY_DIR, register_writer_schema

    old = json.loads((HISTORY_DIR / "GlobalModel.v3.avsc").read_text())
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), global_model())
    data = MARKER + register_writer_schema("GlobalModel", old) + body.getvalue()
    decoded = Codec().decode(data, expected="GlobalModel")
    assert decoded["key_id"] is None and decoded["signature"] is None
    assert reason(decoded, at(NOW, contract="GlobalModel")) == "unsigned"

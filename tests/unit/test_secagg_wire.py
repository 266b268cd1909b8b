"""Secure aggregation's step records (runtime/secagg.py, schemas/avro/SecAgg*.avsc):
encode/decode round trips in both wire modes, signatures that break when any signed
field or the round changes, and malformed steps refused with a reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.secagg.messages import Advertise, MaskedInput, ShareBundle, UnmaskReply
from runtime.secagg import (
    StepRefused,
    advertise_of,
    keys_record,
    masked_of,
    masked_record,
    routed_partition,
    shares_of,
    shares_record,
    unmask_of,
    unmask_record,
    vector_bytes,
    vector_of,
)
from schemas import Codec, SchemaError
from schemas.canonical import SIGNED_FIELDS
from schemas.identity import (
    KeySigner,
    KeyVerifier,
    generate_private_key,
    parse_trust_file,
    trust_entry,
)
from schemas.signing import SignatureError

KEY = generate_private_key()
SIGNER = KeySigner("n1-k", KEY)
TRUST = parse_trust_file(json.dumps({"n1-k": trust_entry(KEY, ["n1"], "2999-01-01")}))
ids = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12)
blobs = st.binary(min_size=0, max_size=200)
keys32 = st.binary(min_size=32, max_size=32)


@st.composite
def step_records(draw):
    rid, now = draw(ids), draw(st.integers(0, 2**41))
    kind = draw(st.sampled_from(["SecAggKeys", "SecAggShares", "SecAggMasked", "SecAggUnmask"]))
    if kind == "SecAggKeys":
        ad = Advertise("n1", draw(keys32), draw(keys32))
        rec = keys_record(rid, ad, model_name="fraud-linear", sequence=draw(st.integers(0, 2**40)),
                          base_version=draw(st.integers(0, 99)),
                          features=draw(st.lists(ids, max_size=5)), now_ms=now)  # fmt: skip
    elif kind == "SecAggShares":
        rec = shares_record(
            rid, ShareBundle("n1", draw(st.dictionaries(ids, blobs, max_size=5))), now
        )
    elif kind == "SecAggMasked":
        words = draw(st.lists(st.integers(0, 2**64 - 1), max_size=20))
        rec = masked_record(rid, MaskedInput("n1", np.array(words, dtype=np.uint64)), now)
    else:
        seeds = draw(st.dictionaries(ids, blobs, max_size=4))
        keys = {
            k: v for k, v in draw(st.dictionaries(ids, blobs, max_size=4)).items() if k not in seeds
        }
        rec = unmask_record(rid, UnmaskReply("n1", seeds, keys), now)
    return kind, dict(rec, key_id=None, signature=None)


@given(step_records(), st.sampled_from(["avro", "json"]))
def test_every_step_record_round_trips_signed_in_both_wire_modes(drawn, mode):
    kind, rec = drawn
    signed = SIGNER.sign(rec, kind)
    back = Codec(mode).decode(Codec(mode).encode(kind, signed), expected=kind)
    assert back == signed
    assert KeyVerifier(TRUST, contract=kind).check(back) == signed["signature"]


@given(step_records(), st.data())
def test_changing_any_signed_field_breaks_the_signature(drawn, data):
    kind, rec = drawn
    signed = SIGNER.sign(rec, kind)
    field = data.draw(
        st.sampled_from([f for f in SIGNED_FIELDS[kind] if f not in ("key_id", "node_id")])
    )
    value = signed[field]
    if isinstance(value, str):
        changed = value + "x"
    elif isinstance(value, int):
        changed = value + 1
    elif isinstance(value, bytes):
        changed = value + b"\0"
    elif isinstance(value, list):
        changed = [*value, "x"]
    else:  # a map
        changed = {**value, "zz-extra": b"\1"}
    with pytest.raises(SignatureError) as e:
        KeyVerifier(TRUST, contract=kind).check(dict(signed, **{field: changed}))
    assert e.value.reason_code == "bad-signature"


def test_a_step_signed_for_one_contract_does_not_verify_as_another():
    rec = dict(masked_record("r", MaskedInput("n1", np.zeros(2, np.uint64)), 1), key_id=None,
               signature=None)  # fmt: skip
    signed = SIGNER.sign(rec, "SecAggMasked")
    shares = dict(shares_record("r", ShareBundle("n1", {}), 1), key_id="n1-k",
                  signature=signed["signature"])  # fmt: skip
    with pytest.raises(SignatureError):
        KeyVerifier(TRUST, contract="SecAggShares").check(shares)


def test_unsigned_and_foreign_node_steps_are_refused_when_signatures_are_required():
    rec = dict(shares_record("r", ShareBundle("n2", {}), 1), key_id=None, signature=None)
    verifier = KeyVerifier(TRUST, contract="SecAggShares")
    with pytest.raises(SignatureError) as e:
        verifier.check(rec)
    assert e.value.reason_code == "unsigned"
    with pytest.raises(SignatureError) as e:
        verifier.check(SIGNER.sign(rec, "SecAggShares"))  # n1's key signing for n2
    assert e.value.reason_code == "key-not-for-node"


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_masked_vectors_round_trip_bit_for_bit(words):
    v = np.array(words, dtype=np.uint64)
    np.testing.assert_array_equal(vector_of(vector_bytes(v), len(v)), v)


def test_malformed_steps_are_refused_with_a_reason():
    with pytest.raises(StepRefused) as e:
        vector_of(b"\0" * 12, 2)
    assert e.value.reason_code == "invalid-secagg" and "needs 16" in str(e.value)
    with pytest.raises(StepRefused) as e:
        masked_of({"node_id": "n", "vector": b"\0" * 8}, 2)
    assert e.value.reason_code == "invalid-secagg"
    with pytest.raises(StepRefused) as e:
        advertise_of({"node_id": "n", "cipher_public": b"\0" * 31, "mask_public": b"\0" * 32})
    assert "32-byte" in str(e.value)
    with pytest.raises(StepRefused) as e:  # both secrets of one node: would unmask its input
        unmask_of({"node_id": "n", "seed_shares": {"u": b"1"}, "key_shares": {"u": b"2"}})
    assert e.value.reason_code == "invalid-secagg"
    assert shares_of({"node_id": "n", "ciphertexts": {"m": b"c"}}).ciphertexts == {"m": b"c"}


@given(st.binary(max_size=64))
def test_garbage_bytes_on_a_step_topic_are_a_schema_error(data):
    with pytest.raises(SchemaError):
        Codec().decode(data, expected="SecAggKeys")


def test_a_nodes_routed_partition_is_a_stable_function_of_its_id():
    """The merger and every node compute it apart, in other processes and versions: pinned
    values (SHA-256, never Python's salted hash), and spread over the partitions."""
    assert [routed_partition(v, 32) for v in "abcdefg"] == [10, 10, 2, 9, 18, 10, 5]
    assert routed_partition("site-007", 1) == 0
    spread = {routed_partition(f"site-{i:03d}", 32) for i in range(200)}
    assert len(spread) == 32
    with pytest.raises(ValueError):
        routed_partition("a", 0)

"""Secure aggregation's step records on Kafka: topics, record <-> message, signatures.

A SecAgg+ round (models/secagg/) is four steps each node takes and one
record the merger writes per phase. Here they become typed Avro records
(schemas/avro/SecAgg*.avsc) on topics of their own, so each step can be
read, retained and dead-lettered on its own, and every node record is signed
with the node's Ed25519 identity -- the same key and trust file as its
WeightSummary. The merger's phase records are signed with its global key
(``global:<model>``, as its GlobalModels), and before revealing shares each
survivor confirms, signed, the survivor set it was given (SecAggConfirm):
the unmask record carries those confirmations and a node checks them
(:func:`confirmed_by`). The ciphertexts routed to a node (phase ``input``) go in
a record of its own on ``secagg-routed``, in the partition :func:`routed_partition`
names for it, so a node downloads what is addressed to it and not every
receiver's (a consumer fetches whole partitions). Both the merger and the
edge agents use this module; it holds no Kafka client.

Signing covers ``round_id`` too, so a record replayed into another round
does not verify as that round's, and the merger refuses a second record of
the same step from the same node with other content (``replayed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from hashlib import sha256
from typing import Any

import numpy as np

from models.secagg.messages import Advertise, MaskedInput, RoundSpec, ShareBundle, UnmaskReply
from schemas.identity import KeyVerifier
from schemas.signing import SignatureError

__all__ = [
    "ROUNDS_TOPIC",
    "ROUTED_TOPIC",
    "STEP_TOPICS",
    "STEPS",
    "StepRefused",
    "advertise_of",
    "confirm_record",
    "confirmation_of",
    "confirmed_by",
    "require_confirmed",
    "routed_partition",
    "routed_to",
    "keys_record",
    "masked_of",
    "masked_record",
    "shares_of",
    "shares_record",
    "unmask_of",
    "unmask_record",
    "vector_bytes",
    "vector_of",
]

#: the merger's phase records (nodes read them); keyed by model name, so one partition orders them
ROUNDS_TOPIC = "secagg-rounds"
#: merger -> one node: phase ``input`` with the ciphertexts addressed to it; partitioned by receiver
ROUTED_TOPIC = "secagg-routed"
#: node -> merger, one topic per step (contract -> logical topic name)
STEP_TOPICS = {
    "SecAggKeys": "secagg-keys",
    "SecAggShares": "secagg-shares",
    "SecAggMasked": "secagg-masked",
    "SecAggUnmask": "secagg-unmask",
    "SecAggConfirm": "secagg-confirm",
}
STEPS = tuple(STEP_TOPICS)
KEY_BYTES = 32


class StepRefused(ValueError):
    """A step record the round cannot take; ``reason_code`` goes on the dead letter.

    Codes: ``invalid-secagg`` (malformed), ``replayed`` (a round that is over, or
    a second record of one step with other content), ``secagg-unknown-round``,
    ``secagg-late`` (its step closed: the node counts as dropped),
    ``secagg-not-in-round``, ``secagg-wrong-model``, ``duplicate`` (an increment
    already merged).
    """

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def vector_bytes(vector: np.ndarray) -> bytes:
    """Ring elements as little-endian uint64 (what SecAggMasked carries)."""
    return np.asarray(vector, dtype="<u8").tobytes()


def vector_of(data: bytes, length: int) -> np.ndarray:
    """The ring elements back, or :class:`StepRefused` when the size is not ``length``."""
    if len(data) != 8 * length:
        raise StepRefused(
            "invalid-secagg", f"a masked input of {len(data)} bytes, the round needs {8 * length}"
        )
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def routed_partition(node_id: str, partitions: int) -> int:
    """The ``secagg-routed`` partition of ``node_id``'s records: a stable function of the id
    alone (SHA-256, not Python's salted ``hash``), so the merger and the node agree with no
    word exchanged; the node assigns this one partition only."""
    if partitions < 1:
        raise ValueError(f"{ROUTED_TOPIC} needs at least one partition, got {partitions}")
    return int.from_bytes(sha256(node_id.encode()).digest()[:8], "big") % partitions


def routed_to(record: Mapping[str, Any]) -> str | None:
    """The one node an ``input`` phase record is addressed to (None: a round-wide record)."""
    if record["phase"] != "input":
        return None
    receivers = list(record["routed"])
    if len(receivers) != 1:
        raise ValueError(f"an input record goes to one node, this one names {receivers}")
    return str(receivers[0])


def _head(round_id: str, node_id: str, now_ms: int) -> dict[str, Any]:
    return {"round_id": round_id, "node_id": node_id, "created_at": int(now_ms)}


def keys_record(  # noqa: PLR0913 - the record's fields
    round_id: str,
    ad: Advertise,
    *,
    model_name: str,
    sequence: int,
    base_version: int,
    features: Sequence[str],
    now_ms: int,
) -> dict[str, Any]:
    return _head(round_id, ad.node_id, now_ms) | {
        "model_name": model_name,
        "sequence": int(sequence),
        "base_version": int(base_version),
        "features": list(features),
        "cipher_public": ad.cipher_public,
        "mask_public": ad.mask_public,
    }


def advertise_of(record: Mapping[str, Any]) -> Advertise:
    for field in ("cipher_public", "mask_public"):
        if len(record[field]) != KEY_BYTES:
            raise StepRefused("invalid-secagg", f"{field} is not a 32-byte X25519 public key")
    return Advertise(
        record["node_id"], bytes(record["cipher_public"]), bytes(record["mask_public"])
    )


def shares_record(round_id: str, bundle: ShareBundle, now_ms: int) -> dict[str, Any]:
    return _head(round_id, bundle.sender, now_ms) | {"ciphertexts": dict(bundle.ciphertexts)}


def shares_of(record: Mapping[str, Any]) -> ShareBundle:
    return ShareBundle(record["node_id"], {k: bytes(v) for k, v in record["ciphertexts"].items()})


def masked_record(round_id: str, masked: MaskedInput, now_ms: int) -> dict[str, Any]:
    return _head(round_id, masked.node_id, now_ms) | {"vector": vector_bytes(masked.vector)}


def masked_of(record: Mapping[str, Any], length: int) -> MaskedInput:
    return MaskedInput(record["node_id"], vector_of(record["vector"], length))


def unmask_record(round_id: str, reply: UnmaskReply, now_ms: int) -> dict[str, Any]:
    return _head(round_id, reply.node_id, now_ms) | {
        "seed_shares": dict(reply.seed_shares),
        "key_shares": dict(reply.key_shares),
    }


def unmask_of(record: Mapping[str, Any]) -> UnmaskReply:
    try:
        return UnmaskReply(
            record["node_id"],
            {k: bytes(v) for k, v in record["seed_shares"].items()},
            {k: bytes(v) for k, v in record["key_shares"].items()},
        )
    except ValueError as e:  # ModelError: both secrets of one node
        raise StepRefused("invalid-secagg", str(e)) from e


def confirm_record(round_id: str, node_id: str, survivors: Sequence[str], now_ms: int
                   ) -> dict[str, Any]:  # fmt: skip
    return _head(round_id, node_id, now_ms) | {"survivors": sorted(survivors)}


def confirmation_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the unmask record carries of one SecAggConfirm: enough to verify it again."""
    return {
        "node_id": record["node_id"],
        "created_at": int(record["created_at"]),
        "key_id": record.get("key_id"),
        "signature": record.get("signature"),
    }


def confirmed_by(
    record: Mapping[str, Any], verifier: KeyVerifier | None
) -> tuple[set[str], list[str]]:
    """The survivors whose confirmation of exactly ``record["nodes"]`` verifies, and why the
    others do not. Each is rebuilt as its SecAggConfirm and checked against the trust file
    (``verifier``; None: no trust file, each one counts as given)."""
    survivors = sorted(record["nodes"])
    good: set[str] = set()
    bad: list[str] = []
    for c in record["confirmations"]:
        node = c["node_id"]
        if node not in survivors or node in good:
            bad.append(f"{node!r}: not a survivor, or twice")
            continue
        confirm = confirm_record(record["round_id"], node, survivors, c["created_at"])
        try:
            if verifier is not None:
                verifier.check(confirm | {"key_id": c["key_id"], "signature": c["signature"]})
        except SignatureError as e:
            bad.append(f"{node!r}: {e.reason_code}")
            continue
        good.add(node)
    return good, bad


def require_confirmed(
    record: Mapping[str, Any], spec: RoundSpec, verifier: KeyVerifier | None
) -> set[str]:
    """A node's check of an ``unmask`` record before it reveals anything: enough survivors
    confirmed exactly this survivor set -- at least the round's ``min_survivors`` and more
    than half the roster, so no two different sets can both pass while every honest node
    confirms only one. Else :class:`StepRefused` ``secagg-unconfirmed``."""
    good, bad = confirmed_by(record, verifier)
    need = max(spec.min_survivors, len(spec.graph.nodes) // 2 + 1)
    if len(good) < need:
        why = f" (refused: {'; '.join(bad)})" if bad else ""
        raise StepRefused(
            "secagg-unconfirmed",
            f"round {record['round_id']!r}: {len(good)} valid confirmations of survivors "
            f"{sorted(record['nodes'])}, a node reveals shares at {need}{why}",
        )
    return good

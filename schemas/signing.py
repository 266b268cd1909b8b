"""Signed summaries: HMAC-SHA256 over a WeightSummary, with the key id in the message.

A node signs each summary it publishes with its own key (``PRISM_SIGNING_KEY_ID``
+ ``PRISM_SIGNING_KEY``); the merger holds the trusted keys
(``PRISM_TRUSTED_KEYS``: key id -> secret + the node ids that key may sign for)
and refuses, to the dead-letter topic, what does not verify:

=====================  ==========================================================
reason code            meaning
=====================  ==========================================================
``unsigned``           no ``key_id`` / ``signature`` while signatures are required
``unknown-key``        the ``key_id`` is not a trusted key
``bad-signature``      the MAC does not match: forged, tampered, or a wrong key
``key-not-for-node``   a valid MAC, but that key may not sign for this ``node_id``
``revoked-key``        public keys only: the key was revoked (schemas/identity.py)
``expired-key``        public keys only: past the key's not-after date
=====================  ==========================================================

(``replayed``, an old sequence, is the merger's: it needs the node's history.)

What is signed: every field of the record but ``signature`` -- node_id, tier,
region, sequence, base_version, created_at, state, metrics, meta and key_id --
encoded canonically (schemas/canonical.py). A contract change that adds a
signed field must bump :data:`SIGNING_VERSION`.

HMAC suits a small deployment with one operator: the merger holds every
node's secret, so it could forge any node's update. Public keys
(schemas/identity.py) take that power away and add rotation and revocation.

Sign the record *before* it is encoded and stored (the edge outbox), so a
resend is byte-identical and the merger counts it as a duplicate.

Examples
--------
>>> from schemas import Codec
>>> record = {"node_id": "store-1", "tier": "edge", "sequence": 1, "base_version": 0,
...           "created_at": 1700000000000, "state": {"model_name": "m", "model_kind": "k",
...           "features": [], "n_samples": 0, "tensors": []}}
>>> signed = Signer("store-1-k1", "0123456789abcdef0123").sign(record)
>>> signed["key_id"], len(signed["signature"])
('store-1-k1', 32)
>>> keys = {"store-1-k1": TrustedKey("0123456789abcdef0123", ("store-1",))}
>>> wire = Codec().decode(Codec().encode("WeightSummary", signed))
>>> Verifier(keys).check(wire) == signed["signature"]
True
>>> try:
...     Verifier(keys).check(dict(wire, sequence=2))
... except SignatureError as e:
...     print(e.reason_code)
bad-signature
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.canonical import SIGNED_FIELDS as _FIELDS
from schemas.canonical import SIGNING_VERSION, canonical_bytes

__all__ = [
    "REASON_CODES",
    "SIGNED_FIELDS",
    "SIGNING_VERSION",
    "SignatureError",
    "Signer",
    "TrustedKey",
    "Verifier",
    "canonical_bytes",
    "parse_trusted_keys",
    "signer_from",
]

REASON_CODES = (
    "unsigned",
    "unknown-key",
    "bad-signature",
    "key-not-for-node",
    "revoked-key",
    "expired-key",
)
SIGNED_FIELDS = _FIELDS["WeightSummary"]
MIN_SECRET_BYTES = 16


class SignatureError(ValueError):
    """A summary's signature does not hold; ``reason_code`` goes on the dead letter."""

    def __init__(self, reason_code: str, message: str) -> None:
        if reason_code not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason_code!r}")
        super().__init__(message)
        self.reason_code = reason_code


def _mac(secret: bytes, record: Mapping[str, Any]) -> bytes:
    return hmac.new(secret, canonical_bytes(record), hashlib.sha256).digest()


def _secret_bytes(secret: str | bytes, what: str) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{what} is shorter than {MIN_SECRET_BYTES} bytes; make one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return raw


class Signer:
    """One node's key: adds ``key_id`` and ``signature`` to the records it is given."""

    def __init__(self, key_id: str, secret: str | bytes) -> None:
        if not key_id:
            raise ValueError("a signing key needs a key id (PRISM_SIGNING_KEY_ID)")
        self.key_id = key_id
        self._secret = _secret_bytes(secret, f"signing key {key_id!r}")

    def __repr__(self) -> str:  # never show the secret
        return f"Signer(key_id={self.key_id!r})"

    def sign(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with this key's id and the MAC over everything else."""
        unsigned = dict(record, key_id=self.key_id, signature=None)
        return dict(unsigned, signature=_mac(self._secret, unsigned))


@dataclass(frozen=True)
class TrustedKey:
    """A key the merger accepts, and the node ids (glob patterns) it may sign for."""

    secret: str | bytes
    nodes: tuple[str, ...]

    def __repr__(self) -> str:  # never show the secret
        return f"TrustedKey(nodes={self.nodes!r})"

    def allows(self, node_id: str) -> bool:
        return any(fnmatch.fnmatchcase(node_id, pattern) for pattern in self.nodes)


class Verifier:
    """The merger's side: which keys are trusted, and whether unsigned summaries pass.

    ``required`` defaults to "when any key is trusted". Not required (a
    migration), unsigned summaries pass as before, but a signed one must
    still verify.
    """

    def __init__(self, keys: Mapping[str, TrustedKey], *, required: bool | None = None) -> None:
        self.keys = {
            kid: (_secret_bytes(k.secret, f"trusted key {kid!r}"), k) for kid, k in keys.items()
        }
        self.required = bool(keys) if required is None else required
        if self.required and not self.keys:
            raise ValueError(
                "signed summaries are required but no key is trusted: set "
                "PRISM_TRUSTED_KEYS or PRISM_REQUIRE_SIGNED=false"
            )

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.required

    def check(self, record: Mapping[str, Any]) -> bytes | None:
        """The verified signature (None: unsigned, and allowed); else :class:`SignatureError`."""
        key_id, signature = record.get("key_id"), record.get("signature")
        node = record.get("node_id")
        if key_id is None or signature is None:
            if self.required:
                raise SignatureError(
                    "unsigned", f"summary of node {node!r} is not signed; signatures are required"
                )
            return None
        if not self.keys:  # nothing to check against: treated as unsigned
            return None
        found = self.keys.get(key_id)
        if found is None:
            raise SignatureError("unknown-key", f"key id {key_id!r} is not a trusted key")
        secret, trusted = found
        if not hmac.compare_digest(_mac(secret, record), bytes(signature)):
            raise SignatureError(
                "bad-signature",
                f"signature of node {node!r} does not verify with key {key_id!r} "
                "(forged, altered after signing, or signed with another secret)",
            )
        if not isinstance(node, str) or not trusted.allows(node):
            raise SignatureError(
                "key-not-for-node", f"key {key_id!r} may not sign for node {node!r}"
            )
        return bytes(signature)


def parse_trusted_keys(text: str | None) -> dict[str, TrustedKey]:
    """``PRISM_TRUSTED_KEYS``: ``{"key-id": {"secret": "...", "nodes": ["store-1", "c/*"]}}``.

    Errors name the key id, never a secret.

    >>> keys = parse_trusted_keys('{"k1": {"secret": "0123456789abcdef", "nodes": ["s-*"]}}')
    >>> keys["k1"].allows("s-3"), keys["k1"].allows("t-3")
    (True, False)
    """
    if text is None or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError("PRISM_TRUSTED_KEYS is not valid JSON") from None  # no echo of secrets
    if not isinstance(raw, dict):
        raise ValueError('PRISM_TRUSTED_KEYS must be {"key-id": {"secret": ..., "nodes": [...]}}')
    keys = {}
    for kid, entry in raw.items():
        ok = isinstance(entry, dict) and isinstance(entry.get("secret"), str)
        nodes = entry.get("nodes") if isinstance(entry, dict) else None
        if isinstance(nodes, str):
            nodes = [nodes]
        if not ok or not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ValueError(
                f"PRISM_TRUSTED_KEYS[{kid!r}] needs a string 'secret' and a list 'nodes' "
                "of node ids or glob patterns"
            )
        keys[str(kid)] = TrustedKey(entry["secret"], tuple(nodes))
        _secret_bytes(entry["secret"], f"trusted key {kid!r}")
    return keys


def signer_from(key_id: str | None, secret: str | None) -> Signer | None:
    """The node's signer from its settings; None when it has no key."""
    if key_id is None and secret is None:
        return None
    if key_id is None or secret is None:
        raise ValueError("set both PRISM_SIGNING_KEY_ID and PRISM_SIGNING_KEY, or neither")
    return Signer(key_id, secret)

"""Public-key identities: Ed25519 signatures checked against a trust file.

With HMAC (schemas/signing.py) the merger holds every node's secret and so
could forge any node's update. Here each node, central shard and merger signs
with its own *private* key and every verifier holds *public* keys only, read
from a trust file (JSON, public, safe to copy to every edge)::

    {"store-1-2026a": {"public_key": "<base64 of the raw 32 bytes>",
                       "nodes": ["store-1"], "not_after": "2027-06-30",
                       "revoked_at": null, "reason": null}}

``nodes`` are node ids or glob patterns. A GlobalModel is signed for the
identity ``global:<model_name>``, so only a key listed for ``global:*`` (the
merger's) can sign a global, and a stolen edge key cannot push one.

Time is the verifier's clock, never the record's ``created_at``: that field is
signed by the very key we may have stopped trusting, so a thief could
backdate it. Rotation is two entries for one node whose validity overlaps;
both verify until the old one's ``not_after``. A date without a time means
the whole of that day (UTC).

Checks run in this order, each with its reason code: ``unsigned``,
``unknown-key``, ``bad-signature`` (forged, tampered, or another key),
``revoked-key`` (from ``revoked_at`` on), ``expired-key`` (after
``not_after``), ``key-not-for-node``. The signature is checked before the
key's status so that ``revoked-key`` counts only records the revoked key
really signed: a metric that says someone still uses it.

Examples
--------
>>> key = generate_private_key()
>>> trust = parse_trust_file(json.dumps({"k1": trust_entry(key, ["store-*"], "2999-01-01")}))
>>> record = {"node_id": "store-1", "tier": "edge", "sequence": 1, "base_version": 0,
...           "created_at": 1700000000000, "state": {"model_name": "m", "model_kind": "k",
...           "features": [], "n_samples": 0, "tensors": []}}
>>> signed = KeySigner("k1", key).sign(record)
>>> len(signed["signature"])
64
>>> KeyVerifier(trust).check(signed) == signed["signature"]
True
>>> try:
...     KeyVerifier(trust).check(dict(signed, node_id="plant-1"))
... except SignatureError as e:
...     print(e.reason_code)
bad-signature
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from schemas.canonical import canonical_bytes
from schemas.signing import SignatureError

__all__ = [
    "KeySigner",
    "KeyVerifier",
    "TrustEntry",
    "generate_private_key",
    "load_private_key",
    "load_trust_file",
    "parse_trust_file",
    "public_key_b64",
    "signed_identity",
    "trust_entry",
    "write_private_key",
    "write_trust_file",
]


def signed_identity(record: Mapping[str, Any], contract: str) -> str | None:
    """Who a record claims to come from: a node id, or ``global:<model>`` for a global and
    for a secure round's phase record (both the merger's word on the model)."""
    if contract in ("GlobalModel", "SecAggRound"):
        name = record.get("model_name")
        return f"global:{name}" if isinstance(name, str) else None
    node = record.get("node_id")
    return node if isinstance(node, str) else None


# -- keys --------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The trust file's form of a public key: base64 of its raw 32 bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, created 0600 (never widened, even for a moment); refuses to overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A node's key file; errors name the file, never its content."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise ValueError(f"cannot read the private key file {path}: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{path} is not an unencrypted PEM private key (make one with `prism keys generate`)"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


class KeySigner:
    """One identity's private key: adds ``key_id`` and an Ed25519 ``signature``."""

    def __init__(self, key_id: str, key: Ed25519PrivateKey) -> None:
        if not key_id:
            raise ValueError("a signing key needs a key id (PRISM_SIGNING_KEY_ID)")
        self.key_id = key_id
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return f"KeySigner(key_id={self.key_id!r})"

    def sign(self, record: Mapping[str, Any], contract: str = "WeightSummary") -> dict[str, Any]:
        """A copy of ``record`` with this key's id and the signature over everything else."""
        unsigned = dict(record, key_id=self.key_id, signature=None)
        return dict(unsigned, signature=self._key.sign(canonical_bytes(unsigned, contract)))


# -- the trust file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustEntry:
    """A public key, whom it may sign for, and until when (epoch seconds)."""

    public_key: Ed25519PublicKey
    nodes: tuple[str, ...]
    not_after: float
    revoked_at: float | None = None
    reason: str | None = None

    def allows(self, identity: str) -> bool:
        return any(fnmatch.fnmatchcase(identity, pattern) for pattern in self.nodes)


def _instant(value: Any, what: str, *, end_of_day: bool) -> float:
    """ISO 8601 to epoch seconds; naive means UTC; a bare date is that whole day."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 date or time, e.g. 2027-06-30")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return (start + timedelta(days=1 if end_of_day else 0)).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"{what}: {value!r} is not an ISO 8601 date or time") from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _public_key(value: Any, what: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} must be base64 of a raw 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def _entry(kid: str, raw: Any) -> TrustEntry:
    what = f"trust file key {kid!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be an object with public_key, nodes and not_after")
    nodes = raw.get("nodes")
    if isinstance(nodes, str):
        nodes = [nodes]
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
        raise ValueError(f"{what}: 'nodes' must be a non-empty list of node ids or globs")
    revoked = raw.get("revoked_at")
    return TrustEntry(
        public_key=_public_key(raw.get("public_key"), f"{what}: 'public_key'"),
        nodes=tuple(nodes),
        not_after=_instant(raw.get("not_after"), f"{what}: 'not_after'", end_of_day=True),
        revoked_at=None
        if revoked is None
        else _instant(revoked, f"{what}: 'revoked_at'", end_of_day=False),
        reason=raw.get("reason"),
    )


def parse_trust_file(text: str) -> dict[str, TrustEntry]:
    """The trust file's JSON: ``{"key-id": {"public_key", "nodes", "not_after", ...}}``."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the trust file is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError('the trust file must be {"key-id": {"public_key": ..., ...}}')
    return {str(kid): _entry(str(kid), entry) for kid, entry in raw.items()}


def load_trust_file(path: Path) -> dict[str, TrustEntry]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"cannot read the trust file {path}: {e.strerror}") from e
    try:
        return parse_trust_file(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def trust_entry(
    key: Ed25519PrivateKey | Ed25519PublicKey, nodes: list[str], not_after: str
) -> dict[str, Any]:
    """The JSON entry that trusts ``key`` for ``nodes`` until ``not_after``."""
    entry = {"public_key": public_key_b64(key), "nodes": list(nodes), "not_after": not_after}
    _entry("new", entry)  # the same rules as when it is read back
    return entry


def write_trust_file(path: Path, trust: Mapping[str, Any]) -> None:
    """Replace the trust file whole (a temporary file, then a rename), 0644: public keys only.

    Checked first by the rules it is read back by (ValueError), and never written in
    place, so a verifier that reloads it never reads half an edit.
    """
    parse_trust_file(json.dumps(trust))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(trust, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# -- verification ------------------------------------------------------------------------------


class KeyVerifier:
    """Checks records of one contract against public keys at the verifier's clock.

    ``required`` defaults to "when any key is trusted"; not required (a
    migration), unsigned records pass, but a signed one must still verify.
    """

    def __init__(
        self,
        keys: Mapping[str, TrustEntry],
        *,
        contract: str = "WeightSummary",
        required: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = dict(keys)
        self.contract = contract
        self.required = bool(keys) if required is None else required
        self.clock = clock
        if self.required and not self.keys:
            raise ValueError("signatures are required but the trust file lists no key")

    def __repr__(self) -> str:
        return f"KeyVerifier({self.contract}, keys={sorted(self.keys)}, required={self.required})"

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.required

    def check(self, record: Mapping[str, Any]) -> bytes | None:
        """The verified signature (None: unsigned, and allowed); else :class:`SignatureError`."""
        key_id, signature = record.get("key_id"), record.get("signature")
        who = signed_identity(record, self.contract)
        if key_id is None or signature is None:
            if self.required:
                raise SignatureError("unsigned", f"{self.contract} of {who!r} is not signed")
            return None
        entry = self.keys.get(key_id)
        if entry is None:
            raise SignatureError("unknown-key", f"key id {key_id!r} is not in the trust file")
        try:
            entry.public_key.verify(bytes(signature), canonical_bytes(record, self.contract))
        except InvalidSignature:
            raise SignatureError(
                "bad-signature",
                f"{self.contract} of {who!r} does not verify with key {key_id!r} "
                "(forged, altered after signing, or signed with another key)",
            ) from None
        now = self.clock()
        if entry.revoked_at is not None and now >= entry.revoked_at:
            why = f": {entry.reason}" if entry.reason else ""
            raise SignatureError("revoked-key", f"key {key_id!r} is revoked{why}")
        if now >= entry.not_after:
            raise SignatureError("expired-key", f"key {key_id!r} is past its not_after date")
        if who is None or not entry.allows(who):
            raise SignatureError("key-not-for-node", f"key {key_id!r} may not sign for {who!r}")
        return bytes(signature)

"""X25519 key pairs and the 32-byte seeds two nodes agree on.

Every node of a round makes two fresh key pairs (Bonawitz et al. 2017,
section 4): one whose agreement keys the encryption of its shares to a
neighbour, one whose agreement seeds the pairwise mask they share. Raw
Diffie-Hellman output is not uniform, so it goes through HKDF(SHA-256) with
the round id and the purpose as ``info``: a seed of one round or purpose says
nothing about another's. All of it is the ``cryptography`` package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from models.errors import ModelError

__all__ = ["Entropy", "KeyPair", "agree", "derive_seed"]

#: where fresh secret bytes come from; tests inject a seeded one
Entropy = Callable[[int], bytes]
SEED_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw 32-byte strings (the secret one is shareable)."""

    secret: bytes
    public: bytes

    @classmethod
    def generate(cls, entropy: Entropy = os.urandom) -> KeyPair:
        return cls.from_secret(entropy(32))

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        """The pair of a raw secret key (how the server rebuilds a dropped node's key)."""
        try:
            key = X25519PrivateKey.from_private_bytes(secret)
        except ValueError as e:
            raise ModelError(f"not an X25519 secret key: {e}") from e
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(secret, public)


def agree(secret: bytes, peer_public: bytes, *, info: bytes) -> bytes:
    """The 32-byte seed ``secret``'s owner and ``peer_public``'s owner both derive."""
    try:
        key = X25519PrivateKey.from_private_bytes(secret)
        shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:
        raise ModelError(f"key agreement failed (bad X25519 key?): {e}") from e
    return derive_seed(shared, info=info)


def derive_seed(material: bytes, *, info: bytes) -> bytes:
    """HKDF(SHA-256) of ``material`` to one 32-byte seed for the purpose ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(material)

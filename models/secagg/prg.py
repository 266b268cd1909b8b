"""A seed stretched into a mask vector: the ChaCha20 keystream as uint64s.

Encrypting zero bytes with ChaCha20 yields its keystream, which is
indistinguishable from uniform to anyone without the seed; read as uint64 it
is a uniform mask over the fixed-point ring. Each seed masks one vector of
one round (seeds are derived per round), so the fixed nonce is never reused
with another message.

>>> a = mask(bytes(32), 3)
>>> a.dtype.name, len(a), bool((a == mask(bytes(32), 3)).all())
('uint64', 3, True)
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from models.errors import ModelError

__all__ = ["mask"]

_NONCE = bytes(16)  # cryptography's ChaCha20 takes a 16-byte counter+nonce


def mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random uint64s from a 32-byte seed."""
    if len(seed) != 32:
        raise ModelError(f"a mask seed is 32 bytes, got {len(seed)}")
    if length < 0:
        raise ModelError("a mask has a non-negative length")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)

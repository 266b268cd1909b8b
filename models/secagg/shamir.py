"""t-of-n Shamir sharing of 32-byte secrets over the prime field 2^521 - 1.

A secret is the constant term of a random polynomial of degree ``t - 1``; a
share is the polynomial at a non-zero point ``x``. Any ``t`` shares determine
the polynomial (Lagrange interpolation at 0); any ``t - 1`` are consistent
with every possible secret, so they say nothing about it. This is field
arithmetic, not a cipher: Python integers do it exactly. The Mersenne prime
2^521 - 1 is larger than every 256-bit secret, so no secret needs reducing.

Reference: A. Shamir, "How to share a secret", CACM 22(11), 1979.

>>> shares = split(b"s" * 32, threshold=2, points=[1, 2, 3], entropy=lambda n: bytes(n))
>>> combine([shares[0], shares[2]], threshold=2) == b"s" * 32
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from models.errors import ModelError
from models.secagg.keys import Entropy

__all__ = ["PRIME", "SHARE_BYTES", "Share", "combine", "split"]

PRIME = 2**521 - 1
SHARE_BYTES = 66  # a field element, big-endian
SECRET_BYTES = 32


@dataclass(frozen=True)
class Share:
    """The polynomial at ``x`` (a node's position in the round, from 1)."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        y = int.from_bytes(data, "big")
        if len(data) != SHARE_BYTES or y >= PRIME:
            raise ModelError("a Shamir share is one 66-byte field element")
        return cls(x, y)


def split(
    secret: bytes, *, threshold: int, points: Sequence[int], entropy: Entropy = os.urandom
) -> list[Share]:
    """Shares of ``secret`` at ``points``; any ``threshold`` of them rebuild it."""
    if len(secret) != SECRET_BYTES:
        raise ModelError(f"Shamir sharing here is for 32-byte secrets, got {len(secret)}")
    if not 1 <= threshold <= len(points):
        raise ModelError(f"threshold {threshold} must be between 1 and {len(points)} shares")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ModelError("share points must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [int.from_bytes(entropy(80), "big") % PRIME for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in points]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    y = 0
    for c in reversed(coefficients):  # Horner
        y = (y * x + c) % PRIME
    return y


def combine(shares: Sequence[Share], *, threshold: int) -> bytes:
    """The secret from ``threshold`` or more shares; ModelError with fewer."""
    distinct = {s.x: s for s in shares}
    if len(distinct) != len(shares):
        raise ModelError("two shares at the same point: a share was duplicated")
    if len(shares) < threshold:
        raise ModelError(
            f"{len(shares)} shares cannot rebuild a secret shared with threshold {threshold}"
        )
    secret = interpolate_at_zero(list(shares)[:threshold])
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ModelError("the shares do not agree on a 32-byte secret: a share is corrupt")
    return secret.to_bytes(SECRET_BYTES, "big")


def interpolate_at_zero(shares: Sequence[Share]) -> int:
    """Lagrange interpolation at 0 of the polynomial through ``shares``."""
    total = 0
    for i, si in enumerate(shares):
        num, den = 1, 1
        for j, sj in enumerate(shares):
            if i != j:
                num = num * (-sj.x) % PRIME
                den = den * (si.x - sj.x) % PRIME
        total = (total + si.y * num * pow(den, -1, PRIME)) % PRIME
    return total

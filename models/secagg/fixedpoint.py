"""Floats as integers mod 2^64, so that masks added and removed cancel exactly.

Masking needs a group: a float sum cannot "cancel" a random float exactly,
but integers modulo 2^64 wrap around (numpy ``uint64`` does it natively) and
``x + m - m == x`` holds bit for bit. A value ``v`` becomes the integer ``X =
round(v * 2**frac_bits)``.

One 64-bit word is not enough precision: the scaler's variance is a sum of
squares minus a square, and a feature that barely varies (variance 1e-6)
loses every digit to cancellation at 2^-16. So ``X`` is carried as two
words, ``X = hi * 2**32 + lo`` with ``0 <= lo < 2**32``: each word is summed
(and masked) on its own, the low words cannot overflow for fewer than 2^32
nodes, and the server rebuilds the exact integer sum as ``sum(hi) * 2**32 +
sum(lo)`` -- a 96-bit ring from 64-bit arithmetic, without carries. Values
must lie in ``[-bound, bound]``; a sum of ``n`` encodings decodes exactly as
long as ``n`` <= :meth:`FixedPoint.max_participants`. Values outside the
range are refused (a node clips before encoding if it wants to), never
silently wrapped: a wrapped value would decode as a wildly wrong global.

Each value is rounded by at most ``2**-(frac_bits + 1)``; a decoded sum of
``n`` values is within ``n`` times that of the float sum (then rounded once
to float64).

>>> fp = FixedPoint(frac_bits=16, bound=2.0**40)
>>> total = fp.encode([1.5, -2.25]) + fp.encode([0.25, 1.0])
>>> len(total), fp.decode(total, participants=2).tolist()
(4, [1.75, -1.25])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import ModelError

__all__ = ["LIMB_BITS", "FixedPoint"]

LIMB_BITS = 32  # the low word's width


@dataclass(frozen=True)
class FixedPoint:
    """The agreed encoding of a round's values (scale and range); 2 words per value."""

    frac_bits: int = 40
    bound: float = 2.0**47

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 60 or not self.bound > 0:
            raise ModelError("fixed point needs 0 <= frac_bits <= 60 and a positive bound")
        if self.bound * 2.0**self.frac_bits >= 2.0**94:
            raise ModelError("bound * 2**frac_bits must stay below 2**94")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def width(self, n_values: int) -> int:
        """Ring elements that carry ``n_values`` values."""
        return 2 * n_values

    def max_participants(self) -> int:
        """How many encodings may be summed before a high word could wrap."""
        hi = int(np.ceil(self.bound * self.scale / 2.0**LIMB_BITS)) + 1
        return min((2**63 - 1) // hi, 2**32 - 1)

    def encode(self, values: np.ndarray | list[float]) -> np.ndarray:
        """``values`` as ``[lo..., hi...]`` uint64 words; ModelError outside the range."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise ModelError("secure aggregation cannot encode NaN or inf")
        worst = float(np.max(np.abs(v))) if v.size else 0.0
        if worst > self.bound:
            raise ModelError(
                f"value {worst:.4g} is outside the secure-aggregation range +-{self.bound:.4g}: "
                "clip it on the node or choose a FixedPoint with a larger bound"
            )
        x = np.rint(v * self.scale)  # an integer-valued float: scaling by 2**k is exact
        hi = np.floor(x / 2.0**LIMB_BITS)
        lo = x - hi * 2.0**LIMB_BITS  # exact: an integer in [0, 2**32)
        words = np.concatenate([lo.astype(np.int64), hi.astype(np.int64)])
        return words.view(np.uint64)

    def decode(self, total: np.ndarray, *, participants: int) -> np.ndarray:
        """The float sums of ``participants`` encodings summed word by word mod 2^64."""
        if participants > self.max_participants():
            raise ModelError(
                f"{participants} participants could overflow this encoding "
                f"(at most {self.max_participants()}): lower frac_bits or bound"
            )
        words = np.asarray(total, dtype=np.uint64)
        n = len(words) // 2
        lo, hi = words[:n], words[n:].view(np.int64)
        exact = [(int(h) << LIMB_BITS) + int(low) for h, low in zip(hi, lo, strict=True)]
        return np.array([x / self.scale for x in exact], dtype=np.float64)

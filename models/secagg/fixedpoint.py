"""Floats as integers mod 2^64, so that masks added and removed cancel exactly.

Masking needs a group: a float sum cannot "cancel" a random float exactly,
but integers modulo 2^64 wrap around (numpy ``uint64`` does it natively) and
``x + m - m == x`` holds bit for bit. A value ``v`` is encoded as
``round(v * 2**frac_bits)`` in two's complement; a sum of ``n`` encodings
decodes correctly as long as the true sum's magnitude stays below 2^63, so
each value must lie in ``[-bound, bound]`` with ``n * bound * 2**frac_bits <
2**63``. Values outside the range are refused (a node clips before encoding
if it wants to), never silently wrapped: a wrapped value would decode as a
wildly wrong global.

The precision of one encoded value is ``2**-(frac_bits + 1)``; the error of a
decoded sum of ``n`` values is at most ``n`` times that.

>>> fp = FixedPoint(frac_bits=16, bound=2.0**40)
>>> total = fp.encode([1.5, -2.25]) + fp.encode([0.25, 1.0])
>>> fp.decode(total, participants=2).tolist()
[1.75, -1.25]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import ModelError

__all__ = ["FixedPoint", "RING_BITS"]

RING_BITS = 64


@dataclass(frozen=True)
class FixedPoint:
    """The agreed encoding of one block of values (scale and range)."""

    frac_bits: int = 16
    bound: float = 2.0**40

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 52 or not self.bound > 0:
            raise ModelError("fixed point needs 0 <= frac_bits <= 52 and a positive bound")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def max_participants(self) -> int:
        """How many encodings may be summed before the sum could wrap."""
        return max(0, int(2.0**63 // (self.bound * self.scale)))

    def encode(self, values: np.ndarray | list[float]) -> np.ndarray:
        """``values`` as uint64 ring elements; ModelError outside ``[-bound, bound]``."""
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ModelError("secure aggregation cannot encode NaN or inf")
        worst = float(np.max(np.abs(v))) if v.size else 0.0
        if worst > self.bound:
            raise ModelError(
                f"value {worst:.4g} is outside the secure-aggregation range +-{self.bound:.4g}: "
                "clip it on the node or choose a FixedPoint with a larger bound"
            )
        return np.rint(v * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, total: np.ndarray, *, participants: int) -> np.ndarray:
        """The float sum of ``participants`` encodings summed mod 2^64."""
        if participants > self.max_participants():
            raise ModelError(
                f"{participants} participants could overflow this encoding "
                f"(at most {self.max_participants()}): lower frac_bits or bound"
            )
        return np.asarray(total, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale

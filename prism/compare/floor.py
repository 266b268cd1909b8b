"""The floor of a poisoning run: a perfect screen, which only a simulation can build.

Under ``--poison FRACTION:excluded`` the attacking sites send honest summaries
and the merger's strategy sets their learned updates aside by name, as a
screen that never errs would; their exact statistics still merge, as they do
under every attack (:mod:`models.poisoning`). What remains is the cost of
losing those sites' learned updates, which no aggregation rule can win back:
an attacked run is read against it as well as against its clean run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from models.strategies import AggregateResult, NodeVector

__all__ = ["PerfectScreen"]

REASON = "perfect screen: an attacker of the excluded floor (simulation only)"


class PerfectScreen:
    """``inner`` over every update but those of ``nodes`` (node ids), which are excluded."""

    def __init__(self, inner: Any, nodes: Collection[str]) -> None:
        self.inner, self.nodes = inner, frozenset(nodes)
        self.name = inner.name

    def _named(self, key: str) -> bool:
        return key.split("#", 1)[0] in self.nodes  # merge_learned makes repeated ids unique

    def aggregate(
        self, updates: Sequence[NodeVector], current: np.ndarray | None = None
    ) -> AggregateResult:
        kept = [u for u in updates if not self._named(u.node_id)]
        if not kept:  # a round of attackers only: their summaries are honest in this run
            return self.inner.aggregate(updates, current)
        result = self.inner.aggregate(kept, current)
        out = {u.node_id: REASON for u in updates if self._named(u.node_id)}
        return AggregateResult(result.vector, result.weights, result.excluded | out)

"""Who shares with whom: the SecAgg+ neighbour graph and its threshold.

Plain SecAgg (Bonawitz et al. 2017) has every node agree masks with and
share secrets to every other node: O(n^2) keys, shares and PRG work per
round. SecAgg+ (Bell et al. 2020) replaces the complete graph with a sparse
random one of degree ``k = O(log n)`` -- a Harary graph over a permutation of
the nodes -- and shares each node's secrets among its ``k`` neighbours only.
Here the permutation is public and deterministic: the round's node ids
ordered by SHA-256 of (round id, node id), so every node and the server build
the same graph from the round's roster without another message.

The threshold ``t`` of each neighbourhood is ``k`` minus the dropouts the
round must survive (``max_dropout`` of ``k``, rounded up: in a small round
one dropout is already 30% of a neighbourhood), and never less than a
majority of the neighbourhood.

>>> g = Graph.build("r1", ["a", "b", "c", "d", "e"], degree=2)
>>> sorted(len(g.neighbours(n)) for n in g.nodes)
[2, 2, 2, 2, 2]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from models.errors import ModelError

__all__ = ["Graph", "default_degree", "threshold_for"]


def default_degree(n: int) -> int:
    """SecAgg+'s O(log n) degree: even, at least 4, complete below about 12 nodes."""
    if n <= 1:
        return 0
    k = 2 * math.ceil(1.5 * math.log2(n))
    return min(max(k, 4), n - 1)


def threshold_for(degree: int, max_dropout: float) -> int:
    """Shares needed to rebuild a secret shared among ``degree`` neighbours."""
    if not 0 <= max_dropout < 0.5:
        raise ModelError(f"max_dropout is a fraction in [0, 0.5), got {max_dropout!r}")
    if degree < 1:
        return 1
    return max(degree // 2 + 1, degree - math.ceil(max_dropout * degree))


@dataclass(frozen=True)
class Graph:
    """The round's roster (sorted), its share points and each node's neighbours."""

    round_id: str
    nodes: tuple[str, ...]
    edges: dict[str, frozenset[str]]

    @classmethod
    def build(cls, round_id: str, node_ids: Sequence[str], *, degree: int | None = None) -> Graph:
        nodes = tuple(sorted(set(node_ids)))
        if len(nodes) != len(node_ids):
            raise ModelError("a node appears twice in the round's roster")
        n = len(nodes)
        k = default_degree(n) if degree is None else degree
        if n > 1 and not 1 <= k <= n - 1:
            raise ModelError(f"degree must be between 1 and {n - 1} for {n} nodes, got {k}")
        ring = sorted(nodes, key=lambda v: hashlib.sha256(f"{round_id}\0{v}".encode()).digest())
        edges: dict[str, set[str]] = {v: set() for v in nodes}
        for i, v in enumerate(ring):  # Harary H(k, n): k//2 each side, + the opposite for odd k
            offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
            for d in offsets:
                w = ring[(i + d) % n]
                if w != v:
                    edges[v].add(w)
                    edges[w].add(v)
        return cls(round_id, nodes, {v: frozenset(e) for v, e in edges.items()})

    def point(self, node_id: str) -> int:
        """The node's Shamir evaluation point: its position in the sorted roster, from 1."""
        return self.nodes.index(node_id) + 1

    def neighbours(self, node_id: str) -> frozenset[str]:
        return self.edges[node_id]

    @property
    def degree(self) -> int:
        return max((len(e) for e in self.edges.values()), default=0)

"""The round's parameters and the four messages nodes send (as plain data).

The messages are what item 3 of issue #28 puts on Kafka as typed Avro
records; here they are frozen dataclasses with the byte count of their
payload (keys, ciphertexts, masked ring elements, shares and the ids that
address them -- not the Avro framing), so the cost of a round can be
measured without Kafka (runtime/secagg.py maps them to the records).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ModelError
from models.secagg.graph import Graph, threshold_for

__all__ = [
    "Advertise",
    "Inconsistent",
    "MaskedInput",
    "RoundAbandoned",
    "RoundSpec",
    "ShareBundle",
    "UnmaskReply",
]

DEFAULT_MAX_DROPOUT = 0.3


class RoundAbandoned(ModelError):
    """Too few nodes or shares left to go on: nothing is published, everyone re-offers."""


class Inconsistent(RoundAbandoned):
    """The server told this node two different survivor sets, or asked it to reveal for a
    set it did not confirm: the node reveals nothing (the attack the consistency check of
    Bonawitz et al. 2017 stops: a node's seed *and* key shares to the same server)."""


@dataclass(frozen=True)
class RoundSpec:
    """What every node and the server agree on before a round starts.

    ``threshold``: shares that rebuild one node's secret (of its ``degree``
    neighbours); ``min_survivors``: nodes whose masked inputs the sum must
    hold, else the round is abandoned.
    """

    round_id: str
    graph: Graph
    length: int
    threshold: int
    min_survivors: int

    @classmethod
    def create(
        cls,
        round_id: str,
        node_ids: Sequence[str],
        length: int,
        *,
        max_dropout: float = DEFAULT_MAX_DROPOUT,
        degree: int | None = None,
    ) -> RoundSpec:
        if len(node_ids) < 2:
            raise RoundAbandoned(
                f"secure aggregation needs at least 2 nodes in a round, got {len(node_ids)}: "
                "the sum of one node's update is that update"
            )
        if length < 0:
            raise ModelError("a round's vectors have a non-negative length")
        graph = Graph.build(round_id, node_ids, degree=degree)
        n = len(graph.nodes)
        return cls(
            round_id,
            graph,
            length,
            threshold_for(graph.degree, max_dropout),
            max(1, n - math.floor(max_dropout * n)),
        )

    @property
    def info(self) -> bytes:
        return self.round_id.encode()


@dataclass(frozen=True)
class Advertise:
    """Step 0: a node's two fresh public keys (share encryption, pairwise masks)."""

    node_id: str
    cipher_public: bytes
    mask_public: bytes

    @property
    def wire_bytes(self) -> int:
        return len(self.node_id.encode()) + len(self.cipher_public) + len(self.mask_public)


@dataclass(frozen=True)
class ShareBundle:
    """Step 1: a node's encrypted shares, one ciphertext per neighbour (receiver -> bytes)."""

    sender: str
    ciphertexts: Mapping[str, bytes]

    @property
    def wire_bytes(self) -> int:
        return len(self.sender.encode()) + sum(
            len(v.encode()) + len(c) for v, c in self.ciphertexts.items()
        )


@dataclass(frozen=True)
class MaskedInput:
    """Step 2: a node's input plus its masks, mod 2^64 -- all the server ever sees of it."""

    node_id: str
    vector: np.ndarray

    @property
    def wire_bytes(self) -> int:
        return len(self.node_id.encode()) + 8 * len(self.vector)


@dataclass(frozen=True)
class UnmaskReply:
    """Step 3: a survivor's shares: self-mask seeds of survivors, mask keys of the dropped.

    An honest node never reveals both secrets of one node: that is what keeps
    a survivor's input hidden when its self mask is removed.
    """

    node_id: str
    seed_shares: Mapping[str, bytes]
    key_shares: Mapping[str, bytes]

    def __post_init__(self) -> None:
        both = set(self.seed_shares) & set(self.key_shares)
        if both:
            raise ModelError(f"a reply may not reveal both secrets of {sorted(both)}")

    @property
    def wire_bytes(self) -> int:
        shares = {**self.seed_shares, **self.key_shares}
        return len(self.node_id.encode()) + sum(len(u.encode()) + len(s) for u, s in shares.items())

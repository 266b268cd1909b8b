"""The merger's side of a SecAgg+ round: route, collect, unmask the sum only.

The server forwards keys and ciphertexts it cannot read, adds up masked
inputs, and rebuilds from the survivors' shares exactly what removes the
masks from the *sum*: the self-mask seeds of nodes whose input is in it and
the mask keys of nodes that dropped after sharing (whose pairwise terms would
otherwise stay in their neighbours' inputs). It never holds an individual
unmasked vector. When too few nodes survive, or a secret has too few shares,
the round is abandoned: nothing is published, and every node of the round is
listed for re-offering its increment to the next round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from models.errors import ModelError
from models.secagg import shamir
from models.secagg.keys import KeyPair
from models.secagg.messages import (
    Advertise,
    MaskedInput,
    RoundAbandoned,
    RoundSpec,
    ShareBundle,
    UnmaskReply,
)
from models.secagg.node import pairwise_mask
from models.secagg.prg import mask

__all__ = ["Abandoned", "RoundAbandoned", "Server", "Unmasked"]


@dataclass(frozen=True)
class Unmasked:
    """The sum of the ``included`` nodes' inputs; ``reoffer`` did not make it in."""

    total: np.ndarray
    included: tuple[str, ...]
    reoffer: tuple[str, ...]


@dataclass(frozen=True)
class Abandoned:
    """Nothing published; every node of the round offers its increment again."""

    reason: str
    reoffer: tuple[str, ...]


class Server:
    """Collects one round's messages in order: keys, shares, masked inputs, replies."""

    def __init__(self, spec: RoundSpec) -> None:
        self.spec = spec
        self.roster: dict[str, Advertise] = {}
        self.bundles: dict[str, ShareBundle] = {}
        self.inputs: dict[str, MaskedInput] = {}

    def _enough(self, alive: Iterable[str], step: str) -> None:
        n = len(set(alive))
        if n < self.spec.min_survivors:
            raise RoundAbandoned(
                f"{step}: {n} of {len(self.spec.graph.nodes)} nodes left, "
                f"the round needs {self.spec.min_survivors}"
            )

    def collect_keys(self, ads: Iterable[Advertise]) -> dict[str, Advertise]:
        for a in ads:
            if a.node_id not in self.spec.graph.nodes or a.node_id in self.roster:
                raise ModelError(f"unexpected or repeated key advertisement from {a.node_id!r}")
            self.roster[a.node_id] = a
        self._enough(self.roster, "key advertisement")
        return dict(self.roster)

    def route_shares(self, bundles: Iterable[ShareBundle]) -> dict[str, dict[str, bytes]]:
        """Per receiver, the ciphertexts addressed to it (sender -> bytes)."""
        for b in bundles:
            if b.sender not in self.roster or b.sender in self.bundles:
                raise ModelError(f"unexpected or repeated shares from {b.sender!r}")
            self.bundles[b.sender] = b
        self._enough(self.bundles, "key sharing")
        routed: dict[str, dict[str, bytes]] = {v: {} for v in self.bundles}
        for sender, b in self.bundles.items():
            for receiver, blob in b.ciphertexts.items():
                if receiver in routed:
                    routed[receiver][sender] = blob
        return routed

    def collect_masked(self, inputs: Iterable[MaskedInput]) -> tuple[str, ...]:
        """The survivors (nodes whose masked input arrived), for the unmask step."""
        for m in inputs:
            if m.node_id not in self.bundles or m.node_id in self.inputs:
                raise ModelError(f"unexpected or repeated masked input from {m.node_id!r}")
            if m.vector.dtype != np.uint64 or m.vector.shape != (self.spec.length,):
                raise ModelError(f"masked input of {m.node_id!r} has the wrong shape or type")
            self.inputs[m.node_id] = m
        self._enough(self.inputs, "masked input")
        return tuple(sorted(self.inputs))

    def finish(self, replies: Iterable[UnmaskReply]) -> Unmasked | Abandoned:
        """The unmasked sum, or the reason the round is abandoned."""
        everyone = self.spec.graph.nodes
        try:
            total = self._unmask({r.node_id: r for r in replies})
        except RoundAbandoned as e:
            return Abandoned(str(e), everyone)
        included = tuple(sorted(self.inputs))
        return Unmasked(total, included, tuple(v for v in everyone if v not in self.inputs))

    def _unmask(self, replies: Mapping[str, UnmaskReply]) -> np.ndarray:
        self._enough(self.inputs, "masked input")
        self._enough(replies, "unmasking")
        total = np.zeros(self.spec.length, dtype=np.uint64)
        for m in self.inputs.values():
            total += m.vector
        for u in self.inputs:
            seed = self._rebuild(u, {v: r.seed_shares.get(u) for v, r in replies.items()})
            total -= mask(seed, self.spec.length)
        for u in sorted(set(self.bundles) - set(self.inputs)):
            secret = self._rebuild(u, {v: r.key_shares.get(u) for v, r in replies.items()})
            dropped = KeyPair.from_secret(secret)
            if dropped.public != self.roster[u].mask_public:
                raise RoundAbandoned(f"unmasking: the shares of {u!r} rebuild a wrong key")
            for v in self.bundles[u].ciphertexts:
                if v in self.inputs:  # v added its term with u; take it out
                    peer = self.roster[v].mask_public
                    total -= pairwise_mask(self.spec, secret, v, u, peer)  # v's sign, u's key
        return total

    def _rebuild(self, owner: str, offered: Mapping[str, bytes | None]) -> bytes:
        shares = [
            shamir.Share.from_bytes(self.spec.graph.point(v), blob)
            for v, blob in sorted(offered.items())
            if blob is not None
        ]
        if len(shares) < self.spec.threshold:
            raise RoundAbandoned(
                f"unmasking: {len(shares)} shares of {owner!r}'s secret arrived, "
                f"{self.spec.threshold} are needed"
            )
        return shamir.combine(shares, threshold=self.spec.threshold)

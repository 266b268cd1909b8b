"""One whole round in process: every node, the server, and who drops when.

The services run the same steps over Kafka (streams/merger/secure.py); this
driver runs them as function calls so the merge entry, ``prism compare`` and
the tests can use the real protocol -- real keys, shares, ciphertexts and
masks -- with dropouts at any step, and count the bytes the messages carry.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from models.errors import ModelError
from models.secagg.keys import Entropy
from models.secagg.messages import RoundAbandoned, RoundSpec
from models.secagg.node import Node
from models.secagg.server import Abandoned, Server, Unmasked

__all__ = ["STEPS", "Dropouts", "RoundCost", "run_round"]

STEPS = ("keys", "share", "input", "unmask")


@dataclass(frozen=True)
class Dropouts:
    """Node ids that vanish before each step (``keys``: they never start)."""

    before: Mapping[str, Collection[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.before) - set(STEPS)
        if unknown:
            raise ModelError(f"dropout steps are {STEPS}, got {sorted(unknown)}")

    def gone(self, step: str) -> set[str]:
        """Everyone who has dropped by ``step`` (dropping is for good)."""
        upto = STEPS[: STEPS.index(step) + 1]
        return {v for s in upto for v in self.before.get(s, ())}


@dataclass
class RoundCost:
    """Payload bytes up (node -> server) and down (server -> node) for one round."""

    up: int = 0
    down: int = 0

    @property
    def total(self) -> int:
        return self.up + self.down


def run_round(
    spec: RoundSpec,
    inputs: Mapping[str, np.ndarray],
    dropouts: Dropouts | None = None,
    entropy: Entropy = os.urandom,
) -> tuple[Unmasked | Abandoned, RoundCost]:
    """Run ``spec``'s round over encoded ``inputs`` (node id -> uint64 vector)."""
    if set(inputs) != set(spec.graph.nodes):
        raise ModelError("every node of the round needs an input, and only they")
    drops = dropouts or Dropouts()
    cost = RoundCost()
    nodes = {v: Node(v, spec, entropy) for v in spec.graph.nodes if v not in drops.gone("keys")}
    server = Server(spec)
    try:
        ads = [n.advertise() for n in nodes.values()]
        cost.up += sum(a.wire_bytes for a in ads)
        roster = server.collect_keys(ads)
        live = [n for v, n in nodes.items() if v not in drops.gone("share")]
        cost.down += sum(
            roster[w].wire_bytes
            for n in live
            for w in spec.graph.neighbours(n.node_id)
            if w in roster
        )
        bundles = [n.share(roster) for n in live]
        cost.up += sum(b.wire_bytes for b in bundles)
        routed = server.route_shares(bundles)
        live = [n for n in live if n.node_id not in drops.gone("input")]
        cost.down += sum(
            len(s.encode()) + len(c) for n in live for s, c in routed[n.node_id].items()
        )
        masked = [n.masked_input(inputs[n.node_id], routed[n.node_id]) for n in live]
        cost.up += sum(m.wire_bytes for m in masked)
        survivors = server.collect_masked(masked)
        live = [n for n in live if n.node_id not in drops.gone("unmask")]
        cost.down += len(live) * sum(len(v.encode()) for v in survivors)
        for n in live:  # the consistency check: each vouches for the one set it reveals for
            n.confirm(survivors)
        replies = [n.unmask(survivors) for n in live]
        cost.up += sum(r.wire_bytes for r in replies)
    except RoundAbandoned as e:
        return Abandoned(str(e), spec.graph.nodes), cost
    return server.finish(replies), cost


def seeded_entropy(seed: int) -> Entropy:
    """Deterministic 'randomness' for tests and simulations -- never for real rounds."""
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)

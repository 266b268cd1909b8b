"""One node's side of a SecAgg+ round: keys, shares, masked input, unmasking.

The node keeps its secrets (two X25519 secret keys and a self-mask seed)
in memory for one round only. Its masked input is its encoded vector plus
``PRG(self seed)`` plus, for each neighbour ``v`` that shared keys this round,
``+PRG(s_uv)`` when ``u < v`` and ``-PRG(s_uv)`` otherwise -- the pairwise
terms cancel in the sum, the self mask is removed by the server once enough
neighbours reveal its shares (Bonawitz et al. 2017, Bell et al. 2020).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from models.errors import ModelError
from models.secagg import shamir
from models.secagg.keys import Entropy, KeyPair, agree
from models.secagg.messages import (
    Advertise,
    Inconsistent,
    MaskedInput,
    RoundAbandoned,
    RoundSpec,
    ShareBundle,
    UnmaskReply,
)
from models.secagg.prg import mask

__all__ = ["Node", "NodeKeys", "pairwise_mask"]

NONCE_BYTES = 12


def _aad(spec: RoundSpec, sender: str, receiver: str) -> bytes:
    return f"prism-secagg/v1/share\0{spec.round_id}\0{sender}\0{receiver}".encode()


def mask_info(spec: RoundSpec) -> bytes:
    return b"prism-secagg/v1/mask\0" + spec.info


def pairwise_mask(
    spec: RoundSpec, secret: bytes, own: str, peer: str, peer_public: bytes
) -> np.ndarray:
    """``own``'s signed pairwise term with ``peer`` (the server uses it for dropped nodes)."""
    m = mask(agree(secret, peer_public, info=mask_info(spec)), spec.length)
    return m if own < peer else (-m.view(np.int64)).view(np.uint64)


@dataclass(frozen=True)
class NodeKeys:
    """A node's secrets for one round, drawn before the round's roster is known.

    Over Kafka a node advertises its public keys first and learns who else is
    in the round (the :class:`RoundSpec`) only afterwards.
    """

    cipher: KeyPair
    mask: KeyPair
    seed: bytes

    @classmethod
    def generate(cls, entropy: Entropy = os.urandom) -> NodeKeys:
        return cls(KeyPair.generate(entropy), KeyPair.generate(entropy), entropy(32))


class Node:
    """A round's participant; call the steps in order, each at most once."""

    def __init__(
        self,
        node_id: str,
        spec: RoundSpec,
        entropy: Entropy = os.urandom,
        keys: NodeKeys | None = None,
    ) -> None:
        if node_id not in spec.graph.nodes:
            raise ModelError(f"node {node_id!r} is not in round {spec.round_id!r}")
        self.node_id, self.spec, self._entropy = node_id, spec, entropy
        keys = keys or NodeKeys.generate(entropy)
        self._cipher, self._mask, self._seed = keys.cipher, keys.mask, keys.seed
        self._roster: dict[str, Advertise] = {}
        self._held: dict[str, tuple[shamir.Share, shamir.Share]] = {}  # sender -> (seed, key)
        self._confirmed: frozenset[str] | None = None  # the one survivor set it vouched for
        self._revealed = False

    def advertise(self) -> Advertise:
        return Advertise(self.node_id, self._cipher.public, self._mask.public)

    def share(self, roster: Mapping[str, Advertise]) -> ShareBundle:
        """Split both secrets among the neighbours that advertised; encrypt each pair."""
        self._roster = {
            v: roster[v] for v in self.spec.graph.neighbours(self.node_id) if v in roster
        }
        if len(self._roster) < self.spec.threshold:
            raise RoundAbandoned(
                f"node {self.node_id!r}: {len(self._roster)} neighbours advertised keys, "
                f"threshold is {self.spec.threshold}"
            )
        peers = sorted(self._roster)
        points = [self.spec.graph.point(v) for v in peers]
        t = self.spec.threshold
        seeds = shamir.split(self._seed, threshold=t, points=points, entropy=self._entropy)
        keys = shamir.split(self._mask.secret, threshold=t, points=points, entropy=self._entropy)
        out = {}
        for v, s, k in zip(peers, seeds, keys, strict=True):
            nonce = self._entropy(NONCE_BYTES)
            aead = ChaCha20Poly1305(self._channel(v))
            body = s.to_bytes() + k.to_bytes()
            out[v] = nonce + aead.encrypt(nonce, body, _aad(self.spec, self.node_id, v))
        return ShareBundle(self.node_id, out)

    def _channel(self, peer: str) -> bytes:
        info = b"prism-secagg/v1/channel\0" + self.spec.info
        return agree(self._cipher.secret, self._roster[peer].cipher_public, info=info)

    def masked_input(self, encoded: np.ndarray, incoming: Mapping[str, bytes]) -> MaskedInput:
        """``encoded`` plus every mask; ``incoming`` are the neighbours' ciphertexts to us."""
        x = np.asarray(encoded)
        if x.dtype != np.uint64 or x.shape != (self.spec.length,):
            raise ModelError(f"a masked input is {self.spec.length} uint64 ring elements")
        for sender, blob in incoming.items():
            self._held[sender] = self._open(sender, blob)
        total = x + mask(self._seed, self.spec.length)
        for v in self._held:
            total += pairwise_mask(
                self.spec, self._mask.secret, self.node_id, v, self._roster[v].mask_public
            )
        return MaskedInput(self.node_id, total)

    def _open(self, sender: str, blob: bytes) -> tuple[shamir.Share, shamir.Share]:
        if sender not in self._roster:
            raise ModelError(f"node {self.node_id!r} got shares from non-neighbour {sender!r}")
        try:
            aead = ChaCha20Poly1305(self._channel(sender))
            body = aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(self.spec, sender, self.node_id)
            )
        except InvalidTag as e:
            raise ModelError(
                f"node {self.node_id!r}: shares from {sender!r} fail to decrypt"
            ) from e
        x = self.spec.graph.point(self.node_id)
        n = shamir.SHARE_BYTES
        return shamir.Share.from_bytes(x, body[:n]), shamir.Share.from_bytes(x, body[n:])

    def confirm(self, survivors: Collection[str]) -> frozenset[str]:
        """Vouch for one survivor set this round, and only one (the consistency check).

        A second, different set is :class:`Inconsistent`: a server that names a node
        alive to some and dropped to others would collect both of its secrets.
        """
        alive = frozenset(survivors)
        if self._confirmed is not None and alive != self._confirmed:
            raise Inconsistent(
                f"node {self.node_id!r} refuses: survivors {sorted(alive)} after it confirmed "
                f"{sorted(self._confirmed)} in round {self.spec.round_id!r}"
            )
        unknown = alive - set(self.spec.graph.nodes)
        if unknown:
            raise Inconsistent(f"survivors {sorted(unknown)} are not in the round's roster")
        if self.node_id not in alive:
            raise Inconsistent(f"node {self.node_id!r} is asked to confirm a set without itself")
        self._enough(alive)
        self._confirmed = alive
        return alive

    def _enough(self, alive: frozenset[str]) -> None:
        if len(alive) < self.spec.min_survivors:
            raise RoundAbandoned(
                f"node {self.node_id!r} refuses to unmask: {len(alive)} survivors, "
                f"the round needs {self.spec.min_survivors}"
            )

    def unmask(self, survivors: Collection[str]) -> UnmaskReply:
        """Seed shares of surviving senders, key shares of the ones that dropped -- never both.

        Only for the set it confirmed (:meth:`confirm`), and only once a round.
        """
        alive = frozenset(survivors)
        if self._confirmed is None or alive != self._confirmed:
            raise Inconsistent(
                f"node {self.node_id!r} refuses to unmask survivors {sorted(alive)}: it "
                + (
                    "confirmed none"
                    if self._confirmed is None
                    else f"confirmed {sorted(self._confirmed)}"
                )  # fmt: skip
            )
        if self._revealed:
            raise Inconsistent(f"node {self.node_id!r} revealed its shares once this round")
        self._enough(alive)
        self._revealed = True
        seeds = {u: s.to_bytes() for u, (s, _k) in self._held.items() if u in alive}
        keys = {u: k.to_bytes() for u, (_s, k) in self._held.items() if u not in alive}
        return UnmaskReply(self.node_id, seeds, keys)

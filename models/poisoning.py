"""Model-poisoning attacks on a node's update: the threat the robust strategies face.

A poisoning node runs the honest learner and then lies about what it learned.
What it lies about is the *learned* part of its summary -- the weights and
intercept the strategy merges -- as an update relative to the global model the
node trained from (its ``reference``): ``delta = learned - reference``. The
sent vector is ``reference + attack(delta)``:

============  ===========================================================
kind          sent update
============  ===========================================================
``scaled``    ``scale * delta`` (boosted: drags a mean ``scale`` times)
``signflip``  ``-scale * delta`` (pulls against what the node learned)
``random``    Gaussian noise with norm ``scale * |delta|`` on the
              coordinates the node saw (no information, plausible length)
``alie``      per coordinate ``mean - z * std`` of the round's honest
              deltas, ``z`` from the node and attacker counts unless
              ``scale`` sets it (:mod:`models.collusion`)
``ipm``       ``-scale * mean`` of the round's honest deltas (``scale`` is
              Xie et al.'s epsilon, default 0.5)
``excluded``  the honest summary, whose learned update the caller's
              merger sets aside (a perfect screen). Not an attack but
              its floor: the fleet loses these nodes' learned updates,
              which no aggregation rule can win back, while their exact
              statistics merge as under every attack
============  ===========================================================

``alie`` and ``ipm`` are omniscient: the caller passes the honest updates of
the attacker's round (:func:`poison_summary`'s ``honest``), as the papers
assume; every attacker of a round then sends the same vector, unless
``jitter`` gives each its own small noise (:func:`models.collusion.jitter`).

Exact statistics (scaler counts, means, variances) and ``n_samples`` stay
honest. They are merged exactly, not voted on, so no aggregation rule can
outvote a lie there; inflating them is a different threat (bounded by
authenticating nodes and screening statistics), not what these attacks test.

Pure code: the caller chooses which nodes attack (:meth:`Attack.attackers`)
and passes a seeded generator, so a run is reproducible.

>>> poison_delta(np.array([1.0, -2.0]), "signflip", 3.0).tolist()
[-3.0, 6.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.collusion import alie_update, alie_z, ipm_update, jitter
from models.errors import ModelError
from models.specs.base import ModelSpec
from models.summary import Summary

__all__ = ["BLIND", "COLLUDING", "EXCLUDED", "KINDS", "Attack", "poison_delta", "poison_summary"]

BLIND = ("scaled", "signflip", "random")  # from the node's own update only
COLLUDING = ("alie", "ipm")  # shaped from the round's honest updates
EXCLUDED = "excluded"  # a perfect screen sets its learned update aside: the floor
KINDS = BLIND + COLLUDING + (EXCLUDED,)
DEFAULT_SCALE = 10.0
DEFAULT_EPSILON = 0.5  # ipm's epsilon


@dataclass(frozen=True)
class Attack:
    """``fraction`` of the nodes send ``kind`` updates with factor ``scale``.

    ``scale`` None: the kind's default (10; ipm's epsilon 0.5; alie's ``z``
    from the node and attacker counts, :meth:`strength`). ``jitter`` (colluding
    kinds only): each attacker adds noise of that many honest stds per coordinate.
    """

    fraction: float
    kind: str
    scale: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"poison kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0.0 < self.fraction < 0.5:
            raise ValueError(
                f"poison fraction must be in (0, 0.5): a majority of attackers is not a "
                f"threat any aggregation rule can withstand, got {self.fraction}"
            )
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"poison scale must be a finite number > 0, got {self.scale}")
        if not (np.isfinite(self.jitter) and self.jitter >= 0):
            raise ValueError(f"poison jitter must be a finite number >= 0, got {self.jitter}")
        if self.jitter and self.kind not in COLLUDING:
            raise ValueError(
                f"poison jitter varies the colluders' shared vector ({', '.join(COLLUDING)}): "
                f"{self.kind!r} has none"
            )

    @classmethod
    def parse(cls, text: str) -> Attack:
        """``FRACTION:KIND[:SCALE[:JITTER]]``, e.g. ``0.2:signflip``, ``0.2:scaled:10``
        or ``0.2:ipm::0.1`` (the kind's default scale, jitter 0.1).

        >>> Attack.parse("0.2:scaled:5")
        Attack(fraction=0.2, kind='scaled', scale=5.0, jitter=0.0)
        >>> Attack.parse("0.2:ipm::0.1")
        Attack(fraction=0.2, kind='ipm', scale=None, jitter=0.1)
        >>> round(Attack.parse("0.4:alie").strength(10), 4)
        0.8416
        """
        parts = text.split(":")
        try:
            if len(parts) not in (2, 3, 4):
                raise ValueError("wrong number of fields")
            fraction = float(parts[0])
            scale = float(parts[2]) if len(parts) >= 3 and parts[2].strip() else None
            jitter = float(parts[3]) if len(parts) == 4 else 0.0
        except ValueError as e:
            raise ValueError(
                f"--poison takes FRACTION:KIND[:SCALE[:JITTER]] with KIND one of "
                f"{', '.join(KINDS)}, e.g. 0.2:signflip, 0.2:scaled:10 or 0.2:ipm::0.1, "
                f"got {text!r}"
            ) from e
        return cls(fraction, parts[1].strip(), scale, jitter)

    def count(self, n_nodes: int) -> int:
        """How many of ``n_nodes`` attack: ``round(fraction * n)``, at least 1."""
        return max(1, round(self.fraction * n_nodes))

    def strength(self, n_nodes: int) -> float:
        """The factor the kind applies: ``scale``, or its default for ``n_nodes``."""
        if self.scale is not None:
            return self.scale
        if self.kind == "alie":
            return alie_z(n_nodes, self.count(n_nodes))
        return DEFAULT_EPSILON if self.kind == "ipm" else DEFAULT_SCALE

    def attackers(self, n_nodes: int, seed: int) -> frozenset[int]:
        """Which of ``n_nodes`` attack: :meth:`count` of them, by ``seed``."""
        if n_nodes < 2:
            raise ValueError("poisoning needs at least 2 nodes (an attacker and an honest one)")
        k = self.count(n_nodes)
        rng = np.random.default_rng([seed, 0x5EED])
        return frozenset(int(i) for i in rng.choice(n_nodes, size=k, replace=False))


def poison_delta(
    delta: np.ndarray,
    kind: str,
    scale: float = DEFAULT_SCALE,
    rng: np.random.Generator | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The attacker's update in place of the honest ``delta`` (see the module docstring).

    ``mask`` limits random noise to the coordinates the node has seen (others
    are imputed by the merge anyway); ``rng`` is required for ``random``.
    """
    delta = np.asarray(delta, dtype=np.float64)
    if kind == "scaled":
        return scale * delta
    if kind == "signflip":
        return -scale * delta
    if kind in COLLUDING:
        raise ModelError(f"{kind!r} needs the round's honest updates: use poison_summary")
    if kind != "random":
        raise ModelError(f"poison kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if rng is None:
        raise ModelError("the random attack needs a seeded generator (rng)")
    seen = np.ones(delta.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    noise = np.zeros_like(delta)
    noise[seen] = rng.standard_normal(int(seen.sum()))
    norm = float(np.linalg.norm(noise))
    if norm == 0.0:
        return noise
    return noise * (scale * float(np.linalg.norm(delta)) / norm)


def poison_summary(
    spec: ModelSpec,
    increment: Summary,
    reference: Summary | None,
    attack: Attack,
    rng: np.random.Generator,
    *,
    n_nodes: int = 2,
    honest: Sequence[tuple[Summary, Summary | None]] = (),
) -> Summary:
    """``increment`` with its learned part replaced by ``reference + attack(delta)``.

    ``reference`` is the global model the node trained from (None: the fresh
    model, whose learned part is zero). Exact statistics, ``n_samples`` and
    provenance are the honest ones. ``alie`` and ``ipm`` shape the update from
    ``honest``, (increment, reference) pairs of the round's honest nodes, each
    taken as its delta on this node's features; ``n_nodes`` sets alie's ``z``.
    """
    algebra = spec.algebra
    if algebra.learned_vector(increment).size == 0:
        raise ModelError(
            f"{spec.name!r} has no learned weights to poison: its state is exact statistics, "
            "merged exactly (lying about them is a different threat, see models.poisoning)"
        )
    if reference is not None:
        features = algebra.union_features([increment, reference])
        increment = algebra.align(increment, features)
        reference = algebra.align(reference, features)
    learned = algebra.learned_vector(increment)
    start = np.zeros_like(learned) if reference is None else algebra.learned_vector(reference)
    strength = attack.strength(n_nodes)
    if attack.kind == EXCLUDED:
        raise ModelError("an excluded node lies about nothing: the merger sets it aside")
    if attack.kind in COLLUDING:
        if not honest:
            raise ModelError(f"{attack.kind!r} needs at least one honest update of the round")
        deltas = np.stack([_delta(spec, inc, ref, increment.features) for inc, ref in honest])
        sent = (alie_update if attack.kind == "alie" else ipm_update)(deltas, strength)
        sent = jitter(sent, deltas, attack.jitter, rng)
    else:
        sent = poison_delta(
            learned - start, attack.kind, strength, rng, algebra.learned_mask(increment)
        )
    return algebra.with_learned_vector(increment, start + sent)


def _delta(
    spec: ModelSpec, increment: Summary, reference: Summary | None, features: Sequence[str]
) -> np.ndarray:
    """An honest node's learned delta on ``features`` (0 where it saw nothing)."""
    algebra = spec.algebra
    learned = algebra.learned_vector(algebra.align(increment, features))
    if reference is None:
        return learned
    return learned - algebra.learned_vector(algebra.align(reference, features))

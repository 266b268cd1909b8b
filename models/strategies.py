"""Aggregation strategies with Flower's names, behind one small interface.

A strategy turns one round of :class:`NodeVector` (a node's learned parameters
as a flat vector, with its sample count) into an :class:`AggregateResult`:
the new vector, the weight each contributor got, and each excluded node with
the reason. All share one pipeline (validation, node-id order, optional DP
and screening: :mod:`models.strategy_base`) and differ only in the maths:

========================  =================================================
spec                      strategy
========================  =================================================
``fedavg``                FedAvg: sample-weighted mean
``exact``                 FedAvg as well: learned weights have no exact merge;
                          exact statistics are merged exactly in models.merge
``fedmedian``             FedMedian: coordinate-wise median (screens by default)
``trimmed:0.1``           FedTrimmedAvg, beta 0.1 (screens by default)
``krum``, ``krum:f=1``    Krum tolerating f malicious updates
``multikrum:f=1,m=3``     Multi-Krum: mean of the m best (m defaults to n - f)
``fedavgm``, ``fedadam``  FedAvg then a server optimizer step from ``current``
``async``                 FedAsync: weights n_samples x staleness weight, mixed
                          into ``current`` at rate ``mix``
========================  =================================================

Screening is on by default for fedmedian and trimmed, which otherwise keep
everyone, and off for the textbook algorithms (fedavg must stay exactly
FedAvg) and for Krum, whose ``f`` is defined over the updates it sees.
Parameters go in the spec (``"fedadam:server_lr=0.05"``) or as keyword
options (``get_strategy("async", max_staleness=10)``).

>>> updates = [NodeVector("a", 1, np.array([1.0]), 10), NodeVector("b", 1, np.array([3.0]), 30)]
>>> result = get_strategy("fedavg").aggregate(updates)
>>> result.vector.tolist(), result.weights
([2.5], {'a': 0.25, 'b': 0.75})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from models import aggregate as agg
from models.errors import ModelError, StaleUpdateError, UnknownSpecError
from models.staleness import StalenessPolicy, async_mix
from models.strategy_base import (
    AggregateResult,
    BaseStrategy,
    Combined,
    NodeVector,
    Safeguards,
    Strategy,
    split_spec,
)

__all__ = ["STRATEGY_NAMES", "AggregateResult", "Safeguards", "Strategy", "NodeVector"]
__all__ += ["Exact", "FedAsync", "FedAvg", "FedMedian", "FedOpt", "FedTrimmedAvg", "Krum"]
__all__ += ["get_strategy"]


def _sample_weights(updates: Sequence[NodeVector]) -> np.ndarray:
    return agg.normalized_weights([u.n_samples for u in updates], len(updates))


def _equal(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


class FedAvg(BaseStrategy):
    """Sample-weighted mean (McMahan et al. 2017)."""

    name = "fedavg"

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        weights = _sample_weights(updates)
        return Combined(weights @ matrix, weights, {})


class Exact(FedAvg):
    """``exact`` for learned weights: there is no exact merge of SGD-trained
    weights, so it is sample-weighted FedAvg; the exactly mergeable statistics
    (scaler moments, mass counts, covariances) are merged exactly elsewhere."""

    name = "exact"


class FedMedian(BaseStrategy):
    """Coordinate-wise median; every kept update gets the same nominal weight."""

    name = "fedmedian"
    default_screen = True

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        return Combined(agg.fedmedian(matrix), _equal(len(matrix)), {})


class FedTrimmedAvg(BaseStrategy):
    """Coordinate-wise trimmed mean dropping ``beta`` of the updates at each end."""

    default_screen = True

    def __init__(self, *, beta: float = 0.1, safeguards: Safeguards | None = None) -> None:
        agg.trimmed_mean([np.zeros(1)], beta)  # validates beta now, not on the first round
        super().__init__(safeguards=safeguards)
        self.beta = beta
        self.name = f"trimmed:{beta:g}"

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        return Combined(agg.trimmed_mean(matrix, self.beta), _equal(len(matrix)), {})


class Krum(BaseStrategy):
    """(Multi-)Krum; non-selected updates are excluded with their score.

    ``num_to_keep=None`` keeps ``n - num_malicious`` (Multi-Krum's default).
    """

    def __init__(
        self,
        *,
        num_malicious: int = 0,
        num_to_keep: int | None = 1,
        safeguards: Safeguards | None = None,
    ) -> None:
        if not isinstance(num_malicious, int) or num_malicious < 0:
            raise ModelError(f"krum needs an integer f >= 0, got {num_malicious!r}")
        if num_to_keep is not None and (not isinstance(num_to_keep, int) or num_to_keep < 1):
            raise ModelError(f"krum keeps m >= 1 updates, got {num_to_keep!r}")
        super().__init__(safeguards=safeguards)
        self.num_malicious, self.num_to_keep = num_malicious, num_to_keep
        single = num_to_keep == 1
        m = "" if single or num_to_keep is None else f",m={num_to_keep}"
        self.name = f"{'krum' if single else 'multikrum'}:f={num_malicious}{m}"

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        f = self.num_malicious
        keep = len(matrix) - f if self.num_to_keep is None else self.num_to_keep
        scores = agg.krum_scores(matrix, f)
        selected = agg.krum_select(scores, f, keep)
        cutoff = float(scores[selected].max())
        weights = np.zeros(len(matrix))
        weights[selected] = 1.0 / len(selected)
        excluded = {
            j: f"krum: score {scores[j]:.4g} (squared distance to its {len(matrix) - f - 2} "
            f"nearest peers) is above the {len(selected)} kept (at most {cutoff:.4g})"
            for j in range(len(matrix))
            if j not in selected
        }
        return Combined(matrix[selected].mean(axis=0), weights, excluded)


class FedOpt(BaseStrategy):
    """FedAvg, then a server optimizer step from ``current`` (Reddi et al. 2021).

    Without ``current`` (the first round) it is FedAvg and the optimizer does
    not move. Call it once per round on the full vector: every call with a
    ``current`` is an optimizer step. Checkpoint :meth:`state` after a round.
    """

    def __init__(
        self, *, optimizer: agg.FedAvgM | agg.FedAdam, safeguards: Safeguards | None = None
    ) -> None:
        super().__init__(safeguards=safeguards)
        self.optimizer = optimizer
        self.name = type(optimizer).__name__.lower()

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        weights = _sample_weights(updates)
        mean = weights @ matrix
        return Combined(mean if cur is None else self.optimizer.step(cur, mean), weights, {})

    def state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        config = {f.name: getattr(self.optimizer, f.name) for f in fields(self.optimizer) if f.init}
        self.optimizer = type(self.optimizer).from_state(state, **config)


class FedAsync(BaseStrategy):
    """Staleness-weighted asynchronous merge (Xie et al. 2019).

    Weights are ``n_samples * w(staleness)``; updates staler than the
    policy's bound are excluded with the reason. With ``current`` the
    weighted mean is mixed in by :func:`models.staleness.async_mix` at rate
    ``mix`` times the round's sample-weighted mean staleness weight.
    """

    name = "async"

    def __init__(
        self,
        *,
        mix: float = 0.5,
        policy: StalenessPolicy | None = None,
        safeguards: Safeguards | None = None,
    ) -> None:
        async_mix(np.zeros(1), np.zeros(1), mix=mix)  # validates mix now
        super().__init__(safeguards=safeguards)
        self.mix, self.policy = mix, policy or StalenessPolicy()

    def _pre_exclude(self, ordered: Sequence[NodeVector]) -> dict[int, str]:
        excluded = super()._pre_exclude(ordered)
        for i, u in enumerate(ordered):
            try:
                self.policy.check(u.staleness, node_id=u.node_id)
            except StaleUpdateError as e:
                excluded.setdefault(i, str(e))
        return excluded

    def _combine(self, matrix: np.ndarray, updates: Sequence[NodeVector], cur: Any) -> Combined:
        decay = np.array([self.policy.weight(u.staleness, node_id=u.node_id) for u in updates])
        samples = _sample_weights(updates)
        weights = agg.normalized_weights(samples * decay, len(updates))
        mean = weights @ matrix
        if cur is None:
            return Combined(mean, weights, {})
        return Combined(
            async_mix(cur, mean, mix=self.mix, weight=min(1.0, float(samples @ decay))), weights, {}
        )


def _async_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    mix = params.pop("mix", 0.5)
    return {"mix": mix, "policy": StalenessPolicy(**params)}


Kwargs = Callable[[dict[str, Any]], dict[str, Any]]
_KRUM = ("num_malicious", "num_to_keep")
_REGISTRY: dict[str, tuple[type[BaseStrategy], tuple[str, ...], Kwargs]] = {
    "fedavg": (FedAvg, (), dict),
    "exact": (Exact, (), dict),
    "fedmedian": (FedMedian, (), dict),
    "trimmed": (FedTrimmedAvg, ("beta",), dict),
    "krum": (Krum, _KRUM, dict),
    "multikrum": (Krum, _KRUM, lambda p: {"num_to_keep": None, **p}),
    "fedavgm": (FedOpt, ("server_lr", "momentum"), lambda p: {"optimizer": agg.FedAvgM(**p)}),
    "fedadam": (
        FedOpt,
        ("server_lr", "beta1", "beta2", "tau"),
        lambda p: {"optimizer": agg.FedAdam(**p)},
    ),
    "async": (
        FedAsync,
        ("mix", "kind", "exponent", "slope", "hinge_after", "max_staleness"),
        _async_kwargs,
    ),
}
STRATEGY_NAMES: tuple[str, ...] = (
    "fedavg",
    "exact",
    "fedmedian",
    "trimmed:0.1",
    "krum",
    "multikrum:f=1,m=3",
)
STRATEGY_NAMES += ("fedavgm", "fedadam", "async")
_ALIASES = {"f": "num_malicious", "m": "num_to_keep"}
_SAFEGUARDS = tuple(f.name for f in fields(Safeguards))


def get_strategy(spec: str, **options: Any) -> BaseStrategy:
    """The strategy named by ``spec`` (see the module docstring).

    Options: ``screen``, ``screen_threshold``, ``clip_norm``,
    ``noise_multiplier``, ``seed`` for every strategy; ``beta`` (trimmed);
    ``f``/``num_malicious``, ``m``/``num_to_keep`` (krum, multikrum);
    ``server_lr``, ``momentum`` (fedavgm); ``server_lr``, ``beta1``,
    ``beta2``, ``tau`` (fedadam); ``mix``, ``kind``, ``exponent``, ``slope``,
    ``hinge_after``, ``max_staleness`` (async).

    Examples
    --------
    >>> get_strategy("multikrum:f=1,m=3").name, get_strategy("trimmed", beta=0.2).name
    ('multikrum:f=1,m=3', 'trimmed:0.2')
    """
    base, given = split_spec(spec, positional={"trimmed": "beta"})
    if base not in _REGISTRY:
        raise UnknownSpecError(
            f"unknown strategy {spec!r}; valid: {', '.join(STRATEGY_NAMES)} "
            "(parameters as key=value after a colon)"
        )
    params: dict[str, Any] = {}
    for key, value in [*given.items(), *options.items()]:
        if _ALIASES.get(key, key) in params:
            raise ModelError(f"strategy option {key!r} is given twice (spec {spec!r})")
        params[_ALIASES.get(key, key)] = value
    cls, allowed, kwargs = _REGISTRY[base]
    unknown = sorted(set(params) - set(allowed) - set(_SAFEGUARDS))
    if unknown:
        raise ModelError(
            f"strategy {base!r} has no option {unknown}; it takes {list(allowed + _SAFEGUARDS)}"
        )
    guards = {k: params.pop(k) for k in _SAFEGUARDS if k in params}
    guards.setdefault("screen", cls.default_screen)
    try:
        return cls(safeguards=Safeguards(**guards), **kwargs(params))
    except TypeError as e:
        raise ModelError(f"bad option value for strategy {spec!r}: {e}") from e

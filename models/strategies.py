"""Aggregation strategies with Flower's names, behind one small interface.

A strategy turns one round of :class:`Update` (flat learned vectors with
sample counts) into an :class:`AggregateResult`: the new vector, the weight
each contributor got, and each excluded node with the reason. Every strategy
runs the same pipeline — optional DP (clip + noise) on each update, optional
screening (:mod:`models.screening`), then its own aggregation — so behaviour
differs only where the maths does.

Names for :func:`get_strategy`: ``fedavg``, ``exact`` (sample-weighted
FedAvg for learned weights; exact statistics are merged exactly in
:mod:`models.merge`), ``fedmedian``, ``trimmed:BETA``, ``krum[:f=F]``,
``multikrum[:f=F,m=M]``, ``fedavgm``, ``fedadam``, ``async``. Screening is on
by default for the robust ones (fedmedian, trimmed, krum) and off otherwise
(``screen=True`` turns it on anywhere).

>>> import numpy as np
>>> updates = [Update("a", 1, np.array([1.0]), 10), Update("b", 1, np.array([3.0]), 30)]
>>> get_strategy("fedavg").aggregate(updates).vector.tolist()
[2.5]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models import aggregate as agg
from models.errors import InvalidSummaryError, StaleUpdateError, UnknownSpecError
from models.privacy import clip_by_l2_norm, gaussian_mechanism
from models.screening import screen
from models.staleness import staleness_weight


@dataclass(frozen=True)
class Update:
    """One node's learned parameters as a flat float64 vector."""

    node_id: str
    sequence: int
    vector: np.ndarray
    n_samples: int
    staleness: int = 0


@dataclass(frozen=True)
class AggregateResult:
    vector: np.ndarray
    weights: dict[str, float]
    excluded: dict[str, str]


class Strategy(Protocol):
    name: str

    def aggregate(
        self, updates: Sequence[Update], current: np.ndarray | None = None
    ) -> AggregateResult: ...


# (kept vectors, their updates, current) -> (vector, weights per kept update)
Core = Callable[[np.ndarray, Sequence[Update], np.ndarray | None], tuple[np.ndarray, np.ndarray]]


@dataclass
class Pipeline:
    """DP → screening → core aggregation; shared by every named strategy."""

    name: str
    core: Core
    screen: bool = False
    screen_threshold: float = 3.5
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    seed: int | None = None
    pre_exclude: Callable[[Sequence[Update]], dict[int, str]] | None = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def aggregate(
        self, updates: Sequence[Update], current: np.ndarray | None = None
    ) -> AggregateResult:
        matrix = _validated(updates, current)
        excluded = dict(self.pre_exclude(updates)) if self.pre_exclude else {}
        origin = np.zeros(matrix.shape[1]) if current is None else np.asarray(current, float)
        deltas = self._privatize(matrix - origin)
        candidates = [i for i in range(len(updates)) if i not in excluded]
        if not candidates:
            raise InvalidSummaryError("every update was excluded: " + "; ".join(excluded.values()))
        if self.screen:
            result = screen(deltas[candidates], self.screen_threshold)
            excluded |= {candidates[i]: why for i, why in result.excluded.items()}
        kept = [i for i in candidates if i not in excluded]
        vector, weights = self.core(origin + deltas[kept], [updates[i] for i in kept], current)
        return AggregateResult(
            vector=np.asarray(vector, dtype=np.float64),
            weights={updates[i].node_id: float(w) for i, w in zip(kept, weights, strict=True)},
            excluded={updates[i].node_id: why for i, why in sorted(excluded.items())},
        )

    def _privatize(self, deltas: np.ndarray) -> np.ndarray:
        if self.clip_norm is None:
            return deltas
        if self.noise_multiplier > 0:
            return np.stack([gaussian_mechanism(d, self.clip_norm, self.noise_multiplier,
                                                self._rng) for d in deltas])  # fmt: skip
        return np.stack([clip_by_l2_norm(d, self.clip_norm) for d in deltas])


def _validated(updates: Sequence[Update], current: np.ndarray | None) -> np.ndarray:
    if len(updates) == 0:
        raise InvalidSummaryError("no updates to aggregate")
    for u in updates:
        if u.n_samples < 0:
            raise InvalidSummaryError(f"node {u.node_id!r}: negative n_samples {u.n_samples}")
    if sum(u.n_samples for u in updates) <= 0:
        raise InvalidSummaryError("the updates carry zero samples in total")
    matrix = agg.stack([u.vector for u in updates])
    if current is not None:
        current = np.asarray(current, dtype=np.float64)
        if current.shape != (matrix.shape[1],) or not np.all(np.isfinite(current)):
            raise InvalidSummaryError("the current global vector does not match the updates")
    return matrix


def _sample_weights(updates: Sequence[Update]) -> np.ndarray:
    n = np.array([u.n_samples for u in updates], dtype=np.float64)
    if n.sum() <= 0:
        raise InvalidSummaryError("the kept updates carry zero samples")
    return n / n.sum()


def _equal(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def _fedavg(m: np.ndarray, ups: Sequence[Update], cur: np.ndarray | None) -> Any:
    w = _sample_weights(ups)
    return w @ m, w


def _median(m: np.ndarray, ups: Sequence[Update], cur: np.ndarray | None) -> Any:
    return agg.fedmedian(list(m)), _equal(len(m))


def _trimmed(beta: float) -> Core:
    return lambda m, ups, cur: (agg.trimmed_mean(list(m), beta), _equal(len(m)))


def _krum(f: int, keep: int) -> Core:
    def core(m: np.ndarray, ups: Sequence[Update], cur: np.ndarray | None) -> Any:
        vector, selected = agg.krum(list(m), f, keep)
        weights = np.zeros(len(m))
        weights[selected] = 1.0 / len(selected)
        return vector, weights

    return core


def _server(optimizer: agg.FedAvgM | agg.FedAdam) -> Core:
    def core(m: np.ndarray, ups: Sequence[Update], cur: np.ndarray | None) -> Any:
        vector, w = _fedavg(m, ups, cur)
        return (vector if cur is None else optimizer.step(cur, vector)), w

    return core


def _async(mixing: float, **decay: Any) -> tuple[Core, Callable[[Sequence[Update]], dict]]:
    def too_stale(updates: Sequence[Update]) -> dict[int, str]:
        out = {}
        for i, u in enumerate(updates):
            try:
                staleness_weight(u.staleness, node_id=u.node_id, **decay)
            except StaleUpdateError as e:
                out[i] = str(e)
        return out

    def core(m: np.ndarray, ups: Sequence[Update], cur: np.ndarray | None) -> Any:
        s = np.array([staleness_weight(u.staleness, node_id=u.node_id, **decay) for u in ups])
        w = _sample_weights(ups) * s
        w = w / w.sum()
        vector = w @ m
        if cur is None:
            return vector, w
        alpha = mixing * float(s.max())
        return (1 - alpha) * cur + alpha * vector, w

    return core, too_stale


STRATEGY_NAMES = (
    "fedavg",
    "exact",
    "fedmedian",
    "trimmed:0.1",
    "krum",
    "multikrum:f=1,m=3",
    "fedavgm",
    "fedadam",
    "async",
)
_ROBUST = {"fedmedian", "trimmed", "krum", "multikrum"}
_PIPELINE_OPTIONS = {"screen", "screen_threshold", "clip_norm", "noise_multiplier", "seed"}


def _parse(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """``"multikrum:f=1,m=3"`` -> ("multikrum", [], {"f": "1", "m": "3"})."""
    name, _, rest = spec.strip().lower().partition(":")
    positional, named = [], {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if eq:
            named[key.strip()] = value.strip()
        else:
            positional.append(key.strip())
    return name, positional, named


def get_strategy(spec: str, **options: Any) -> Strategy:
    """The strategy named by ``spec`` (see the module docstring), configured by ``options``.

    Options: ``screen``, ``screen_threshold``, ``clip_norm``, ``noise_multiplier``,
    ``seed`` for every strategy; ``mixing``, ``max_staleness``, ``exponent``,
    ``kind``, ``hinge_after`` for ``async``; ``server_lr``, ``momentum`` /
    ``beta1``, ``beta2``, ``tau`` for the server optimizers.
    """
    name, positional, named = _parse(spec)
    pipeline = {k: options.pop(k) for k in list(options) if k in _PIPELINE_OPTIONS}
    pipeline.setdefault("screen", name in _ROBUST)
    try:
        core, pre = _core(name, positional, named, options)
    except (TypeError, ValueError) as e:
        raise UnknownSpecError(f"bad strategy {spec!r}: {e}") from e
    return Pipeline(name=spec, core=core, pre_exclude=pre, **pipeline)


def _core(name: str, positional: list[str], named: dict[str, str], options: dict) -> Any:
    if name in ("fedavg", "exact"):
        return _fedavg, None
    if name == "fedmedian":
        return _median, None
    if name == "trimmed":
        return _trimmed(float(positional[0] if positional else named.get("beta", 0.1))), None
    if name in ("krum", "multikrum"):
        f = int(named.get("f", 1 if name == "multikrum" else 0))
        keep = int(named.get("m", 3 if name == "multikrum" else 1))
        return _krum(f, keep), None
    if name == "fedavgm":
        return _server(agg.FedAvgM(**options)), None
    if name == "fedadam":
        return _server(agg.FedAdam(**options)), None
    if name == "async":
        return _async(float(options.pop("mixing", 0.5)), **options)
    raise UnknownSpecError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGY_NAMES)}")

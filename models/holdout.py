"""A held-back labelled sample and a model's score on it: what the merger judges a global by.

The merger scores every new global on labelled events that no node trained
on, before it publishes it. Those events come one by one from a topic of any
length, so they are kept in a bounded :class:`Reservoir` (Vitter's Algorithm
R): after ``n`` offers each event is in it with probability ``capacity / n``,
a uniform sample of everything offered, whatever the order. The generator is
seeded, so the same events offered in the same order give the same sample --
a restarted merger that reads its holdout topic again judges as before.

The metric is ROC AUC when the sample holds both classes (it ranks, so a
fraud model and an anomaly detector, whose scores mean different things, are
judged alike), else log loss (one class only: AUC is undefined, and log loss
still tells a model that is sure and right from one that is sure and wrong).

Examples
--------
>>> r = Reservoir(capacity=2, seed=1)
>>> for i in range(5):
...     r.offer({"x": float(i)}, i % 2 == 0)
>>> len(r), r.seen
(2, 5)
>>> roc_auc(np.array([True, False, True]), np.array([0.9, 0.5, 0.5]))
0.75
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ModelError
from models.specs.base import ModelSpec
from models.summary import Summary

__all__ = ["HoldoutScore", "Reservoir", "log_loss", "roc_auc", "score_holdout"]

#: scores are clipped this far from 0 and 1, so a sure and wrong score costs ~34.5, not infinity
LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class HoldoutScore:
    """A model's metric on the holdout: ``roc_auc`` (higher is better) or ``log_loss``."""

    metric: str
    value: float
    n: int

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "roc_auc"

    def worse_by(self, other: HoldoutScore) -> float:
        """How much worse this score is than ``other`` (negative: better); same metric only."""
        if self.metric != other.metric:
            raise ModelError(f"cannot compare {self.metric} with {other.metric}")
        gap = other.value - self.value
        return gap if self.higher_is_better else -gap

    def as_metrics(self, prefix: str = "holdout_") -> dict[str, float]:
        return {f"{prefix}{self.metric}": self.value, f"{prefix}n": float(self.n)}


class Reservoir:
    """A uniform sample of at most ``capacity`` labelled events (Algorithm R).

    ``revision`` changes whenever the sample does, so a score computed on one
    revision can be cached until the sample moves.
    """

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ModelError(f"a holdout reservoir holds at least 1 event, got {capacity}")
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._x: list[Mapping[str, float]] = []
        self._y: list[bool] = []
        self.seen = 0
        self.revision = 0

    def __len__(self) -> int:
        return len(self._x)

    def offer(self, x: Mapping[str, float], y: bool) -> None:
        self.seen += 1
        if len(self._x) < self.capacity:
            self._x.append(dict(x))
            self._y.append(bool(y))
        else:
            slot = self._rng.randrange(self.seen)
            if slot >= self.capacity:
                return
            self._x[slot], self._y[slot] = dict(x), bool(y)
        self.revision += 1

    @property
    def events(self) -> tuple[Sequence[Mapping[str, float]], np.ndarray]:
        return self._x, np.array(self._y, dtype=bool)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney ROC AUC, ties counted half; None unless both classes occur."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(len(scores))
    # average rank per run of equal scores: ties count half
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    for lo, hi in zip(starts, ends, strict=True):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under the scores (clipped to [eps, 1-eps])."""
    labels = np.asarray(labels, bool)
    if len(labels) == 0:
        raise ModelError("log loss of no events")
    p = np.clip(np.asarray(scores, np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def score_holdout(spec: ModelSpec, summary: Summary, reservoir: Reservoir) -> HoldoutScore | None:
    """``summary``'s metric on the reservoir's events; None while it is empty.

    Events are scored in groups of equal feature names (``score_many`` over
    those columns), which is ``score_one`` row by row: a missing feature is
    absent, never a zero the scaler would shift.
    """
    xs, labels = reservoir.events
    if not xs:
        return None
    model = spec.load(summary)
    scores = np.empty(len(xs))
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(tuple(sorted(x)), []).append(i)
    for names, rows in groups.items():
        X = np.array([[xs[i][f] for f in names] for i in rows], dtype=np.float64)
        scores[rows] = spec.score_many(model, X.reshape(len(rows), len(names)), names)
    auc = roc_auc(labels, scores)
    if auc is not None:
        return HoldoutScore("roc_auc", auc, len(xs))
    return HoldoutScore("log_loss", log_loss(labels, scores), len(xs))

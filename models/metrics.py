"""Prequential metrics whose state merges exactly across nodes and tiers.

River's metrics answer for one stream, and ``metric_a + metric_b`` does not
merge two nodes' ROC AUC (it keeps one approximation's state). To compare
architectures -- a fleet of edges vs one centre -- a merger must combine
per-node metrics into the metric of the union of their streams. Counts do
that: a confusion matrix at a fixed threshold (precision, recall, F1), and
histograms of positive and negative scores over fixed bins of [0, 1] (ROC
AUC). Adding counts is associative and commutative, so merge order and tier
shape do not matter.

The histogram AUC counts pairs in the same bin as ties (1/2), so it differs
from the exact AUC by at most half the share of positive-negative pairs that
share a bin -- :attr:`BinaryMetrics.auc_error_bound`; with 1,000 bins and
spread scores that is well below 0.01.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from models.errors import ModelError

__all__ = ["BinaryMetrics", "WindowedMetrics"]

#: up to this many rows, ``WindowedMetrics.update_many`` updates row by row (cheaper
#: than numpy's per-call set-up; measured in docs/performance.md, "Per-batch costs")
FEW_ROWS = 32


def _labels_scores(
    y_true: Iterable[bool], scores: Iterable[float]
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(list(y_true) if not isinstance(y_true, np.ndarray) else y_true, dtype=bool)
    s = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ModelError(f"labels and scores must be 1-d and equally long: {y.shape} vs {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ModelError("scores must be finite numbers")
    return y, s


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass
class BinaryMetrics:
    """Confusion counts at ``threshold`` and score histograms over ``bins`` bins.

    Scores are expected in [0, 1] (every spec scores there); values outside
    fall in the end bins. Ratios with an empty denominator are 0, as in
    scikit-learn's ``zero_division=0``; AUC is None until both classes occur.

    Examples
    --------
    >>> a, b = BinaryMetrics(), BinaryMetrics()
    >>> a.update_many([True, False], [0.9, 0.2])
    >>> b.update_many([True, False], [0.4, 0.7])
    >>> m = a + b
    >>> m.tp, m.fp, m.fn, m.tn, round(m.f1, 3), m.auc
    (1, 1, 1, 1, 0.5, 0.75)
    """

    threshold: float = 0.5
    bins: int = 1000
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    pos_hist: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    neg_hist: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.bins, int) or self.bins < 1:
            raise ModelError(f"bins must be a positive integer, got {self.bins!r}")
        if not np.isfinite(self.threshold):
            raise ModelError("threshold must be a finite number")
        for name in ("pos_hist", "neg_hist"):
            value = getattr(self, name)
            hist = np.zeros(self.bins, np.int64) if value is None else np.array(value, np.int64)
            if hist.shape != (self.bins,) or np.any(hist < 0):
                raise ModelError(f"{name} must hold {self.bins} non-negative counts")
            setattr(self, name, hist)
        if min(self.tp, self.fp, self.tn, self.fn) < 0:
            raise ModelError("confusion counts must be >= 0")

    def update(self, y_true: bool, score: float) -> None:
        """Add one labelled score (test-then-train: score before learning).

        What ``update_many`` does for one row, in plain Python: an edge agent
        grades every event one at a time, and numpy's per-call cost for a
        one-element batch was a third of the agent's loop.
        """
        s = float(score)
        if not math.isfinite(s):
            raise ModelError("scores must be finite numbers")
        y = bool(y_true)
        if s >= self.threshold:
            if y:
                self.tp += 1
            else:
                self.fp += 1
        elif y:
            self.fn += 1
        else:
            self.tn += 1
        index = 0 if s < 0 else self.bins - 1 if s >= 1 else min(int(s * self.bins), self.bins - 1)
        (self.pos_hist if y else self.neg_hist)[index] += 1

    def update_many(self, y_true: Iterable[bool], scores: Iterable[float]) -> None:
        y, s = _labels_scores(y_true, scores)
        predicted = s >= self.threshold
        self.tp += int(np.sum(y & predicted))
        self.fp += int(np.sum(~y & predicted))
        self.fn += int(np.sum(y & ~predicted))
        self.tn += int(np.sum(~y & ~predicted))
        index = np.clip((s * self.bins).astype(np.int64), 0, self.bins - 1)
        self.pos_hist += np.bincount(index[y], minlength=self.bins)
        self.neg_hist += np.bincount(index[~y], minlength=self.bins)

    def __add__(self, other: BinaryMetrics) -> BinaryMetrics:
        """Merge: the metrics of both streams together."""
        if not isinstance(other, BinaryMetrics):
            return NotImplemented
        if (self.threshold, self.bins) != (other.threshold, other.bins):
            raise ModelError("only metrics with the same threshold and bins merge")
        return BinaryMetrics(
            self.threshold,
            self.bins,
            self.tp + other.tp,
            self.fp + other.fp,
            self.tn + other.tn,
            self.fn + other.fn,
            self.pos_hist + other.pos_hist,
            self.neg_hist + other.neg_hist,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BinaryMetrics):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()

    def as_tuple(self) -> tuple:
        return (
            self.threshold,
            self.bins,
            self.tp,
            self.fp,
            self.tn,
            self.fn,
            tuple(self.pos_hist.tolist()),
            tuple(self.neg_hist.tolist()),
        )

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def auc(self) -> float | None:
        """ROC AUC from the histograms; same-bin pairs count 1/2."""
        p, q = int(self.pos_hist.sum()), int(self.neg_hist.sum())
        if p == 0 or q == 0:
            return None
        below = np.concatenate([[0], np.cumsum(self.neg_hist)[:-1]])
        wins = float(np.sum(self.pos_hist * (below + 0.5 * self.neg_hist)))
        return wins / (p * q)

    @property
    def auc_error_bound(self) -> float | None:
        """Largest possible gap between :attr:`auc` and the exact AUC."""
        p, q = int(self.pos_hist.sum()), int(self.neg_hist.sum())
        if p == 0 or q == 0:
            return None
        return 0.5 * float(np.sum(self.pos_hist * self.neg_hist)) / (p * q)

    def to_dict(self) -> dict[str, float]:
        """Headline values for the ``metrics`` map of WeightSummary/GlobalModel."""
        out = {
            "n": float(self.n),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
        }
        if self.auc is not None:
            out["roc_auc"] = self.auc
        return out


@dataclass
class WindowedMetrics:
    """Metrics per fixed time period, keeping the latest ``n_periods``: metric over time.

    Periods are aligned on absolute time (``ts_ms // period_ms``), so two
    nodes' period k cover the same wall-clock interval and merge bucket by
    bucket; merging keeps the newest ``n_periods`` periods of the union,
    which is associative and commutative.

    Examples
    --------
    >>> w = WindowedMetrics(period_ms=1000, n_periods=2)
    >>> for ts, y, s in [(0, True, 0.9), (1500, False, 0.8), (2500, True, 0.1)]:
    ...     w.update(ts, y, s)
    >>> [start for start, _ in w.series()], w.total().n
    ([1000, 2000], 2)
    """

    period_ms: int
    n_periods: int
    threshold: float = 0.5
    bins: int = 1000
    buckets: dict[int, BinaryMetrics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.period_ms < 1 or self.n_periods < 1:
            raise ModelError("period_ms and n_periods must be >= 1")

    def _bucket(self, key: int) -> BinaryMetrics:
        if key not in self.buckets:
            self.buckets[key] = BinaryMetrics(self.threshold, self.bins)
        return self.buckets[key]

    def _trim(self) -> None:
        for key in sorted(self.buckets)[: -self.n_periods]:
            del self.buckets[key]

    def update(self, ts_ms: int, y_true: bool, score: float) -> None:
        key = int(ts_ms) // self.period_ms
        bucket = self.buckets.get(key)
        if bucket is None:  # only a new period can push the oldest out
            bucket = self._bucket(key)
            bucket.update(y_true, score)
            self._trim()
        else:
            bucket.update(y_true, score)

    def update_many(
        self, ts_ms: Iterable[int], y_true: Iterable[bool], scores: Iterable[float]
    ) -> None:
        """Same as ``update`` row by row, one histogram update per period touched.

        A few rows go through ``update`` itself: numpy's set-up per call cost
        more than the rows (a worker at the head of its topics measures a
        handful of labels per partition and batch). Checked first, so a bad
        row still changes nothing.
        """
        if not isinstance(ts_ms, np.ndarray) and len(ts_ms := list(ts_ms)) <= FEW_ROWS:
            y_true, scores = list(y_true), list(scores)
            if not len(ts_ms) == len(y_true) == len(scores):
                raise ModelError("ts_ms, y_true and scores must have the same length")
            if not all(math.isfinite(s) for s in scores):
                raise ModelError("scores must be finite numbers")
            for row in zip(ts_ms, y_true, scores, strict=True):
                self.update(*row)
            return
        keys = np.asarray(list(ts_ms), dtype=np.int64) // self.period_ms
        y, s = _labels_scores(y_true, scores)
        if len(keys) != len(y):
            raise ModelError("ts_ms, y_true and scores must have the same length")
        for key in np.unique(keys):
            rows = keys == key
            self._bucket(int(key)).update_many(y[rows], s[rows])
        self._trim()

    def __add__(self, other: WindowedMetrics) -> WindowedMetrics:
        if not isinstance(other, WindowedMetrics):
            return NotImplemented
        if (self.period_ms, self.n_periods) != (other.period_ms, other.n_periods):
            raise ModelError("only windows with the same period and length merge")
        out = WindowedMetrics(self.period_ms, self.n_periods, self.threshold, self.bins)
        for key in set(self.buckets) | set(other.buckets):
            merged = BinaryMetrics(self.threshold, self.bins)
            for part in (self.buckets.get(key), other.buckets.get(key)):
                merged = merged + part if part is not None else merged
            out.buckets[key] = merged
        out._trim()
        return out

    def series(self) -> list[tuple[int, BinaryMetrics]]:
        """(period start in ms, metrics of that period), oldest first."""
        return [(k * self.period_ms, self.buckets[k]) for k in sorted(self.buckets)]

    def total(self) -> BinaryMetrics:
        """The metrics of the whole window."""
        out = BinaryMetrics(self.threshold, self.bins)
        for _, m in self.series():
            out = out + m
        return out

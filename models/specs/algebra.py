"""The summary algebra: what Prism does with summaries, apart from live models.

A :class:`SummaryAlgebra` acts on :class:`~models.summary.Summary` objects
only -- check, align, merge exactly, take apart, rebase, blend -- and never
touches a River model, as Flower keeps its math in ``aggregate.py`` apart
from its strategies. Each spec owns one (``spec.algebra``); the defaults
here hold for every spec, and a spec's subclass overrides only what its
tensors make different. :mod:`models.merge` tells which tensors merge
exactly (``merge_exact``) and which form the *learned vector* that
aggregation strategies average (``learned_vector``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from models.errors import IncompatibleSummariesError, InvalidSummaryError, ModelError
from models.summary import Summary

__all__ = ["SummaryAlgebra", "check_alpha", "reindex"]


def check_alpha(alpha: float) -> float:
    """Blending weights live in [0, 1]; anything else is a caller's mistake."""
    if not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ModelError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def reindex(
    array: np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    axes: tuple[int, ...],
) -> np.ndarray:
    """Move per-feature ``axes`` of ``array`` from ``source`` to ``target`` order.

    Features absent from ``source`` are filled with zeros: a node that never
    saw a feature has count 0, mean 0, variance 0 and weight 0 there.

    Examples
    --------
    >>> reindex(np.array([1.0, 2.0]), ("a", "b"), ("b", "c", "a"), (0,)).tolist()
    [2.0, 0.0, 1.0]
    >>> reindex(np.zeros(0), (), ("a", "b"), (0,)).tolist()  # a node that saw no feature yet
    [0.0, 0.0]
    """
    if len(source) == 0:
        shape = list(array.shape)
        for axis in axes:
            shape[axis] = len(target)
        return np.zeros(shape, dtype=array.dtype)
    position = {f: i for i, f in enumerate(source)}
    take = np.array([position.get(f, -1) for f in target], dtype=np.int64)
    missing = take < 0
    out = array
    for axis in axes:
        picked = np.take(out, np.where(missing, 0, take), axis=axis)
        mask_shape = [1] * out.ndim
        mask_shape[axis] = len(target)
        out = np.where(missing.reshape(mask_shape), 0, picked).astype(array.dtype)
    return out


class SummaryAlgebra(abc.ABC):
    """The operations on one spec's summaries; subclasses fill in its tensors.

    Built with the identity a summary must carry (spec name, kind and
    hyper-parameters), so that ``check`` can refuse anything else.
    """

    #: tensor name -> the axes that run over features (the rest are not per-feature).
    feature_axes: ClassVar[Mapping[str, tuple[int, ...]]]
    #: tensors holding counts (int64 on the wire, never quantized).
    count_tensors: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, kind: str, params: Mapping[str, str]) -> None:
        self.name, self.kind, self.params = name, kind, dict(params)

    # -- validity -------------------------------------------------------------
    def check(self, summary: Summary) -> Summary:
        """Raise unless ``summary`` was made by this spec with these parameters."""
        if not isinstance(summary, Summary):
            raise InvalidSummaryError(f"expected a Summary, got {type(summary).__name__}")
        if summary.model_name != self.name or summary.kind != self.kind:
            raise IncompatibleSummariesError(
                f"{summary.model_name!r}/{summary.kind!r} is not a {self.name!r}/{self.kind!r}"
            )
        if dict(summary.params) != self.params:
            raise IncompatibleSummariesError(
                f"{self.name!r} summary from node {summary.node_id!r} has parameters "
                f"{dict(summary.params)}, this spec uses {self.params}; "
                "nodes must run the same spec version"
            )
        self._check_tensors(summary)
        return summary

    def _check_tensors(self, summary: Summary) -> None:
        d = len(summary.features)
        for name, axes in self.feature_axes.items():
            array = summary.tensor(name)
            if any(array.ndim <= a or array.shape[a] != d for a in axes):
                raise InvalidSummaryError(
                    f"{self.name!r}: tensor {name!r} has shape {array.shape}, "
                    f"expected {d} along axes {axes} (one per feature)"
                )
        for name in self.count_tensors:
            if np.any(summary.tensor(name) < 0):
                raise InvalidSummaryError(f"{self.name!r}: tensor {name!r} has negative counts")

    # -- features -------------------------------------------------------------
    def union_features(self, summaries: Sequence[Summary]) -> tuple[str, ...]:
        """Default: joint statistics need one feature set; return it sorted."""
        first = set(summaries[0].features)
        for s in summaries[1:]:
            if set(s.features) != first:
                raise IncompatibleSummariesError(
                    f"{self.name!r} summaries cover different features "
                    f"({sorted(first)} vs {sorted(s.features)}); its state is joint across "
                    "features, so every node must see the same feature set"
                )
        return tuple(sorted(first))

    def align(self, summary: Summary, features: Sequence[str]) -> Summary:
        """The same summary with per-feature tensors in ``features`` order."""
        features = tuple(features)
        if summary.features == features:
            return summary
        tensors = dict(summary.tensors)
        for name, axes in self.feature_axes.items():
            tensors[name] = reindex(tensors[name], summary.features, features, axes)
        return replace(summary, features=features, tensors=tensors)

    # -- the learned part (what strategies aggregate) -------------------------
    def learned_vector(self, summary: Summary) -> np.ndarray:
        """The part strategies aggregate; empty when everything merges exactly."""
        return np.zeros(0)

    def learned_mask(self, summary: Summary) -> np.ndarray:
        """Which learned coordinates this summary has an opinion on."""
        return np.ones(len(self.learned_vector(summary)), dtype=bool)

    def with_learned_vector(self, summary: Summary, vector: np.ndarray) -> Summary:
        """``summary`` with its learned part replaced by ``vector``."""
        if np.asarray(vector).size:
            raise ModelError(f"{self.name!r} has no learned vector")
        return summary

    def signature(self, summary: Summary) -> np.ndarray:
        """What screening compares across nodes; the learned vector by default."""
        return self.learned_vector(summary)

    # -- the exact part -------------------------------------------------------
    @abc.abstractmethod
    def merge_exact(
        self, summaries: Sequence[Summary], base: Summary | None = None
    ) -> dict[str, np.ndarray]:
        """Exactly merged tensors of aligned summaries (plus ``base``'s statistics)."""

    @abc.abstractmethod
    def unmerge_exact(self, total: Summary, part: Summary) -> Summary:
        """``total`` with the statistics of ``part`` taken out (same features)."""

    # -- personalization ------------------------------------------------------
    def rebase(self, new_global: Summary, local: Summary, old_global: Summary | None) -> Summary:
        """``new_global`` plus what ``local`` learned since ``old_global`` (rule "delta").

        Exact statistics: ``new_global (+) (local (-) old_global)``. Learned
        vector: ``new_global + (local - old_global)`` on the coordinates the
        local model has seen; elsewhere the new global value stands. Without
        ``old_global`` the local model started from scratch, so all of it is
        progress.
        """
        parts = [new_global, local] + ([old_global] if old_global is not None else [])
        features = self.union_features(parts)
        ng, lo = self.align(new_global, features), self.align(local, features)
        og = self.align(old_global, features) if old_global is not None else None
        progress = lo if og is None else self.unmerge_exact(lo, og)
        vector = self.learned_vector(ng)
        if vector.size:
            before = self.learned_vector(og) if og is not None else np.zeros_like(vector)
            drift = self.learned_vector(lo) - before
            vector = vector + np.where(self.learned_mask(lo), drift, 0.0)
        tensors = dict(lo.tensors) | self.merge_exact([ng, progress])
        n = new_global.n_samples + progress.n_samples
        rebased = replace(lo, n_samples=n, tensors=tensors, base_version=new_global.base_version)
        return self.with_learned_vector(rebased, vector)

    @abc.abstractmethod
    def blend(self, global_: Summary, local: Summary, alpha: float) -> Summary:
        """A model between ``local`` (alpha=0) and ``global_`` (alpha=1)."""

    def pull_toward(self, local: Summary, global_: Summary, share: float) -> Summary:
        """``local`` moved ``share`` of the way toward ``global_`` where the fleet knows better.

        A personal model's regularizer toward the global (Ditto, Li et al.
        2021). The default leaves ``local`` as it is: a spec without a
        supervised objective (anomaly detectors) has nothing to regularize,
        and its per-site statistics are what personalization is for.
        """
        check_alpha(share)
        return local

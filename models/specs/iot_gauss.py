"""``iot-gauss``: an online multivariate Gaussian per fleet, exactly mergeable.

The model is :class:`models.gaussian.GaussianScorer`: running mean and
covariance (Welford), score = chi-square CDF of the Mahalanobis distance.
Its whole state is (n, mean, covariance), which merges exactly by the parallel
covariance formula, so a fleet's merged model is the model of all its data.

Hyper-parameters: ``ridge=1e-3`` (relative diagonal loading, see the scorer),
``min_samples=10`` (no scores before; a covariance of fewer points is noise).

Summary tensors: ``mean`` (p,) and ``cov`` (p, p), the population covariance;
the count is ``n_samples``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from models.errors import ModelError
from models.exact import guarded, merge_covariances, unmerge_covariances
from models.gaussian import GaussianScorer
from models.specs.algebra import SummaryAlgebra, check_alpha
from models.specs.base import ModelSpec
from models.specs.batch import Batch, Features
from models.summary import Summary

__all__ = ["IotGauss", "IotGaussAlgebra"]

RIDGE, MIN_SAMPLES = 1e-3, 10


class IotGaussAlgebra(SummaryAlgebra):
    """Count, mean and covariance: everything merges exactly, nothing is averaged."""

    feature_axes = {"mean": (0,), "cov": (0, 1)}

    def signature(self, summary: Summary) -> np.ndarray:
        """Means and standard deviations, for screening."""
        return np.concatenate([summary.tensor("mean"), np.sqrt(np.diag(summary.tensor("cov")))])

    def merge_exact(
        self, summaries: Sequence[Summary], base: Summary | None = None
    ) -> dict[str, np.ndarray]:
        parts = [*summaries, base] if base is not None else list(summaries)
        _, mean, cov = merge_covariances(
            np.array([s.n_samples for s in parts], dtype=np.int64),
            np.stack([s.tensor("mean") for s in parts]),
            np.stack([s.tensor("cov") for s in parts]),
        )
        return {"mean": mean, "cov": cov}

    def unmerge_exact(self, total: Summary, part: Summary) -> Summary:
        part = self.align(part, total.features)
        n, mean, cov = unmerge_covariances(
            (total.n_samples, total.tensor("mean"), total.tensor("cov")),
            (part.n_samples, part.tensor("mean"), part.tensor("cov")),
        )
        return replace(total, n_samples=n, tensors={"mean": mean, "cov": cov})

    @guarded
    def blend(self, global_: Summary, local: Summary, alpha: float) -> Summary:
        """The Gaussian matching the mean and covariance of the alpha-mixture.

        Each side weighs alpha / 1 - alpha whatever its count (a side with no
        samples drops out); ``n_samples`` is the same mixture of the counts --
        an effective count.
        """
        alpha = check_alpha(alpha)
        global_, local = self.check(global_), self.check(local)
        if alpha in (0.0, 1.0):
            return local if alpha == 0.0 else global_
        features = self.union_features([global_, local])
        sides = [
            (s, w)
            for s, w in (
                (self.align(global_, features), alpha),
                (self.align(local, features), 1 - alpha),
            )
            if s.n_samples
        ]
        if not sides:
            return local
        total = sum(w for _, w in sides)
        mean = sum(w / total * s.tensor("mean") for s, w in sides)
        cov = sum(
            w
            / total
            * (s.tensor("cov") + np.outer(s.tensor("mean") - mean, s.tensor("mean") - mean))
            for s, w in sides
        )
        n = round(alpha * global_.n_samples + (1 - alpha) * local.n_samples)
        return replace(
            local,
            features=features,
            n_samples=max(n, 1),
            tensors={"mean": mean, "cov": cov},
            base_version=global_.base_version,
        )


class IotGauss(ModelSpec):
    """Gaussian anomaly scorer over a fixed sensor set; score in [0, 1].

    Examples
    --------
    >>> spec = IotGauss()
    >>> model = spec.new_model()
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> spec.learn_many(model, X, features=["a", "b", "c"])
    >>> s = spec.summarize(model)
    >>> s.n_samples, s.tensors["cov"].shape
    (200, (3, 3))
    """

    name = "iot-gauss"
    kind = "gauss"
    task = "iot"
    algebra_type = IotGaussAlgebra

    @property
    def params(self) -> dict[str, str]:
        return {
            "version": "1",
            "ridge": repr(RIDGE),
            "min_samples": str(MIN_SAMPLES),
            "score": "chi2-wilson-hilferty",
        }

    def new_model(self) -> GaussianScorer:
        return GaussianScorer(ridge=RIDGE, min_samples=MIN_SAMPLES)

    def learn_one(
        self, model: GaussianScorer, x: Mapping[str, float], y: bool | None = None
    ) -> None:
        model.learn_one(x)

    def score_one(self, model: GaussianScorer, x: Mapping[str, float]) -> float:
        return model.score_one(x)

    def _columns(self, model: GaussianScorer, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """``X`` re-ordered into the model's features; absent ones at the mean."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(features):
            raise ModelError(f"X must have one column per feature ({len(features)})")
        if not model.features:
            model.load_state(
                tuple(sorted(features)), 0, np.zeros(len(features)), np.zeros((len(features),) * 2)
            )
        position = {f: i for i, f in enumerate(features)}
        mean = model.mean
        out = np.empty((len(X), len(model.features)))
        for j, f in enumerate(model.features):
            out[:, j] = X[:, position[f]] if f in position else mean[j]
        return out

    def learn_many(
        self,
        model: GaussianScorer,
        X: Sequence[Mapping[str, float]] | Sequence[Sequence[float]] | np.ndarray,
        y: Sequence[bool | None] | np.ndarray | None = None,
        *,
        features: Features | None = None,
    ) -> None:
        """A matrix merges in one step (Chan); dicts and key-tuple rows learn event by event.

        An event lacking a feature learns it at the running mean of its own
        step, which only the ``learn_one`` loop reproduces.
        """
        batch = Batch.of(X, y, features)
        if batch.columns is None:
            for x, _ in batch.events():
                model.learn_one(x)
        else:
            model.learn_many(self._columns(model, batch.values, batch.columns))

    def score_many(
        self, model: GaussianScorer, X: np.ndarray, features: Sequence[str]
    ) -> np.ndarray:
        if not model.features:
            return np.zeros(len(X))
        return model.score_many(self._columns(model, X, features))

    def summarize(self, model: GaussianScorer) -> Summary:
        tensors = {"mean": model.mean, "cov": model.covariance}
        return Summary(self.name, self.kind, model.features, model.n, tensors, self.params)

    def apply(self, summary: Summary, model: GaussianScorer) -> None:
        self.algebra.check(summary)
        model.load_state(
            summary.features, summary.n_samples, summary.tensor("mean"), summary.tensor("cov")
        )

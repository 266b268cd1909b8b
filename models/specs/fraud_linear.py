"""``fraud-linear``: StandardScaler | LogisticRegression for card fraud.

Hyper-parameters (fixed; a change is a new spec version, and summaries of
different versions refuse to merge):

- ``optimizer = SGD(lr=0.02)`` -- plain SGD keeps no per-weight optimizer
  state (Adam/AdaGrad moments cannot be averaged meaningfully), so the
  weights *are* the whole learned state and FedAvg over them is sound. 0.02
  was the best prequential ROC AUC among 0.005-0.1 on a 2 %-fraud synthetic
  stream of 30 features.
- ``l2 = 1e-4`` -- a light pull towards 0 that keeps weights of rarely seen
  features bounded on non-IID nodes, where one store may see a feature
  almost only in fraud.
- ``intercept_lr = 0.02`` -- the intercept tracks the local fraud rate at the
  same pace as the weights.

Summary tensors: ``count``/``mean``/``var`` (scaler, merged exactly),
``weights`` (one per feature) and ``intercept`` (shape ``(1,)``); the learned
vector that strategies aggregate is ``[*weights, intercept]``. ``n_samples``
is the optimizer's step count, i.e. labelled events learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from river import compose, linear_model, optim, preprocessing

from models import river_adapter
from models.errors import ModelError
from models.exact import guarded
from models.specs.algebra import SummaryAlgebra, check_alpha
from models.specs.base import ModelSpec
from models.specs.batch import Batch, Features
from models.specs.scaling import (
    SCALER_AXES,
    apply_scaler,
    merge_scaler,
    mix_scaler,
    scaler_tensors,
    unmerge_scaler,
)
from models.summary import Summary

__all__ = ["FraudLinear", "FraudLinearAlgebra"]

LR = 0.02
L2 = 1e-4
INTERCEPT_LR = 0.02


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """River's logistic link, including its saturation beyond |z| > 30."""
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return np.where(z < -30.0, 0.0, np.where(z > 30.0, 1.0, p))


class FraudLinearAlgebra(SummaryAlgebra):
    """Scaler statistics merge exactly; weights and intercept are the learned vector."""

    feature_axes = {**SCALER_AXES, "weights": (0,)}
    count_tensors = frozenset({"count"})

    def union_features(self, summaries: Sequence[Summary]) -> tuple[str, ...]:
        """Sparse features: the union; a node that never saw one has no say on it."""
        first = summaries[0].features
        if all(s.features == first for s in summaries) and list(first) == sorted(first):
            return first  # the common case: every node saw the same features
        return tuple(sorted(set().union(*(s.features for s in summaries))))

    def learned_vector(self, summary: Summary) -> np.ndarray:
        return np.concatenate([summary.tensor("weights"), summary.tensor("intercept")])

    def learned_mask(self, summary: Summary) -> np.ndarray:
        return np.concatenate([summary.tensor("count") > 0, [True]])

    def with_learned_vector(self, summary: Summary, vector: np.ndarray) -> Summary:
        vector = np.asarray(vector, dtype=np.float64)
        d = len(summary.features)
        if vector.shape != (d + 1,):
            raise ModelError(f"fraud-linear expects a vector of {d + 1} values, got {vector.shape}")
        tensors = dict(summary.tensors) | {"weights": vector[:d], "intercept": vector[d:]}
        return replace(summary, tensors=tensors)

    def merge_exact(
        self, summaries: Sequence[Summary], base: Summary | None = None
    ) -> dict[str, np.ndarray]:
        return merge_scaler(summaries, base)

    def unmerge_exact(self, total: Summary, part: Summary) -> Summary:
        part = self.align(part, total.features)
        tensors = dict(total.tensors) | unmerge_scaler(total, part)
        n = max(total.n_samples - part.n_samples, 0)
        return replace(total, n_samples=n, tensors=tensors)

    def _raw(self, s: Summary) -> tuple[np.ndarray, float]:
        """Coefficients on unscaled features and the matching offset."""
        std = np.sqrt(s.tensor("var"))
        a = np.divide(s.tensor("weights"), std, out=np.zeros(std.shape), where=std > 0)
        return a, float(s.tensor("intercept")[0]) - float(a @ s.tensor("mean"))

    @guarded
    def blend(self, global_: Summary, local: Summary, alpha: float) -> Summary:
        """Interpolate the two models' logits: ``alpha * global + (1 - alpha) * local``.

        Each model is rewritten on raw (unscaled) features, where a logit is
        ``a . x + c``; the interpolated ``a`` and ``c`` are then expressed in
        the blended scaler's space. For events carrying every feature the
        blended logit is exactly the interpolation of the two logits, even
        though the two models were trained under different scalers.
        """
        alpha = check_alpha(alpha)
        global_, local = self.check(global_), self.check(local)
        if alpha in (0.0, 1.0):
            return local if alpha == 0.0 else global_
        features = self.union_features([global_, local])
        g, lo = self.align(global_, features), self.align(local, features)
        (a_g, c_g), (a_l, c_l) = self._raw(g), self._raw(lo)
        a, c = alpha * a_g + (1 - alpha) * a_l, alpha * c_g + (1 - alpha) * c_l
        scaler = mix_scaler(g, lo, alpha)
        weights = a * np.sqrt(scaler["var"])
        intercept = c + float(a @ scaler["mean"])
        n = round(alpha * global_.n_samples + (1 - alpha) * local.n_samples)
        tensors = scaler | {"weights": weights, "intercept": np.array([intercept])}
        return replace(
            lo, features=features, n_samples=n, tensors=tensors, base_version=global_.base_version
        )

    @guarded
    def pull_toward(self, local: Summary, global_: Summary, share: float) -> Summary:
        """The local slopes move ``share`` of the way to the global's; the intercept stays.

        Slopes are compared on raw features (each model's own scaler undone)
        and the result is written back in the local scaler's space, whose
        statistics stay the site's own. The intercept -- the site's log-odds
        at its own average event -- is not pulled: a site's share of
        positives (label skew) is exactly what the fleet cannot know better.
        """
        share = check_alpha(share)
        local, global_ = self.check(local), self.check(global_)
        if share == 0.0:
            return local
        g = self.align(global_, self.union_features([global_, local]))
        lo = self.align(local, g.features)
        a_global, _ = self._raw(g)
        weights = (1 - share) * lo.tensor("weights") + share * a_global * np.sqrt(lo.tensor("var"))
        return replace(lo, tensors=dict(lo.tensors) | {"weights": weights})


class FraudLinear(ModelSpec):
    """Binary fraud classifier; score = P(fraud).

    Examples
    --------
    >>> spec = FraudLinear()
    >>> model = spec.new_model()
    >>> for i in range(40):
    ...     spec.learn_one(model, {"amount": float(i % 10)}, y=i % 10 > 7)
    >>> spec.score_one(model, {"amount": 9.0}) > spec.score_one(model, {"amount": 1.0})
    True
    """

    name = "fraud-linear"
    kind = "linear"
    task = "fraud"
    supervised = True
    algebra_type = FraudLinearAlgebra

    @property
    def params(self) -> dict[str, str]:
        return {
            "version": "1",
            "optimizer": "SGD",
            "lr": repr(LR),
            "l2": repr(L2),
            "intercept_lr": repr(INTERCEPT_LR),
        }

    def new_model(self) -> compose.Pipeline:
        return compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(
                optimizer=optim.SGD(LR), l2=L2, intercept_lr=INTERCEPT_LR
            ),
        )

    @staticmethod
    def _parts(model: compose.Pipeline) -> tuple[preprocessing.StandardScaler, object]:
        scaler = river_adapter.pipeline_step(model, preprocessing.StandardScaler)
        glm = river_adapter.pipeline_step(model, linear_model.LogisticRegression)
        return scaler, glm  # type: ignore[return-value]

    def learn_one(
        self, model: compose.Pipeline, x: Mapping[str, float], y: bool | None = None
    ) -> None:
        if y is None:
            raise ModelError("fraud-linear learns from labelled events only; y is missing")
        model.learn_one(dict(x), bool(y))

    def warm_up(self) -> None:
        """Import numba and load (or compile, ~2 s the first time) the learning kernel."""
        self.learn_many(self.new_model(), [{"warm-up": 1.0}], [True])

    def learn_many(
        self,
        model: compose.Pipeline,
        X: Sequence[Mapping[str, float]] | Sequence[Sequence[float]] | np.ndarray,
        y: Sequence[bool | None] | np.ndarray | None = None,
        *,
        features: Features | None = None,
    ) -> None:
        """``learn_one`` over the batch, compiled (models/specs/linear_sgd.py).

        The same recurrences in the same order as River, ~20x faster; the
        result is written back into the River pipeline, so everything else
        (summaries, scoring, merges) sees an ordinary River model.
        """
        batch = Batch.of(X, y, features)
        if not len(batch):
            return
        if any(label is None for label in batch.labels):
            raise ModelError("fraud-linear learns from labelled events only; a label is missing")
        from models.specs.linear_sgd import learn_scaled_logistic  # numba: load on first use

        scaler, glm = self._parts(model)
        had_weight, in_batch = set(glm.weights), batch.in_batch()
        names = tuple(sorted(set(scaler.counts) | had_weight | in_batch))
        _, counts, means, variances = river_adapter.get_scaler_state(scaler, names)
        weights, intercept, steps = river_adapter.get_linear_state(glm, names)
        intercept = learn_scaled_logistic(
            batch.dense(names),
            np.array([bool(label) for label in batch.labels]),
            counts,
            means,
            variances,
            weights,
            intercept,
            LR,
            L2,
            INTERCEPT_LR,
            float(glm.clip_gradient),
        )
        river_adapter.set_scaler_state(scaler, names, counts, means, variances)
        keep = [i for i, f in enumerate(names) if f in had_weight or f in in_batch]
        river_adapter.set_linear_state(
            glm, [names[i] for i in keep], weights[keep], intercept, steps + len(batch)
        )

    def score_one(self, model: compose.Pipeline, x: Mapping[str, float]) -> float:
        return float(model.predict_proba_one(dict(x)).get(True, 0.0))

    def score_many(
        self, model: compose.Pipeline, X: np.ndarray, features: Sequence[str]
    ) -> np.ndarray:
        """Vectorised P(fraud); equals ``score_one`` row by row.

        River's ``predict_proba_many`` wants a dataframe (pandas, polars or
        pyarrow through narwhals), none of which Prism installs, so the
        pipeline is evaluated here on numpy from the model's own state.
        """
        X = np.asarray(X, dtype=np.float64)
        scaler, glm = self._parts(model)
        _, counts, means, variances = river_adapter.get_scaler_state(scaler, features)
        weights, intercept, _ = river_adapter.get_linear_state(glm, features)
        std = np.sqrt(variances)
        z = np.divide(X - means, std, out=np.zeros_like(X), where=std > 0)
        return _sigmoid(z @ weights + intercept)

    def summarize(self, model: compose.Pipeline) -> Summary:
        scaler, glm = self._parts(model)
        features = tuple(sorted(set(scaler.counts) | set(glm.weights)))
        _, tensors = scaler_tensors(scaler, features)
        weights, intercept, steps = river_adapter.get_linear_state(glm, features)
        tensors |= {"weights": weights, "intercept": np.array([intercept])}
        return Summary(self.name, self.kind, features, steps, tensors, self.params)

    def apply(self, summary: Summary, model: compose.Pipeline) -> None:
        self.algebra.check(summary)
        scaler, glm = self._parts(model)
        apply_scaler(summary, scaler)
        river_adapter.set_linear_state(
            glm,
            summary.features,
            summary.tensor("weights"),
            float(summary.tensor("intercept")[0]),
            summary.n_samples,
        )

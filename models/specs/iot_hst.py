"""``iot-hst``: StandardScaler | logistic squash | HalfSpaceTrees for sensors.

Why this shape: HST mass counts only add up across nodes if every node grows
*identical* trees, and River grows them from the seed, the per-feature limits
and the feature set of the first event. The seed is fixed here, and the
limits are fixed by construction: each standardised value ``z`` is squashed
to ``u = 1 / (1 + exp(-z))``, which always lies in (0, 1), so the limits are
(0, 1) for every feature whatever the sensor's units, and no node needs to
know ranges in advance. What remains is the feature set, which must be the
same on every node (sensor schemas are fixed); the summary carries a digest
of the trees, and summaries whose digests differ refuse to merge.

Hyper-parameters: ``n_trees=10``, ``height=5`` (63 nodes per tree),
``window_size=250``, ``seed=42``. Two int64 mass tensors of 10 x 63 are
~10 KB, the per-round budget of the IoT scenario, and height 5 beat heights
6 and 8 on prequential ROC AUC on synthetic correlated sensors (deep trees
split windows of 250 points into nodes too small to score).

Summary tensors: ``count``/``mean``/``var`` (scaler, exact); ``r_mass`` --
the sum of contributors' reference windows; ``l_mass`` -- the sum of their
current windows; ``ref_windows`` -- how many reference windows ``r_mass``
adds up (0 before the first window completes); ``members`` -- how many models'
current windows ``l_mass`` adds up. See :mod:`models.exact` for the merge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from river import anomaly, compose, preprocessing

from models import river_adapter
from models.errors import IncompatibleSummariesError, InvalidSummaryError
from models.exact import guarded, merge_masses
from models.specs.algebra import SummaryAlgebra, check_alpha
from models.specs.base import ModelSpec
from models.specs.scaling import (
    SCALER_AXES,
    apply_scaler,
    merge_scaler,
    mix_scaler,
    scaler_tensors,
    unmerge_scaler,
)
from models.summary import Summary

__all__ = ["IotHST", "IotHSTAlgebra", "squash"]

N_TREES, HEIGHT, WINDOW, SEED = 10, 5, 250, 42
N_NODES = 2 ** (HEIGHT + 1) - 1


def squash(x: dict) -> dict:
    """Logistic squash of standardised features into (0, 1): HST's fixed limits."""
    return {k: 0.5 * (1.0 + math.tanh(v / 2.0)) for k, v in x.items()}


def _hst() -> anomaly.HalfSpaceTrees:
    return anomaly.HalfSpaceTrees(n_trees=N_TREES, height=HEIGHT, window_size=WINDOW, seed=SEED)


@functools.lru_cache(maxsize=64)
def tree_digest(features: tuple[str, ...]) -> str:
    """The digest of the trees every node grows for this feature set."""
    if not features:
        return "none"
    hst = _hst()
    river_adapter.build_hst_trees(hst, features)
    return river_adapter.hst_digest(hst)


class IotHSTAlgebra(SummaryAlgebra):
    """Scaler statistics and mass counts merge exactly; params carry the trees' digest."""

    feature_axes = SCALER_AXES
    count_tensors = frozenset({"count", "r_mass", "l_mass", "ref_windows", "members"})

    def check(self, summary: Summary) -> Summary:
        """Parameters must match, and the trees digest must be this feature set's."""
        params = dict(summary.params)
        digest = params.pop("trees", None)
        super().check(replace(summary, params=params))
        if digest != tree_digest(summary.features):
            raise IncompatibleSummariesError(
                f"iot-hst summary from node {summary.node_id!r}: its trees (digest {digest}) "
                f"are not the ones this River builds for {list(summary.features)}"
            )
        for name in ("r_mass", "l_mass"):
            if summary.tensor(name).shape != (N_TREES, N_NODES):
                raise InvalidSummaryError(f"iot-hst: {name} must have shape {(N_TREES, N_NODES)}")
        return summary

    def new_summary(
        self, features: tuple[str, ...], n: int, tensors: dict, like: Summary | None = None
    ) -> Summary:
        """A summary of these trees (or ``like`` with them): params carry their digest."""
        params = self.params | {"trees": tree_digest(features)}
        if like is None:
            return Summary(self.name, self.kind, features, n, tensors, params)
        return replace(like, features=features, n_samples=n, tensors=tensors, params=params)

    def signature(self, summary: Summary) -> np.ndarray:
        """The average reference window as mass fractions, for screening."""
        refs = max(int(summary.tensor("ref_windows")[0]), 1)
        return (summary.tensor("r_mass") / (refs * WINDOW)).ravel()

    def merge_exact(
        self, summaries: Sequence[Summary], base: Summary | None = None
    ) -> dict[str, np.ndarray]:
        """Scaler statistics accumulate (with ``base``); windows are summed, not accumulated.

        Reference windows are summed (``ref_windows`` says how many); without
        any among the contributors, :meth:`_first_reference` decides.
        """
        masses = {
            name: merge_masses(np.stack([s.tensor(name) for s in summaries]))
            for name in ("r_mass", "l_mass", "ref_windows", "members")
        }
        if masses["ref_windows"][0] == 0:
            masses |= self._first_reference(summaries, base)
        return merge_scaler(summaries, base) | masses

    @staticmethod
    def _first_reference(
        summaries: Sequence[Summary], base: Summary | None
    ) -> dict[str, np.ndarray]:
        """A reference when no contributor completed a window of its own.

        The current global's reference stands if it has one. Else the fleet's
        first window is the union of the contributors' current windows (each
        node's latest, so a node sent twice counts once), scaled to
        ``WINDOW`` points, once it holds that many: one central model's first
        window completes after ``WINDOW`` events, while each of ``k`` sites
        needs ``WINDOW`` of its own -- ``k`` times as long, scoring 0 (no
        reference) all the while.
        """
        if base is not None and base.tensor("ref_windows")[0] > 0:
            return {"r_mass": base.tensor("r_mass"), "ref_windows": base.tensor("ref_windows")}
        latest: dict[str, Summary] = {}
        for s in summaries:
            if s.node_id not in latest or s.sequence > latest[s.node_id].sequence:
                latest[s.node_id] = s
        union = merge_masses(np.stack([s.tensor("l_mass") for s in latest.values()]))
        points = int(union[0, 0])  # every point of a window passes the root of each tree
        if points < WINDOW:
            return {}
        profile = np.rint(union * (WINDOW / points)).astype(np.int64)
        return {"r_mass": profile, "ref_windows": np.array([1])}

    def unmerge_exact(self, total: Summary, part: Summary) -> Summary:
        part = self.align(part, total.features)
        tensors = dict(total.tensors) | unmerge_scaler(total, part)
        n = max(total.n_samples - part.n_samples, 0)
        return self.new_summary(total.features, n, tensors, like=total)

    def rebase(self, new_global: Summary, local: Summary, old_global: Summary | None) -> Summary:
        """Scaler: new global + local progress; reference: global's; current window: local's."""
        features = self.union_features([new_global, local])
        progress = local if old_global is None else self.unmerge_exact(local, old_global)
        scaler = merge_scaler([self.align(new_global, features), self.align(progress, features)])
        tensors = scaler | self._profile(new_global, 1.0, None, 0.0) | self._current(local)
        n = new_global.n_samples + progress.n_samples
        return replace(
            self.new_summary(features, n, tensors, like=local), base_version=new_global.base_version
        )

    @staticmethod
    def _profile(a: Summary, wa: float, b: Summary | None, wb: float) -> dict[str, np.ndarray]:
        """Weighted average reference window of ``a`` and ``b`` (sides without one drop out)."""
        sides = [
            (s, w)
            for s, w in ((a, wa), (b, wb))
            if s is not None and w > 0 and s.tensor("ref_windows")[0] > 0
        ]
        if not sides:
            return {"r_mass": np.zeros((N_TREES, N_NODES), np.int64), "ref_windows": np.array([0])}
        total = sum(w for _, w in sides)
        profile = sum(w / total * s.tensor("r_mass") / s.tensor("ref_windows")[0] for s, w in sides)
        return {"r_mass": np.rint(profile).astype(np.int64), "ref_windows": np.array([1])}

    @staticmethod
    def _current(local: Summary) -> dict[str, np.ndarray]:
        single = local.tensor("members")[0] == 1
        l_mass = local.tensor("l_mass") if single else np.zeros((N_TREES, N_NODES), np.int64)
        return {"l_mass": l_mass, "members": np.array([1])}

    @guarded
    def blend(self, global_: Summary, local: Summary, alpha: float) -> Summary:
        """Mix scalers and average reference windows with weights alpha / 1 - alpha.

        The local model's current window is kept, so it goes on learning
        where it was.
        """
        alpha = check_alpha(alpha)
        global_, local = self.check(global_), self.check(local)
        if alpha in (0.0, 1.0):
            return local if alpha == 0.0 else global_
        features = self.union_features([global_, local])
        g, lo = self.align(global_, features), self.align(local, features)
        tensors = (
            mix_scaler(g, lo, alpha) | self._profile(g, alpha, lo, 1 - alpha) | self._current(lo)
        )
        n = round(alpha * global_.n_samples + (1 - alpha) * local.n_samples)
        summary = self.new_summary(features, n, tensors, like=lo)
        return replace(summary, base_version=global_.base_version)


class IotHST(ModelSpec):
    """Half-space trees over squashed standardised sensors; score in [0, 1].

    Examples
    --------
    >>> spec = IotHST()
    >>> model = spec.new_model()
    >>> for i in range(600):
    ...     spec.learn_one(model, {"temp": 50.0 + i % 7, "vib": 0.2 + (i % 5) / 100})
    >>> spec.score_one(model, {"temp": 90.0, "vib": 3.0}) > spec.score_one(
    ...     model, {"temp": 53.0, "vib": 0.22})
    True
    """

    name = "iot-hst"
    kind = "hst"
    task = "iot"
    algebra_type = IotHSTAlgebra
    algebra: IotHSTAlgebra

    @property
    def params(self) -> dict[str, str]:
        return {
            "version": "1",
            "n_trees": str(N_TREES),
            "height": str(HEIGHT),
            "window_size": str(WINDOW),
            "seed": str(SEED),
            "squash": "logistic",
        }

    def new_model(self) -> compose.Pipeline:
        return compose.Pipeline(
            preprocessing.StandardScaler(), compose.FuncTransformer(squash), _hst()
        )

    @staticmethod
    def _parts(
        model: compose.Pipeline,
    ) -> tuple[preprocessing.StandardScaler, anomaly.HalfSpaceTrees]:
        scaler = river_adapter.pipeline_step(model, preprocessing.StandardScaler)
        hst = river_adapter.pipeline_step(model, anomaly.HalfSpaceTrees)
        return scaler, hst  # type: ignore[return-value]

    def learn_one(
        self, model: compose.Pipeline, x: Mapping[str, float], y: bool | None = None
    ) -> None:
        model.learn_one(dict(x))

    def score_one(self, model: compose.Pipeline, x: Mapping[str, float]) -> float:
        return float(model.score_one(dict(x)))

    def score_many(
        self, model: compose.Pipeline, X: np.ndarray, features: Sequence[str]
    ) -> np.ndarray:
        """Per-event path: HST walks trees in Python, there is no batch API."""
        rows = np.asarray(X, dtype=np.float64).tolist()
        return np.array([self.score_one(model, dict(zip(features, r, strict=True))) for r in rows])

    def summarize(self, model: compose.Pipeline) -> Summary:
        scaler, hst = self._parts(model)
        features = river_adapter.hst_features(hst)
        _, tensors = scaler_tensors(scaler, features)
        if features:
            state = river_adapter.get_hst_state(hst)
            l_mass, r_mass, first = state.l_mass, state.r_mass, state.first_window
        else:
            l_mass = r_mass = np.zeros((N_TREES, N_NODES), dtype=np.int64)
            first = True
        tensors |= {
            "r_mass": r_mass,
            "l_mass": l_mass,
            "ref_windows": np.array([0 if first else 1]),
            "members": np.array([1]),
        }
        n = int(tensors["count"].max(initial=0))
        return self.algebra.new_summary(features, n, tensors)

    def apply(self, summary: Summary, model: compose.Pipeline) -> None:
        """Load the summary; a merged one scores with its *average* reference window.

        ``r_mass / ref_windows`` (rounded) keeps River's score normalisation
        (``window_size`` points per window) valid. Current windows of several
        models were at different phases, so a merged summary starts an empty
        current window; a single model's is restored exactly.
        """
        self.algebra.check(summary)
        scaler, hst = self._parts(model)
        apply_scaler(summary, scaler)
        if not summary.features:
            return
        river_adapter.build_hst_trees(hst, summary.features)
        refs, members = int(summary.tensor("ref_windows")[0]), int(summary.tensor("members")[0])
        r_mass = np.rint(summary.tensor("r_mass") / max(refs, 1)).astype(np.int64)
        l_mass = summary.tensor("l_mass") if members == 1 else np.zeros_like(r_mass)
        counter = int(l_mass[0, 0])
        if np.any(l_mass[:, 0] != counter) or counter >= WINDOW:
            raise InvalidSummaryError("iot-hst: current-window masses are inconsistent")
        state = river_adapter.HSTState(l_mass.astype(np.int64), r_mass, counter, refs == 0)
        river_adapter.set_hst_state(hst, state)

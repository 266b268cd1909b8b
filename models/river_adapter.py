"""The only module that reads or writes River's private state.

River exposes learned state read-only (``GLM.weights`` has no setter) and
keeps the rest in attributes it may rename in any minor release: the weight
``VectorDict`` of a linear model, a StandardScaler's ``counts``/``means``/
``vars`` dicts, and the per-node ``l_mass``/``r_mass`` of HalfSpaceTrees.
Writing merged state back needs them, so they are touched here and nowhere
else; ``pyproject.toml`` pins River to an exact version and
``tests/unit/models/test_river_adapter.py`` fails the day a River upgrade
changes any of them.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from river import anomaly, compose, linear_model, preprocessing, utils

from models.errors import InvalidSummaryError, ModelError

__all__ = [
    "HSTState",
    "get_hst_state",
    "get_linear_state",
    "get_scaler_state",
    "hst_digest",
    "hst_features",
    "pipeline_step",
    "set_hst_state",
    "set_linear_state",
    "set_scaler_state",
]


def pipeline_step(model: compose.Pipeline, kind: type) -> object:
    """The first step of ``model`` that is an instance of ``kind``."""
    for step in model.steps.values():
        if isinstance(step, kind):
            return step
    raise ModelError(f"the model has no {kind.__name__} step; was it built by its spec?")


# -- StandardScaler -----------------------------------------------------------


def get_scaler_state(
    scaler: preprocessing.StandardScaler, features: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(features, counts, means, population variances) of a running scaler.

    ``features`` fixes the order (unseen ones get zeros); by default every
    feature the scaler saw, sorted.
    """
    if scaler.window_size is not None or not scaler.with_std:
        raise ModelError("only a running StandardScaler(with_std=True) can be summarised")
    names = tuple(sorted(scaler.counts)) if features is None else tuple(features)
    counts = np.array([scaler.counts.get(f, 0) for f in names], dtype=np.int64)
    means = np.array([scaler.means.get(f, 0.0) for f in names], dtype=np.float64)
    variances = np.array([scaler.vars.get(f, 0.0) for f in names], dtype=np.float64)
    return names, counts, means, variances


def set_scaler_state(
    scaler: preprocessing.StandardScaler,
    features: Sequence[str],
    counts: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
) -> None:
    """Replace a scaler's statistics; features with count 0 stay unseen."""
    rows = [  # over tolist()'s Python numbers: int() and float() of numpy scalars cost more
        (f, int(c), float(m), float(v))
        for f, c, m, v in zip(
            features,
            np.asarray(counts).tolist(),
            np.asarray(means).tolist(),
            np.asarray(variances).tolist(),
            strict=True,
        )
        if c > 0
    ]
    scaler.counts = collections.Counter({f: c for f, c, _, _ in rows})
    scaler.means = collections.defaultdict(float, {f: m for f, _, m, _ in rows})
    scaler.vars = collections.defaultdict(float, {f: v for f, _, _, v in rows})


# -- LogisticRegression (any GLM) --------------------------------------------


def get_linear_state(
    glm: linear_model.LogisticRegression, features: Sequence[str]
) -> tuple[np.ndarray, float, int]:
    """(weights in ``features`` order, intercept, optimizer steps taken)."""
    weights = glm.weights
    vector = np.array([weights.get(f, 0.0) for f in features], dtype=np.float64)
    return vector, float(glm.intercept), int(glm.optimizer.n_iterations)


def set_linear_state(
    glm: linear_model.LogisticRegression,
    features: Sequence[str],
    weights: np.ndarray,
    intercept: float,
    n_iterations: int,
) -> None:
    """Write weights, intercept and the optimizer's step count back."""
    if getattr(glm, "l1", 0) != 0:
        raise ModelError("L1-penalised models keep cumulative penalty state; not supported")
    values = np.asarray(weights).tolist()  # Python numbers: float() of them is cheap
    data = {f: float(w) for f, w in zip(features, values, strict=True)}
    glm._weights = utils.VectorDict(data)
    glm.intercept = float(intercept)
    glm.optimizer.n_iterations = int(n_iterations)


# -- HalfSpaceTrees -----------------------------------------------------------


@dataclass(frozen=True)
class HSTState:
    """Masses of every node of every tree, in depth-first order.

    ``r_mass`` is the last complete (reference) window, ``l_mass`` the window
    being filled; ``counter`` counts points in the latter.
    """

    l_mass: np.ndarray
    r_mass: np.ndarray
    counter: int
    first_window: bool


def _nodes(hst: anomaly.HalfSpaceTrees) -> list[list]:
    return [list(tree.iter_dfs()) for tree in hst.trees]


def hst_features(hst: anomaly.HalfSpaceTrees) -> tuple[str, ...]:
    """The feature set the trees were built on (River records it in ``limits``)."""
    return tuple(sorted(hst.limits)) if hst.trees else ()


def build_hst_trees(hst: anomaly.HalfSpaceTrees, features: Sequence[str]) -> None:
    """Build the trees of a fresh HST for ``features`` through River's own path.

    River builds trees lazily from the first point's features and its seeded
    RNG; learning one in-limits point and zeroing every mass reproduces exactly
    the trees any node would build for the same feature set.
    """
    if hst.trees:
        if hst_features(hst) != tuple(sorted(features)):
            raise ModelError("the trees were built on another feature set")
        return
    hst.learn_one({f: sum(hst.limits[f]) / 2 for f in features})
    for nodes in _nodes(hst):
        for node in nodes:
            node.l_mass = 0
            node.r_mass = 0
    hst.counter = 0
    hst._first_window = True


def hst_digest(hst: anomaly.HalfSpaceTrees) -> str:
    """A short fingerprint of the tree structure: split features and thresholds.

    Two nodes' masses only add up when their digests agree.
    """
    h = hashlib.sha256()
    for nodes in _nodes(hst):
        for node in nodes:
            split = getattr(node, "feature", None)
            h.update(f"{split}:{getattr(node, 'threshold', 0.0)!r};".encode())
    return h.hexdigest()[:16]


def get_hst_state(hst: anomaly.HalfSpaceTrees) -> HSTState:
    """Copy the masses out as ``(n_trees, n_nodes)`` int64 arrays."""
    nodes = _nodes(hst)
    shape = (len(nodes), len(nodes[0]) if nodes else 0)
    l_mass = np.array([[n.l_mass for n in t] for t in nodes], dtype=np.int64).reshape(shape)
    r_mass = np.array([[n.r_mass for n in t] for t in nodes], dtype=np.int64).reshape(shape)
    return HSTState(l_mass, r_mass, int(hst.counter), bool(hst._first_window))


def set_hst_state(hst: anomaly.HalfSpaceTrees, state: HSTState) -> None:
    """Write masses back into already built trees of the same shape."""
    nodes = _nodes(hst)
    shape = (len(nodes), len(nodes[0]) if nodes else 0)
    if state.l_mass.shape != shape or state.r_mass.shape != shape:
        raise InvalidSummaryError(
            f"mass tensors have shape {state.l_mass.shape}, the trees have {shape}"
        )
    for t, tree_nodes in enumerate(nodes):
        for i, node in enumerate(tree_nodes):
            node.l_mass = int(state.l_mass[t, i])
            node.r_mass = int(state.r_mass[t, i])
    hst.counter = int(state.counter)
    hst._first_window = bool(state.first_window)

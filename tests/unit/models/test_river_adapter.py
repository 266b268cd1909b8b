"""Pins River's private state that models/river_adapter.py reads and writes.

If a River upgrade renames or changes any of it, these fail first and say
where: the adapter is the only place to fix.
"""

from __future__ import annotations

import collections
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import river
from packaging.requirements import Requirement
from river import anomaly, compose, linear_model, optim, preprocessing

from models import river_adapter
from models.errors import ModelError


def test_river_version_is_in_the_range_pyproject_holds_it_to():
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    (pinned,) = [d for d in deps if d.name == "river"]
    assert pinned.specifier.contains(river.__version__), (river.__version__, str(pinned))
    assert "<0.27" in str(pinned.specifier)  # the minor whose private state the adapter knows


def test_scaler_state_round_trips_and_drives_transform():
    scaler = preprocessing.StandardScaler()
    for v in (1.0, 2.0, 4.0):
        scaler.learn_one({"x": v, "y": -v})
    features, counts, means, variances = river_adapter.get_scaler_state(scaler)
    assert features == ("x", "y") and counts.tolist() == [3, 3]
    np.testing.assert_allclose(means, [7 / 3, -7 / 3])
    np.testing.assert_allclose(variances, [np.var([1, 2, 4])] * 2)
    fresh = preprocessing.StandardScaler()
    river_adapter.set_scaler_state(fresh, features, counts, means, variances)
    assert isinstance(fresh.counts, collections.Counter)
    assert fresh.transform_one({"x": 3.0}) == scaler.transform_one({"x": 3.0})
    river_adapter.set_scaler_state(fresh, ("x",), np.array([10]), np.array([0.0]), np.array([4.0]))
    assert fresh.transform_one({"x": 2.0}) == {"x": 1.0}
    fresh.learn_one({"x": 2.0})  # Welford continues from the loaded state
    assert fresh.counts["x"] == 11
    assert fresh.means["x"] == pytest.approx(2 / 11)


def test_unseen_features_stay_unseen():
    scaler = preprocessing.StandardScaler()
    river_adapter.set_scaler_state(scaler, ("a", "b"), np.array([0, 2]), np.zeros(2), np.ones(2))
    assert set(scaler.counts) == {"b"}


def test_windowed_scalers_are_refused():
    with pytest.raises(ModelError):
        river_adapter.get_scaler_state(preprocessing.StandardScaler(window_size=5))


def test_linear_state_sets_weights_intercept_and_steps():
    glm = linear_model.LogisticRegression(optimizer=optim.SGD(0.1))
    river_adapter.set_linear_state(glm, ("a", "b"), np.array([1.0, -2.0]), 0.5, 7)
    assert glm.weights == {"a": 1.0, "b": -2.0}
    expected = 1 / (1 + math.exp(-(1.0 * 2 - 2.0 * 1 + 0.5)))
    assert glm.predict_proba_one({"a": 2.0, "b": 1.0})[True] == pytest.approx(expected)
    assert river_adapter.get_linear_state(glm, ("b", "a", "c")) == (
        pytest.approx(np.array([-2.0, 1.0, 0.0])),
        0.5,
        7,
    )
    glm.learn_one({"a": 1.0}, True)
    assert glm.optimizer.n_iterations == 8  # one optimizer step per learn_one


def test_pipeline_step_finds_steps_by_type():
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    assert isinstance(
        river_adapter.pipeline_step(model, preprocessing.StandardScaler),
        preprocessing.StandardScaler,
    )
    with pytest.raises(ModelError):
        river_adapter.pipeline_step(model, anomaly.HalfSpaceTrees)


def hst(seed: int = 3, window: int = 4) -> anomaly.HalfSpaceTrees:
    return anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=window, seed=seed)


def test_built_trees_equal_the_trees_river_grows_on_first_learn():
    grown = hst()
    grown.learn_one({"b": 0.2, "a": 0.9})
    built = hst()
    river_adapter.build_hst_trees(built, ("a", "b"))
    assert river_adapter.hst_digest(built) == river_adapter.hst_digest(grown)
    assert river_adapter.hst_features(grown) == ("a", "b")  # River records them in limits
    state = river_adapter.get_hst_state(built)
    assert state.l_mass.sum() == 0 and state.first_window and state.counter == 0
    other = hst(seed=4)
    river_adapter.build_hst_trees(other, ("a", "b"))
    assert river_adapter.hst_digest(other) != river_adapter.hst_digest(built)


def test_hst_window_semantics_the_merge_relies_on():
    model = hst(window=4)
    river_adapter.build_hst_trees(model, ("a", "b"))
    for v in (0.1, 0.2, 0.3):
        model.learn_one({"a": v, "b": v})
    state = river_adapter.get_hst_state(model)
    assert state.l_mass.shape == (2, 2**4 - 1)
    assert state.l_mass[:, 0].tolist() == [3, 3]  # depth-first: the root comes first
    assert state.counter == 3 and state.first_window
    model.learn_one({"a": 0.4, "b": 0.4})  # the window completes: l_mass pivots to r_mass
    pivoted = river_adapter.get_hst_state(model)
    assert pivoted.r_mass[:, 0].tolist() == [4, 4] and pivoted.l_mass.sum() == 0
    assert not pivoted.first_window


def test_hst_state_round_trip_gives_identical_scores():
    model = hst(window=4)
    for i in range(11):
        model.learn_one({"a": i / 11, "b": 1 - i / 11})
    fresh = hst(window=4)
    river_adapter.build_hst_trees(fresh, ("a", "b"))
    river_adapter.set_hst_state(fresh, river_adapter.get_hst_state(model))
    for x in ({"a": 0.5, "b": 0.5}, {"a": 0.0, "b": 0.9}):
        assert fresh.score_one(x) == model.score_one(x)
    fresh.learn_one({"a": 0.3, "b": 0.3})
    model.learn_one({"a": 0.3, "b": 0.3})
    assert np.array_equal(
        river_adapter.get_hst_state(fresh).r_mass, river_adapter.get_hst_state(model).r_mass
    )

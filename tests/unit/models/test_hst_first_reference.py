"""iot-hst merges: the fleet's reference window before any site completed one of its own.

One central model scores from its first ``WINDOW`` events on; ``k`` sites that
each wait for ``WINDOW`` events of their own score 0 (no reference) for ``k``
times as long. A merge whose contributors have no complete window therefore
keeps the current global's reference, or starts one from the union of the
contributors' current windows once it holds a window's points.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.merge import merge
from models.personalize import since
from models.specs import get_spec
from models.specs.iot_hst import WINDOW

SPEC = get_spec("iot-hst")


def _point(rng: np.random.Generator) -> dict[str, float]:
    return {"temp": float(rng.normal(50.0, 2.0)), "vib": float(rng.normal(0.2, 0.02))}


def _site(node: str, events: int, seed: int, sequence: int = 1):
    """A site's model after ``events`` normal points, and its summary (no complete window
    while ``events < WINDOW``)."""
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(events):
        SPEC.learn_one(model, _point(rng))
    summary = SPEC.summarize(model).with_provenance(node_id=node, sequence=sequence, base_version=0)
    return model, summary


def _refs(summary) -> int:
    return int(summary.tensor("ref_windows")[0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, WINDOW - 1), min_size=2, max_size=6), st.integers(0, 2**16))
def test_first_reference_is_the_union_of_current_windows(sizes, seed):
    parts = [_site(f"n{i}", n, seed + i)[1] for i, n in enumerate(sizes)]
    merged = merge(parts).summary
    union = sum(p.tensor("l_mass") for p in parts)
    points = sum(sizes)
    if points < WINDOW:  # less than a window's points: no reference yet, as before
        assert _refs(merged) == 0
        assert not merged.tensor("r_mass").any()
        return
    assert _refs(merged) == 1
    r_mass = merged.tensor("r_mass")
    np.testing.assert_array_equal(r_mass, np.rint(union * (WINDOW / points)).astype(np.int64))
    assert (r_mass[:, 0] == WINDOW).all()  # River's normalisation: a window's points


def test_a_global_from_partial_windows_scores_where_the_sites_cannot():
    sites = [_site(f"n{i}", 60, seed=i) for i in range(5)]  # 300 points, none complete
    for model, _ in sites:
        assert SPEC.score_one(model, {"temp": 90.0, "vib": 3.0}) == 0  # no reference yet
    glob = SPEC.load(merge([s for _, s in sites]).summary)
    outlier = SPEC.score_one(glob, {"temp": 90.0, "vib": 3.0})
    inlier = SPEC.score_one(glob, {"temp": 50.0, "vib": 0.2})
    assert outlier > inlier > 0


def test_a_node_sent_twice_in_a_round_counts_its_latest_window_once():
    model, first = _site("a", 100, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(100):
        SPEC.learn_one(model, _point(rng))
    second = since(SPEC.summarize(model), first).with_provenance(
        node_id="a", sequence=2, base_version=0
    )
    _, other = _site("b", 100, seed=3)
    merged = merge([first, second, other]).summary  # latest: 200 + 100 points
    assert _refs(merged) == 1
    union = second.tensor("l_mass") + other.tensor("l_mass")
    expected = np.rint(union * (WINDOW / 300)).astype(np.int64)
    np.testing.assert_array_equal(merged.tensor("r_mass"), expected)
    alone = merge([first, other]).summary  # 200 points: not a window yet
    assert _refs(alone) == 0


@pytest.mark.parametrize("events", [30, 200])
def test_the_current_reference_stands_when_no_contributor_has_one(events):
    _, complete = _site("old", WINDOW + 10, seed=5)
    current = merge([complete]).summary.with_provenance(node_id="", sequence=0, base_version=1)
    assert _refs(current) == 1
    _, late = _site("new", events, seed=6)
    merged = merge([late], current=current, accumulate=True).summary
    assert _refs(merged) == 1
    np.testing.assert_array_equal(merged.tensor("r_mass"), current.tensor("r_mass"))


def test_contributors_with_a_window_decide_alone():
    _, done = _site("done", WINDOW + 5, seed=7)
    _, partial = _site("partial", WINDOW - 5, seed=8)
    merged = merge([done, partial]).summary
    assert _refs(merged) == 1
    np.testing.assert_array_equal(merged.tensor("r_mass"), done.tensor("r_mass"))

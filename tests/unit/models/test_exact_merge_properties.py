"""Exact merges: merging shard summaries == the summary of the whole stream.

For random streams cut into random shards, merged in random order, flat or
as a two-level tree (regional, then global), against River/our model on the
concatenated stream and against a numpy oracle.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from river import anomaly, preprocessing

from models import river_adapter
from models.exact import merge_covariances, merge_masses, merge_moments, unmerge_moments
from models.gaussian import GaussianScorer

FEATURES = ("a", "b", "c")
value = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
# Sparse events: each carries a random non-empty subset of the features.
event = st.dictionaries(st.sampled_from(FEATURES), value, min_size=1)
dense = st.lists(st.tuples(value, value, value), min_size=1, max_size=60)


@st.composite
def sharded(draw, items):
    """A stream, cut points, a merge order and a regional grouping."""
    stream = draw(items)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    bounds = [0, *cuts, len(stream)]
    shards = [stream[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    order = draw(st.permutations(range(len(shards))))
    regions = draw(st.lists(st.integers(0, 2), min_size=len(shards), max_size=len(shards)))
    return stream, [shards[i] for i in order], [regions[i] for i in order]


def two_level(parts, regions, merge_fn):
    groups = [
        [p for p, r in zip(parts, regions, strict=True) if r == g] for g in sorted(set(regions))
    ]
    return merge_fn([merge_fn(g) for g in groups])


def scaler_of(events):
    scaler = preprocessing.StandardScaler()
    for x in events:
        scaler.learn_one(x)
    _, counts, means, variances = river_adapter.get_scaler_state(scaler, FEATURES)
    return counts, means, variances


def merge_scalers(parts):
    return merge_moments(*(np.stack(column) for column in zip(*parts, strict=True)))


def close(a, b, scale):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * scale)


@settings(max_examples=60, deadline=None)
@given(sharded(st.lists(event, min_size=1, max_size=60)))
def test_scaler_merge_equals_whole_stream(case):
    stream, shards, regions = case
    whole = scaler_of(stream)
    parts = [scaler_of(s) for s in shards]
    scale = 1e3**2
    for merged in (merge_scalers(parts), two_level(parts, regions, merge_scalers)):
        assert merged[0].tolist() == whole[0].tolist()
        close(merged[1], whole[1], 1e3)
        close(merged[2], whole[2], scale)
    for j, f in enumerate(FEATURES):  # numpy oracle
        column = [x[f] for x in stream if f in x]
        if column:
            close(whole[1][j], np.mean(column), 1e3)
            close(whole[2][j], np.var(column), scale)


@settings(max_examples=40, deadline=None)
@given(sharded(st.lists(event, min_size=1, max_size=40)), st.integers(0, 40))
def test_unmerge_takes_a_prefix_back_out(case, k):
    stream, _, _ = case
    k = min(k, len(stream))
    rest = unmerge_moments(scaler_of(stream), scaler_of(stream[:k]))
    expected = scaler_of(stream[k:])
    assert rest[0].tolist() == expected[0].tolist()
    close(rest[1], expected[1], 1e5)
    close(rest[2], expected[2], 1e8)


def gauss_of(rows):
    g = GaussianScorer()
    for r in rows:
        g.learn_one(dict(zip(FEATURES, r, strict=True)))
    if not g.features:
        return 0, np.zeros(3), np.zeros((3, 3))
    return g.n, g.mean, g.covariance


def merge_gauss(parts):
    counts, means, covs = zip(*parts, strict=True)
    return merge_covariances(np.array(counts), np.stack(means), np.stack(covs))


@settings(max_examples=60, deadline=None)
@given(sharded(dense))
def test_gauss_merge_equals_whole_stream(case):
    stream, shards, regions = case
    n, mean, cov = gauss_of(stream)
    oracle = np.cov(np.array(stream), rowvar=False, bias=True).reshape(3, 3)
    close(cov, oracle, 1e6)
    parts = [gauss_of(s) for s in shards]
    for merged in (merge_gauss(parts), two_level(parts, regions, merge_gauss)):
        assert merged[0] == n
        close(merged[1], mean, 1e3)
        close(merged[2], cov, 1e6)


def trees(window: int) -> anomaly.HalfSpaceTrees:
    hst = anomaly.HalfSpaceTrees(n_trees=3, height=4, window_size=window, seed=7)
    river_adapter.build_hst_trees(hst, FEATURES)
    return hst


def masses(points, window: int) -> river_adapter.HSTState:
    hst = trees(window)
    for p in points:
        hst.learn_one(dict(zip(FEATURES, p, strict=True)))
    return river_adapter.get_hst_state(hst)


unit = st.floats(0, 1, allow_nan=False)
points = st.lists(st.tuples(unit, unit, unit), min_size=1, max_size=80)


@settings(max_examples=40, deadline=None)
@given(sharded(points))
def test_hst_masses_of_shards_add_up_to_the_whole(case):
    stream, shards, regions = case
    big = 10_000  # no window ever completes: every point is in l_mass
    whole = masses(stream, big).l_mass
    parts = [masses(s, big).l_mass for s in shards]
    np.testing.assert_array_equal(merge_masses(np.stack(parts)), whole)
    tree = two_level(parts, regions, lambda ps: merge_masses(np.stack(ps)))
    np.testing.assert_array_equal(tree, whole)


@settings(max_examples=40, deadline=None)
@given(sharded(points), st.integers(2, 9))
def test_merged_reference_window_is_the_union_of_reference_windows(case, window):
    """r_mass sums = masses of the points in each shard's last complete window."""
    _, shards, _ = case
    reference, current = [], []
    for s in shards:
        done = len(s) // window * window
        reference += s[done - window : done] if done else []
        current += s[done:]
    merged_r = merge_masses(np.stack([masses(s, window).r_mass for s in shards]))
    merged_l = merge_masses(np.stack([masses(s, window).l_mass for s in shards]))
    np.testing.assert_array_equal(merged_r, masses(reference, 10_000).l_mass)
    np.testing.assert_array_equal(merged_l, masses(current, 10_000).l_mass)

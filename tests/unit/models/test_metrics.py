"""Mergeable prequential metrics: merge laws, and AUC vs the exact AUC."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ModelError
from models.metrics import BinaryMetrics, WindowedMetrics

labelled = st.lists(st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False)), max_size=40)


def metrics_of(pairs, bins: int = 50) -> BinaryMetrics:
    m = BinaryMetrics(threshold=0.5, bins=bins)
    if pairs:
        y, s = zip(*pairs, strict=True)
        m.update_many(list(y), list(s))
    return m


@settings(max_examples=100, deadline=None)
@given(labelled, labelled, labelled)
def test_merge_is_associative_commutative_and_equals_the_concatenated_stream(a, b, c):
    ma, mb, mc = metrics_of(a), metrics_of(b), metrics_of(c)
    assert (ma + mb) + mc == ma + (mb + mc)
    assert ma + mb == mb + ma
    assert ma + mb + mc == metrics_of(a + b + c)


def exact_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 400), st.sampled_from([10, 100, 1000]))
def test_histogram_auc_is_within_its_bound_of_the_exact_auc(seed, n, bins):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    m = BinaryMetrics(bins=bins)
    m.update_many(y, s)
    assert abs(m.auc - exact_auc(y, s)) <= m.auc_error_bound + 1e-12


def test_fine_bins_make_auc_close_and_confusion_counts_exact():
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.1
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    m = BinaryMetrics(threshold=0.5, bins=1000)
    for label, score in zip(y[:10], s[:10], strict=True):
        m.update(bool(label), float(score))
    m.update_many(y[10:], s[10:])
    assert abs(m.auc - exact_auc(y, s)) < 0.002
    predicted = s >= 0.5
    assert (m.tp, m.fp, m.fn) == (
        int(np.sum(y & predicted)),
        int(np.sum(~y & predicted)),
        int(np.sum(y & ~predicted)),
    )
    assert m.f1 == pytest.approx(2 * m.precision * m.recall / (m.precision + m.recall))
    assert set(m.to_dict()) == {"n", "precision", "recall", "f1", "accuracy", "roc_auc"}


def test_empty_and_one_class_metrics_do_not_divide_by_zero():
    m = BinaryMetrics()
    assert (m.precision, m.recall, m.f1, m.accuracy, m.auc) == (0.0, 0.0, 0.0, 0.0, None)
    m.update(True, 0.7)
    assert m.auc is None and "roc_auc" not in m.to_dict()


def test_bad_inputs_raise_model_errors():
    m = BinaryMetrics()
    with pytest.raises(ModelError):
        m.update(True, float("nan"))
    with pytest.raises(ModelError):
        m.update_many([True, False], [0.1])
    with pytest.raises(ModelError):
        m + BinaryMetrics(bins=10)
    with pytest.raises(ModelError):
        BinaryMetrics(bins=0)
    with pytest.raises(ModelError):
        BinaryMetrics(tp=-1)


timed = st.lists(
    st.tuples(st.integers(0, 10_000), st.booleans(), st.floats(0, 1, allow_nan=False)), max_size=30
)


def windowed(events) -> WindowedMetrics:
    w = WindowedMetrics(period_ms=1000, n_periods=3, bins=20)
    for ts, y, s in events:
        w.update(ts, y, s)
    return w


def as_dict(w: WindowedMetrics):
    return {start: m.as_tuple() for start, m in w.series()}


@settings(max_examples=100, deadline=None)
@given(timed, timed, timed)
def test_windowed_merge_laws_and_equality_with_one_stream(a, b, c):
    wa, wb, wc = windowed(a), windowed(b), windowed(c)
    assert as_dict((wa + wb) + wc) == as_dict(wa + (wb + wc))
    assert as_dict(wa + wb) == as_dict(wb + wa)
    # Periods kept after merging are the newest of the union: the one-stream metrics there.
    merged, whole = wa + wb + wc, windowed(sorted(a + b + c))
    assert as_dict(merged) == as_dict(whole)
    assert merged.total() == whole.total()


def test_windowed_series_is_metric_over_time():
    w = WindowedMetrics(period_ms=10, n_periods=5, bins=10)
    for t in range(50):
        w.update(t, t % 2 == 0, 0.9 if t < 25 else 0.1)
    recalls = [m.recall for _, m in w.series()]
    assert recalls[0] == 1.0 and recalls[-1] == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(-3, 3, allow_nan=False)), max_size=40),
    st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    st.sampled_from([1, 3, 7, 1000]),
)
def test_one_at_a_time_counts_what_a_batch_counts(pairs, threshold, bins):
    """The scalar path an edge grades with is the batch path row by row (end bins too)."""
    one, batch = BinaryMetrics(threshold, bins), BinaryMetrics(threshold, bins)
    for y, s in pairs:
        one.update(y, s)
    if pairs:
        batch.update_many(*zip(*pairs, strict=True))
    assert one == batch


@settings(max_examples=100, deadline=None)
@given(timed)
def test_windowed_row_by_row_equals_the_batch_update(events):
    """New periods push old ones out the same way whether rows come one by one or at once."""
    batch = WindowedMetrics(period_ms=1000, n_periods=3, bins=20)
    if events:
        batch.update_many(*zip(*events, strict=True))
    assert as_dict(windowed(events)) == as_dict(batch)


@settings(max_examples=100, deadline=None)
@given(timed, timed)
def test_few_rows_row_by_row_count_what_numpy_counts(before, events):
    """A handful of rows (a small batch's labels) goes row by row: the same window as numpy's."""
    import models.metrics as metrics

    rows, numpy_path = WindowedMetrics(1000, 3, bins=20), WindowedMetrics(1000, 3, bins=20)
    for w in (rows, numpy_path):
        for ts, y, s in before:
            w.update(ts, y, s)
    columns = [list(c) for c in zip(*events, strict=True)] or [[], [], []]
    rows.update_many(*columns)
    few, metrics.FEW_ROWS = metrics.FEW_ROWS, -1
    try:
        numpy_path.update_many(*columns)
    finally:
        metrics.FEW_ROWS = few
    assert as_dict(rows) == as_dict(numpy_path)


def test_few_rows_skip_numpy_and_a_bad_row_changes_nothing(monkeypatch):
    import models.metrics as metrics

    def no_numpy(*_):
        raise AssertionError("numpy's batch path for three rows")

    monkeypatch.setattr(metrics, "_labels_scores", no_numpy)
    w = WindowedMetrics(1000, 3, bins=20)
    w.update_many([0, 1500, 2500], [True, False, True], [0.9, 0.8, 0.1])
    assert as_dict(w) == as_dict(windowed([(0, True, 0.9), (1500, False, 0.8), (2500, True, 0.1)]))
    with pytest.raises(ModelError):
        w.update_many([3000, 3100], [True, False], [0.5, float("nan")])
    with pytest.raises(ModelError):
        w.update_many([3000, 3100], [True], [0.5, 0.6])
    assert as_dict(w) == as_dict(windowed([(0, True, 0.9), (1500, False, 0.8), (2500, True, 0.1)]))

"""The shadow join (#27 item 5): pairs, disagreement, bounded memory, duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.shadow.join import Pair, ShadowJoin, ShadowStats

SOURCES = ("global", "local", "blend")

events = st.dictionaries(
    st.text("abcdef0123", min_size=1, max_size=6),
    st.tuples(
        st.one_of(st.none(), st.floats(0, 1)),  # the edge's score, or none
        st.one_of(st.none(), st.floats(0, 1)),  # the central's score, or none
        st.sampled_from(SOURCES),
    ),
    max_size=40,
)


def _records(evs: dict, rng: np.random.Generator, copies: int = 1) -> list[tuple]:
    out = []
    for eid, (edge, central, source) in evs.items():
        if edge is not None:
            out += [(eid, source, edge)] * copies
        if central is not None:
            out += [(eid, "central", central)] * copies
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _oracle(evs: dict, threshold: float) -> ShadowStats:
    both = [(e, c) for e, c, _ in evs.values() if e is not None and c is not None]
    if not both:
        return ShadowStats()
    edge, central = np.array(both).T
    differ = int(np.sum((edge >= threshold) != (central >= threshold)))
    return ShadowStats(len(both), float(np.sum(np.abs(edge - central))), differ)


@settings(max_examples=200, deadline=None)
@given(events, st.floats(0.05, 0.95), st.integers(0, 2**32 - 1))
def test_any_order_of_both_sides_gives_the_numpy_oracle(evs, threshold, seed):
    join = ShadowJoin(threshold=threshold)
    for eid, source, score in _records(evs, np.random.default_rng(seed)):
        join.offer(eid, source, "m", score, now_ms=0)
    got = join.stats.get("m", ShadowStats())
    want = _oracle(evs, threshold)
    assert (got.n, got.differ) == (want.n, want.differ)
    assert got.abs_diff == pytest.approx(want.abs_diff, abs=1e-9)
    unpaired = sum(1 for e, c, _ in evs.values() if (e is None) != (c is None))
    assert len(join) == unpaired  # what waits is exactly the one-sided events


@settings(max_examples=200, deadline=None)
@given(events, st.integers(0, 2**32 - 1))
def test_redelivered_records_never_count_twice(evs, seed):
    once, twice = ShadowJoin(), ShadowJoin()
    rng = np.random.default_rng(seed)
    for eid, source, score in _records(evs, rng):
        once.offer(eid, source, "m", score, now_ms=0)
    for eid, source, score in _records(evs, rng, copies=2):
        twice.offer(eid, source, "m", score, now_ms=0)
    a, b = once.stats.get("m", ShadowStats()), twice.stats.get("m", ShadowStats())
    assert (a.n, a.differ) == (b.n, b.differ)
    # a copy that comes before its event's pair may carry the other copy's score: the first
    # record of a side stands, and copies are equal here, so the sums agree too
    assert a.abs_diff == pytest.approx(b.abs_diff, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=300), st.integers(1, 20))
def test_memory_is_bounded_by_max_pending(records, cap):
    join = ShadowJoin(max_pending=cap)
    for i, central in records:
        join.offer(f"e{i}", "central" if central else "blend", "m", 0.5, now_ms=0)
        assert len(join) <= cap and len(join._paired) <= cap


def test_a_record_older_than_the_ttl_is_dropped_and_counted_unpaired():
    join = ShadowJoin(ttl_ms=1000)
    join.offer("e1", "blend", "m", 0.2, now_ms=0)
    join.offer("e2", "central", "m", 0.2, now_ms=500)
    assert join.offer("e1", "central", "m", 0.9, now_ms=1000) is None  # e1 expired at 1000
    assert join.counts["unpaired-edge"] == 1 and "m" not in join.stats
    pair = join.offer("e2", "local", "m", 0.7, now_ms=1001)
    assert pair == Pair("e2", "m", 0.7, 0.2, 0.5) and pair.decisions_differ


def test_the_model_named_is_the_edge_s_and_the_threshold_is_inclusive():
    join = ShadowJoin(threshold=0.5)
    join.offer("e", "blend", "edge-model", 0.5, now_ms=0)
    pair = join.offer("e", "central", "central-model", 0.49, now_ms=0)
    assert pair is not None and pair.model == "edge-model" and pair.decisions_differ
    assert join.stats["edge-model"].as_dict()["disagreement_rate"] == 1.0


def test_stats_add_and_round_trip():
    a, b = ShadowStats(2, 0.5, 1), ShadowStats(3, 0.25, 0)
    assert a + b == ShadowStats(5, 0.75, 1)
    assert ShadowStats.from_dict(a.as_dict()) == a
    assert ShadowStats().rate is None


@pytest.mark.parametrize("kwargs", [{"max_pending": 0}, {"ttl_ms": 0}])
def test_bad_bounds_are_refused(kwargs):
    with pytest.raises(ValueError, match="shadow join"):
        ShadowJoin(**kwargs)


def test_the_telemetry_exports_the_totals_it_is_given():
    from prometheus_client import generate_latest

    from streams.shadow.telemetry import ShadowTelemetry

    t = ShadowTelemetry()
    t.paired(Pair("e", "m", 0.9, 0.1, 0.5))
    t.export({"m": ShadowStats(4, 1.0, 1)})
    text = generate_latest(t.base.registry).decode()
    assert 'prism_shadow_pairs_total{model="m",service="shadow"} 1.0' in text
    assert 'prism_shadow_disagreement_ratio{model="m",service="shadow"} 0.25' in text
    assert 'prism_shadow_score_gap_ratio{model="m",service="shadow"} 0.25' in text
    assert 'prism_shadow_paired_events{model="m",service="shadow"} 4.0' in text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 50)), max_size=200),
    st.integers(1, 15),
    st.integers(1, 200),
)
def test_every_record_is_paired_waiting_evicted_or_a_duplicate(records, cap, ttl):
    """Nothing is lost or counted twice by the bounds: each record ends in exactly one place."""
    join = ShadowJoin(max_pending=cap, ttl_ms=ttl)
    now = 0
    for i, central, step in records:
        now += step
        join.offer(f"e{i}", "central" if central else "global", "m", 0.5, now_ms=now)
        assert len(join) <= cap
    pairs = join.stats.get("m", ShadowStats()).n
    c = join.counts
    total = 2 * pairs + len(join) + c["unpaired-edge"] + c["unpaired-central"] + c["duplicate"]
    assert total == len(records)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_score_that_is_not_finite_is_refused_and_changes_nothing(bad):
    join = ShadowJoin()
    join.offer("e", "central", "m", 0.4, now_ms=0)
    with pytest.raises(ValueError, match="finite"):
        join.offer("e", "blend", "m", bad, now_ms=0)
    assert len(join) == 1 and not join.stats  # the event still waits for a usable score

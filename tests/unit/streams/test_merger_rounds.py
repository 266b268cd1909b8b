"""The merge job's rules, without Kafka or Redis (streams/merger/rounds.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.specs import get_spec
from models.summary import Summary
from streams.merger.rounds import Merger, MergerConfig, Update

SPEC = get_spec("fraud-linear")


def local_summary(node: str, seed: int, n: int = 40) -> Summary:
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    return SPEC.summarize(model).with_provenance(node_id=node, sequence=1, base_version=0)


def update(node: str, seq: int = 1, *, seed: int | None = None, base: int = 0, n: int = 40,
           offset: int = 0, **kw) -> Update:  # fmt: skip
    s = local_summary(node, seed if seed is not None else hash((node, seq)) % 10_000, n)
    return Update(replace(s, sequence=seq, base_version=base), offset=offset, partition=0, **kw)


def merger(**kw) -> Merger:
    return Merger(MergerConfig(**{"round_size": 3, "round_timeout_s": 5.0, **kw}))


def test_a_round_closes_at_round_size_with_one_new_version() -> None:
    m = merger()
    for node in ("a", "b"):
        assert m.offer(update(node), now_ms=0) is None
    assert m.close_due(now_ms=1) == []
    m.offer(update("c"), now_ms=2)
    (closed,) = m.close_due(now_ms=3)
    assert (closed.name, closed.version, closed.parent_version) == ("fraud-linear", 1, 0)
    assert {c.node_id for c in closed.result.contributors} == {"a", "b", "c"}
    assert closed.result.summary.n_samples == 120
    assert m.close_due(now_ms=4) == []


def test_duplicates_are_never_merged_twice_even_after_their_round() -> None:
    m = merger()
    first = update("a", 1)
    assert m.offer(first, 0) is None
    assert m.offer(update("a", 1), 0).reason_code == "duplicate"  # queued already
    m.offer(update("b"), 0)
    m.offer(update("c"), 0)
    (closed,) = m.close_due(1)
    assert m.offer(update("a", 1), 2).reason_code == "duplicate"  # merged already
    assert closed.result.summary.n_samples == 120
    assert m.counters["duplicate"] == 2


def test_an_out_of_order_increment_counts_once() -> None:
    m = merger(round_size=1)
    m.offer(update("a", 2, n=30), 0)
    (v1,) = m.close_due(0)
    assert m.offer(update("a", 1, n=10, base=0), 1) is None  # older, never seen: still counts
    (v2,) = m.close_due(1)
    assert v2.result.summary.n_samples == 40
    assert m.offer(update("a", 1, n=10), 2).reason_code == "duplicate"
    assert v1.version == 1 and v2.version == 2


def test_a_node_sends_one_update_per_round_the_next_waits() -> None:
    m = merger(round_size=2)
    m.offer(update("a", 1), 0)
    m.offer(update("a", 2), 0)  # same node again: next round
    assert m.close_due(0) == []
    m.offer(update("b", 1), 0)
    first, *rest = m.close_due(0)
    assert {c.node_id for c in first.result.contributors} == {"a", "b"}
    assert rest == [] and m.pending_count() == 1


def test_cumulative_snapshots_are_turned_into_increments() -> None:
    m = merger(round_size=1)
    model = SPEC.new_model()
    snapshots = []
    for seq, n in ((1, 25), (2, 60)):
        while SPEC.summarize(model).n_samples < n:
            SPEC.learn_one(model, {"amount": float(SPEC.summarize(model).n_samples % 7)}, True)
        s = SPEC.summarize(model).with_provenance(
            node_id="central/p0", sequence=seq, base_version=0
        )
        snapshots.append(Update(s, tier="central", meta={"stats": "cumulative"}))
    m.offer(snapshots[0], 0)
    m.close_due(0)
    m.offer(snapshots[1], 1)
    (closed,) = m.close_due(1)
    assert closed.result.summary.n_samples == 60  # not 25 + 60
    np.testing.assert_allclose(
        closed.result.summary.tensor("count"), SPEC.summarize(model).tensor("count")
    )
    older = Update(replace(snapshots[0].summary, sequence=0), meta={"stats": "cumulative"})
    assert m.offer(older, 2).reason_code == "out-of-order-snapshot"


def test_a_snapshot_that_went_backwards_is_refused_not_a_crash() -> None:
    """A shard restored from an older checkpoint summarizes less than was merged."""
    m = merger(round_size=1)

    def snapshot(seq: int, n: int) -> Update:
        model = SPEC.new_model()
        while SPEC.summarize(model).n_samples < n:
            SPEC.learn_one(model, {"amount": float(SPEC.summarize(model).n_samples % 7)}, True)
        s = SPEC.summarize(model).with_provenance(
            node_id="central/p0", sequence=seq, base_version=0
        )
        return Update(s, tier="central", meta={"stats": "cumulative"})

    assert m.offer(snapshot(1, 60), 0) is None
    assert len(m.close_due(0)) == 1
    refused = m.offer(snapshot(2, 25), 1)  # newer sequence, fewer samples
    assert refused is not None and refused.reason_code == "out-of-order-snapshot"
    assert "does not contain the merged 1" in refused.reason
    assert m.close_due(1) == []
    assert m.offer(snapshot(3, 90), 2) is None  # caught up: merged again
    (closed,) = m.close_due(2)
    assert closed.result.summary.n_samples == 90


def test_a_snapshot_that_stopped_fitting_by_its_round_is_excluded_not_a_crash() -> None:
    m = merger(round_size=2)
    model = SPEC.new_model()
    for i in range(40):
        SPEC.learn_one(model, {"amount": float(i % 7)}, True)
    big = SPEC.summarize(model).with_provenance(node_id="central/p0", sequence=1, base_version=0)
    m.offer(Update(big, tier="central", meta={"stats": "cumulative"}), 0)
    m.offer(update("a", 1), 0)
    m.close_due(0)
    fewer = SPEC.new_model()
    for i in range(10):
        SPEC.learn_one(fewer, {"amount": float(i % 7)}, True)
    small = SPEC.summarize(fewer).with_provenance(node_id="central/p0", sequence=2, base_version=1)
    late = Update(small, tier="central", meta={"stats": "cumulative"})
    m._tier_for(late).offer(late, 1)  # queued past offer's check, as if the snapshot moved
    m.offer(update("a", 2), 1)
    (closed,) = m.close_due(1)
    assert {c.node_id for c in closed.result.contributors} == {"a"}
    assert (
        m.nodes["central/p0"].excluded and "out-of-order-snapshot" in m.nodes["central/p0"].reason
    )
    assert m.counters["out-of-order-snapshot"] == 1


def test_future_base_versions_are_refused() -> None:
    m = merger()
    refused = m.offer(update("a", base=3), 0)
    assert refused.reason_code == "future-base" and "newer than global version 0" in refused.reason
    assert m.nodes["a"].excluded


def test_async_weighs_by_staleness_and_refuses_too_stale_updates() -> None:
    m = merger(round_size=1, strategy="async:max_staleness=1")
    for seq in (1, 2, 3):
        m.offer(update("fresh", seq, base=seq - 1), seq)
        m.close_due(seq)  # global version 3 now
    m.offer(update("slow", 1, base=1), 10)  # staleness 2 > 1
    assert m.close_due(10) == []  # the only update was refused: no new version
    assert m.nodes["slow"].excluded and "stale" in m.nodes["slow"].reason
    assert m.counters["rounds-refused"] == 1


def test_a_poisoned_update_is_screened_out_with_its_reason() -> None:
    m = merger(round_size=6, strategy="fedavg:screen=true")
    for i in range(5):
        m.offer(update(f"honest{i}", seed=i), 0)
    bad = update("poisoned", seed=99)
    s = bad.summary
    bad.summary = s.__class__(**{**s.__dict__, "tensors": {**s.tensors,
                              "weights": s.tensor("weights") * 500.0}})  # fmt: skip
    m.offer(bad, 0)
    (closed,) = m.close_due(0)
    assert [e.node_id for e in closed.result.excluded] == ["poisoned"]
    assert closed.result.summary.n_samples == 200  # excluded everywhere, counts included
    assert m.nodes["poisoned"].excluded and m.nodes["poisoned"].reason


def test_rounds_close_on_timeout_once_they_have_the_minimum() -> None:
    m = merger(round_size=10, round_timeout_s=5.0, min_participants=2)
    m.offer(update("a"), 0)
    assert m.close_due(6_000) == []  # timed out but only one participant
    m.offer(update("b"), 6_000)
    (closed,) = m.close_due(6_001)
    assert len(closed.result.contributors) == 2


def test_regional_tier_merges_per_region_then_globally() -> None:
    m = merger(round_size=2, tiers=("regional", "global"))
    for node, region in (("a", "eu"), ("b", "eu"), ("c", "us"), ("d", "us")):
        m.offer(update(node, region=region), 0)
    closed = m.close_due(0) + m.close_due(1)  # the global round may close in the next pass
    names = [c.name for c in closed]
    assert names == ["fraud-linear@region:eu", "fraud-linear@region:us", "fraud-linear"]
    top = m.tiers["fraud-linear"]
    assert top.version == 1 and top.current.n_samples == 160
    assert {c.node_id for c in m.nodes.values() if c.node_id.startswith("region:")} == {
        "region:eu",
        "region:us",
    }


def test_resume_offsets_hold_every_update_still_in_an_open_round() -> None:
    m = merger(round_size=2)
    m.offer(update("a", 1, offset=5), 0)
    m.offer(update("a", 2, offset=6), 0)
    m.offer(update("b", 1, offset=7), 0)
    m.close_due(0)  # a#1 and b#1 merged; a#2 waits
    assert m.resume_offsets() == {0: 6}


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        MergerConfig(round_size=2, min_participants=3)
    with pytest.raises(ValueError):
        MergerConfig(tiers=("regional",))
    with pytest.raises(Exception, match="unknown strategy"):
        MergerConfig(strategy="nonsense")
    with pytest.raises(ValueError, match="deltas must be one of"):
        MergerConfig(deltas="int8")  # variances' differences would round past zero


def test_a_central_shard_adds_its_statistics_but_its_weights_do_not_vote() -> None:
    m = merger()
    m.offer(update("a", seed=1), now_ms=0)
    m.offer(update("b", seed=2), now_ms=0)
    m.offer(update("central/p0", seed=3, n=400, tier="central"), now_ms=0)
    (closed,) = m.close_due(now_ms=1)
    weights = {c.node_id: c.weight for c in closed.result.contributors}
    assert weights["central/p0"] == 0.0 and weights["a"] + weights["b"] == pytest.approx(1.0)
    assert closed.result.summary.n_samples == 480  # every event counted once
    edges = [local_summary("a", 1), local_summary("b", 2)]
    fedavg = sum(SPEC.algebra.learned_vector(s) for s in edges) / 2  # equal n: a plain mean
    np.testing.assert_allclose(SPEC.algebra.learned_vector(closed.result.summary), fedavg)


def test_a_closed_round_says_when_it_opened_and_how_long_its_merge_took() -> None:
    """What the merger's round and merge duration histograms observe."""
    ticks = iter([10.0, 10.25, 20.0, 20.5])  # the timer: start and end of each merge
    m = Merger(MergerConfig(round_size=2, round_timeout_s=5.0), timer=lambda: next(ticks))
    m.offer(update("a"), now_ms=1_000)
    m.offer(update("b"), now_ms=1_700)
    (closed,) = m.close_due(now_ms=1_800)
    assert (closed.opened_ms, closed.created_at_ms, closed.merge_s) == (1_000, 1_800, 0.25)
    m.offer(update("a", 2), now_ms=5_000)
    m.offer(update("b", 2), now_ms=9_000)
    (second,) = m.close_due(now_ms=9_001)
    assert (second.opened_ms, second.merge_s) == (5_000, 0.5)

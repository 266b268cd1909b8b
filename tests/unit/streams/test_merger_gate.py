"""The quality gate and the merger's holdout judge (streams/merger/gate.py, rounds.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.holdout import HoldoutScore, Reservoir
from models.specs import get_spec
from models.summary import Summary
from streams.merger.gate import Judge, QualityGate
from streams.merger.rounds import Merger, MergerConfig, Update
from streams.merger.wire import registry_record, topic_records

SPEC = get_spec("fraud-linear")


def trained(seed: int, n: int = 60) -> Summary:
    rng, model = np.random.default_rng(seed), SPEC.new_model()
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    return SPEC.summarize(model)


def update(node: str, seq: int, base: int, *, flipped: bool = False, **kw) -> Update:
    s = trained(seq * 100 + ord(node)).with_provenance(
        node_id=node, sequence=seq, base_version=base
    )
    if flipped:  # a poisoned round: every weight's sign turned
        s = replace(s, tensors={**s.tensors, "weights": -s.tensor("weights")})
    return Update(s, partition=0, offset=seq, **kw)


def holdout(n: int = 200) -> Reservoir:
    rng, r = np.random.default_rng(99), Reservoir(capacity=n)
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        r.offer(x, bool(x["amount"] > 3.4))
    return r


def gated(margin: float = 0.05, **kw) -> Merger:
    judge = Judge({"fraud": holdout()}, QualityGate(margin))
    return Merger(MergerConfig(round_size=2, **kw), judge=judge)


def close(m: Merger, *updates: Update):
    for u in updates:
        assert m.offer(u, 0) is None
    (closed,) = m.close_due(0)
    return closed


@pytest.mark.parametrize(
    ("candidate", "published", "held"),
    [
        (HoldoutScore("roc_auc", 0.86, 100), HoldoutScore("roc_auc", 0.90, 100), False),
        (HoldoutScore("roc_auc", 0.84, 100), HoldoutScore("roc_auc", 0.90, 100), True),
        (HoldoutScore("roc_auc", 0.50, 10), HoldoutScore("roc_auc", 0.90, 10), False),  # too few
        (HoldoutScore("log_loss", 0.54, 100), HoldoutScore("log_loss", 0.50, 100), False),
        (HoldoutScore("log_loss", 0.56, 100), HoldoutScore("log_loss", 0.50, 100), True),
        (HoldoutScore("roc_auc", 0.10, 100), None, False),  # nothing published to compare
    ],
)
def test_the_gate_holds_only_what_is_worse_by_more_than_the_margin(
    candidate, published, held
) -> None:
    reason = QualityGate(0.05, min_events=50).held_because(candidate, published)
    assert (reason is not None) == held
    if held:
        assert candidate.metric in reason and "margin 0.05" in reason


def test_a_gate_margin_must_be_a_number_at_least_zero() -> None:
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError):
            QualityGate(bad)


def test_a_poisoned_round_is_held_and_the_next_merges_on_the_published_base() -> None:
    m = gated()
    v1 = close(m, update("a", 1, 0), update("b", 1, 0))
    assert v1.published and v1.metrics["holdout_roc_auc"] > 0.9

    v2 = close(m, update("a", 2, 1, flipped=True), update("b", 2, 1, flipped=True))
    assert not v2.published and v2.version == 2 and v2.parent_version == 1
    assert "roc_auc" in v2.held and v2.metrics["holdout_roc_auc"] < 0.5
    assert v2.metrics["published_roc_auc"] == pytest.approx(v1.metrics["holdout_roc_auc"])
    kept = m.tiers["fraud-linear"].current
    assert kept.base_version == 1 and m.tiers["fraud-linear"].published == 1
    np.testing.assert_array_equal(kept.tensor("weights"), v1.result.summary.tensor("weights"))
    assert m.counters["held-back"] == 1
    assert m.nodes["a"].excluded and "version 2 held back" in m.nodes["a"].reason

    # redelivered held updates are duplicates: never merged into a later round
    assert m.offer(update("a", 2, 1, flipped=True), 0).reason_code == "duplicate"
    v3 = close(m, update("a", 3, 1), update("b", 3, 1))
    assert v3.published and (v3.version, v3.parent_version) == (3, 1)
    assert v3.result.summary.n_samples == 4 * 60  # v1's and v3's events, none of v2's
    assert {c.staleness for c in v3.result.contributors} == {0}  # base 1 is the published one
    assert v3.delta is not None and v3.delta[0] == 1  # the sites hold 1, never saw 2


def test_a_held_version_goes_to_the_registry_history_only() -> None:
    m = gated()
    close(m, update("a", 1, 0), update("b", 1, 0))
    v2 = close(m, update("a", 2, 1, flipped=True), update("b", 2, 1, flipped=True))
    assert topic_records(v2, 1, {}, quantize="float32", deltas=True) == []
    record = registry_record(v2, "float32")
    assert record["held_back"] == v2.held and record["version"] == 2
    assert record["metrics"]["holdout_roc_auc"] == v2.metrics["holdout_roc_auc"]


def test_a_held_cumulative_snapshot_comes_back_with_the_next_one() -> None:
    m = gated()
    central = SPEC.new_model()
    rng = np.random.default_rng(5)

    def snapshot(seq: int) -> Update:
        for _ in range(30):
            x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
            SPEC.learn_one(central, x, bool(x["amount"] > 3.4))
        s = SPEC.summarize(central).with_provenance(node_id="c/p0", sequence=seq, base_version=0)
        return Update(s, tier="central", meta={"stats": "cumulative"}, partition=0, offset=seq)

    close(m, update("a", 1, 0), snapshot(1))  # v1: a's 60 + the centre's first 30
    v2 = close(m, update("a", 2, 1, flipped=True), snapshot(2))
    assert not v2.published
    v3 = close(m, update("a", 3, 1), snapshot(3))
    # the centre's 90 events counted once (its held stretch with its next snapshot), a's
    # held increment not at all
    assert v3.result.summary.n_samples == 60 + 60 + 90


def test_without_a_gate_the_holdout_only_scores() -> None:
    m = Merger(MergerConfig(round_size=2), judge=Judge({"fraud": holdout()}))
    close(m, update("a", 1, 0), update("b", 1, 0))
    v2 = close(m, update("a", 2, 1, flipped=True), update("b", 2, 1, flipped=True))
    assert v2.published and v2.metrics["holdout_roc_auc"] < 0.5
    assert "published_roc_auc" not in v2.metrics


def test_an_empty_holdout_judges_nothing() -> None:
    m = Merger(MergerConfig(round_size=2), judge=Judge({"fraud": Reservoir(10)}, QualityGate(0.0)))
    close(m, update("a", 1, 0), update("b", 1, 0))
    v2 = close(m, update("a", 2, 1, flipped=True), update("b", 2, 1, flipped=True))
    assert v2.published and "holdout_roc_auc" not in v2.metrics


def test_a_restart_never_reuses_a_held_version_number() -> None:
    m = gated()
    published = trained(1).with_provenance(node_id="fraud-linear", sequence=0, base_version=1)
    m.restore_model("fraud-linear", published, 1, issued=2)  # version 2 was held back
    assert m.offer(update("a", 1, 2), 0).reason_code == "future-base"  # 2 never existed
    v = close(m, update("a", 2, 1), update("b", 2, 1))
    assert (v.version, v.parent_version) == (3, 1)

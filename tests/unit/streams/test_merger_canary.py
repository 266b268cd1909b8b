"""The merger's canary tracker: reports pooled once per node, the verdict (#27 item 3)."""

from __future__ import annotations

from models.canary import CanaryPolicy, PairedLoss, in_canary
from streams.merger.canary import CanaryTracker

NODES = [f"store-{i}" for i in range(40)]
CANARIES = [n for n in NODES if in_canary(n, 0.3)]
OTHERS = [n for n in NODES if not in_canary(n, 0.3)]


def tracker() -> CanaryTracker:
    t = CanaryTracker(CanaryPolicy(0.3, margin=0.01, min_events=100))
    t.start("fraud-linear", version=5, previous=4)
    return t


def test_a_version_that_hurts_the_canaries_is_rolled_back() -> None:
    t = tracker()
    for node in CANARIES[:2]:
        assert t.report("fraud-linear", node, PairedLoss(5, 60, 60.0, 20.0).as_metrics())
    pending, verdict = t.verdict("fraud-linear")  # type: ignore[misc]
    assert (pending.version, pending.previous, verdict.action) == (5, 4, "rollback")
    assert "on the same 120 events" in verdict.reason
    assert t.verdict("fraud-linear") is None  # decided once


def test_a_version_that_does_not_hurt_them_is_promoted() -> None:
    t = tracker()
    t.report("fraud-linear", CANARIES[0], PairedLoss(5, 150, 30.0, 31.0).as_metrics())
    _, verdict = t.verdict("fraud-linear")  # type: ignore[misc]
    assert verdict.action == "promote"


def test_a_resent_or_older_report_counts_once() -> None:
    t = tracker()
    node = CANARIES[0]
    t.report("fraud-linear", node, PairedLoss(5, 60, 60.0, 20.0).as_metrics())
    t.report("fraud-linear", node, PairedLoss(5, 60, 60.0, 20.0).as_metrics())  # resent
    t.report("fraud-linear", node, PairedLoss(5, 10, 1.0, 9.0).as_metrics())  # replayed, older
    assert t.verdict("fraud-linear") is None  # 60 events, not 120 or 70
    assert t.pending["fraud-linear"].pooled() == PairedLoss(5, 60, 60.0, 20.0)


def test_reports_of_other_versions_or_nodes_outside_the_share_do_not_count() -> None:
    t = tracker()
    assert not t.report("fraud-linear", CANARIES[0], PairedLoss(4, 500, 500.0, 1.0).as_metrics())
    assert not t.report("fraud-linear", OTHERS[0], PairedLoss(5, 500, 500.0, 1.0).as_metrics())
    assert not t.report("fraud-linear", CANARIES[0], {"roc_auc": 0.5})
    assert not t.report("iot-hst", CANARIES[0], PairedLoss(5, 500, 500.0, 1.0).as_metrics())
    assert t.verdict("fraud-linear") is None


def test_the_core_marks_new_versions_for_the_canaries_and_waits_for_the_verdict() -> None:
    import numpy as np

    from models.specs import get_spec
    from streams.merger.rounds import Merger, MergerConfig, Update

    spec = get_spec("fraud-linear")

    def update(node: str, seq: int, base: int) -> Update:
        rng, model = np.random.default_rng(seq * 100 + ord(node)), spec.new_model()
        for _ in range(60):
            x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
            spec.learn_one(model, x, bool(x["amount"] > 3.4))
        s = spec.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=base)
        return Update(s, partition=0, offset=seq)

    merger = Merger(MergerConfig(strategy="fedavg", round_size=1, round_timeout_s=60), canary=0.2)
    assert merger.offer(update("a", 1, 0), 0) is None
    (first,) = merger.close_due(0)
    assert first.canary is None  # the first version goes to everyone: nothing to compare with
    merger.offer(update("a", 2, 1), 1)
    (second,) = merger.close_due(1)
    assert (second.version, second.canary) == (2, 0.2)
    assert merger.offer(update("b", 1, 1), 2) is None
    assert merger.close_due(2) == [] and "fraud-linear" in merger.paused  # b's round waits
    restored = merger.republish(
        "fraud-linear", first.result.summary, restored_from=1, reason="canary", now_ms=3
    )
    assert (restored.version, restored.canary, restored.restored_from) == (3, None, 1)
    merger.paused.discard("fraud-linear")  # the loop does this once the verdict is carried out
    (third,) = merger.close_due(4)
    assert (third.version, third.parent_version, third.canary) == (4, 3, 0.2)


def test_a_fleet_without_a_canary_gets_the_version_at_once() -> None:
    """No known edge in the share: nobody would report, so rounds would wait for good."""
    t = CanaryTracker(CanaryPolicy(0.3, margin=0.01, min_events=100))
    t.start("fraud-linear", version=5, previous=4, edges=OTHERS[:3])
    pending, verdict = t.verdict("fraud-linear")  # type: ignore[misc]
    assert (pending.version, verdict.action) == (5, "promote")
    assert "none of the 3 known edges" in verdict.reason


def test_a_fleet_with_a_canary_or_unknown_waits_for_reports() -> None:
    t = CanaryTracker(CanaryPolicy(0.3, margin=0.01, min_events=100))
    t.start("fraud-linear", version=5, previous=4, edges=[OTHERS[0], CANARIES[0]])
    t.start("iot-hst", version=2, previous=1, edges=[])  # no edge heard from yet
    assert t.verdict("fraud-linear") is None and t.verdict("iot-hst") is None

"""The merger's replay rules for signed updates (streams/merger/rounds.py).

A verified signature is a MAC of the content, so the merger can tell a
byte-identical redelivery (harmless: ``duplicate``) from an old sequence used
again (``replayed``: dead-lettered by the loop).
"""

from __future__ import annotations

import hashlib

from streams.merger.rounds import Merger, MergerConfig
from tests.unit.streams.test_merger_rounds import update


def mac(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def signed(node: str, seq: int, content: int = 0, **kw):
    return update(node, seq, signature=mac(node, seq, content), **kw)


def merger(**kw) -> Merger:
    return Merger(MergerConfig(**{"round_size": 1, "round_timeout_s": 5.0, **kw}))


def code(m: Merger, u, now: int = 0) -> str | None:
    refused = m.offer(u, now)
    return None if refused is None else refused.reason_code


def test_an_identical_redelivery_is_a_duplicate_queued_or_merged() -> None:
    m = merger(round_size=2)
    assert code(m, signed("a", 1)) is None
    assert code(m, signed("a", 1)) == "duplicate"  # still in the open round
    assert code(m, signed("b", 1)) is None
    (closed,) = m.close_due(0)
    assert code(m, signed("a", 1)) == "duplicate"  # merged already
    assert closed.result.summary.n_samples == 80
    assert m.counters["duplicate"] == 2 and "replayed" not in m.counters


def test_an_old_sequence_with_other_content_is_replayed_queued_or_merged() -> None:
    m = merger(round_size=2)
    assert code(m, signed("a", 1)) is None
    assert code(m, signed("a", 1, content=1)) == "replayed"  # same sequence, other bytes
    m.offer(signed("b", 1), 0)
    (closed,) = m.close_due(0)
    assert code(m, signed("a", 1, content=2)) == "replayed"
    assert closed.result.summary.n_samples == 80
    assert m.counters["replayed"] == 2


def test_a_sequence_not_newer_than_the_last_merged_is_replayed() -> None:
    m = merger()
    for seq in (5, 6):
        assert code(m, signed("a", seq)) is None
        m.close_due(0)
    assert code(m, signed("a", 3)) == "replayed"  # never seen, but older
    assert code(m, signed("a", 4, content=9)) == "replayed"
    assert code(m, signed("a", 7)) is None  # the node goes on
    # unsigned updates keep the old rules: an unseen older increment still counts
    assert m.offer(update("b", 5), 0) is None
    m.close_due(0)
    assert m.offer(update("b", 4), 0) is None


def test_a_refused_sequence_cannot_be_reused() -> None:
    m = merger()
    assert code(m, signed("a", 1)) is None
    m.close_due(0)
    assert code(m, signed("a", 2, base=9)) == "future-base"  # authentic, refused
    assert code(m, signed("a", 2, content=1)) == "replayed"
    assert code(m, signed("a", 3)) is None


def test_a_replayed_update_does_not_change_the_node_record() -> None:
    m = merger()
    m.offer(signed("a", 4, n=10), 0)
    m.close_due(0)
    before = (m.nodes["a"].excluded, m.nodes["a"].reason, m.nodes["a"].last_sequence)
    assert code(m, signed("a", 2, n=99)) == "replayed"
    assert (m.nodes["a"].excluded, m.nodes["a"].reason, m.nodes["a"].last_sequence) == before


def test_signatures_are_kept_only_for_the_dedup_window() -> None:
    m = merger(dedup_window=3)
    for seq in range(1, 7):
        m.offer(signed("a", seq), 0)
        m.close_due(0)
    ledger = m.nodes["a"]
    assert ledger.seen == [4, 5, 6] and sorted(ledger.macs) == [4, 5, 6]
    assert code(m, signed("a", 5)) == "duplicate"
    assert code(m, signed("a", 5, content=1)) == "replayed"
    assert code(m, signed("a", 2)) == "replayed"  # older than the window: not a duplicate


def test_a_restart_without_remembered_signatures_still_counts_duplicates() -> None:
    m = merger()
    m.offer(signed("a", 1), 0)
    m.close_due(0)
    m.nodes["a"].macs.clear()  # e.g. state written before signing was switched on
    assert code(m, signed("a", 1, content=5)) == "duplicate"

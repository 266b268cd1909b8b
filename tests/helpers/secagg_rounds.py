"""One secure round drawn by hypothesis, shared by the secure-vs-clear property tests.

Every such test draws which nodes take part, when each drops out (before
sending its input, before the unmasking, or never), whether a current global
exists, and the round's entropy; then checks the round's bookkeeping the same
way before comparing the secure global with the clear merge of what it included.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import event

from models.merge import merge
from models.secagg.aggregate import secure_merge
from models.secagg.round import Dropouts, seeded_entropy
from models.summary import Summary

__all__ = ["drawn_round"]


def _keys(summaries) -> set[tuple[str, int]]:
    return {(s.node_id, s.sequence) for s in summaries}


def drawn_round(
    pool: Sequence[Summary],
    picks: list[int],
    when: list[str | None],
    with_current: bool,
    seed: int,
    *,
    strategy: str,
    round_id: str,
):
    """``(out, current, included)``; ``included`` is None when the round was abandoned.

    Checked here: an abandoned round gives a reason and re-offers every update;
    a merged one re-offers exactly the nodes that dropped before their input.
    """
    updates = [pool[i] for i in picks]
    current = None
    if with_current:
        current = merge([pool[(picks[0] + 1) % len(pool)]], strategy).summary
        current = current.with_provenance(node_id="global", sequence=0, base_version=3)
    before: dict[str, list[str]] = {}
    for s, step in zip(updates, when, strict=False):
        if step is not None:
            before.setdefault(step, []).append(f"{s.node_id}#{s.sequence}")
    out = secure_merge(
        updates,
        current=current,
        accumulate=with_current,
        dropouts=Dropouts(before),
        entropy=seeded_entropy(seed),
        round_id=round_id,
    )
    event("abandoned" if out.result is None else "merged")
    if out.result is None:  # abandoned: nothing merged, every update back for the next round
        assert out.reason and _keys(out.reoffer) == _keys(updates)
        return out, current, None
    back = _keys(out.reoffer)
    assert back == {(s.node_id, 1) for s in updates if f"{s.node_id}#1" in before.get("input", [])}
    included = [s for s in updates if (s.node_id, s.sequence) not in back]
    assert {c.node_id for c in out.result.contributors} == {s.node_id for s in included}
    return out, current, included

"""A canary edge's measurement of a staged rollout (#27 item 3).

When the node adopts a version marked for the canaries it keeps the version
it replaced beside it and scores every event with both, before the label is
known (prequential, like every score). Each label, inline or late, adds the
pair's log losses to a :class:`models.canary.PairedLoss`, cumulative since
the adoption; the node's summaries carry it in their metrics and the merger
pools the canaries' latest reports (streams/merger/canary.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from models.canary import PairedLoss
from models.summary import Summary

__all__ = ["CanaryRun"]


class CanaryRun:
    def __init__(
        self,
        spec: Any,
        version: int,
        new: Summary,
        previous: Summary,
        *,
        max_pending: int = 100_000,
    ) -> None:
        self.spec = spec
        self.loss = PairedLoss(version)
        self._new, self._previous = spec.load(new), spec.load(previous)
        self._pending: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.max_pending = max_pending

    def score(self, event_id: str, x: Mapping[str, float], label: bool | None) -> None:
        pair = (self.spec.score_one(self._new, x), self.spec.score_one(self._previous, x))
        if label is not None:
            self.loss = self.loss.add(*pair, bool(label))
            return
        self._pending[event_id] = pair
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def label(self, event_id: str, label: bool) -> None:
        pair = self._pending.pop(event_id, None)
        if pair is not None:
            self.loss = self.loss.add(*pair, label)

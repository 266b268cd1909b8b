"""Ground truth that arrives late, interleaved into the event stream by time.

Card fraud is confirmed by a chargeback days later; a failure by a maintenance
report. A learner that sees the label with the event is being flattered, so
by default the generators emit each label as a separate ``Label`` event at
``event ts + delay``, the delay drawn from a log-normal distribution (most
labels come fairly soon, a long tail comes much later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Record = tuple[str, dict[str, Any]]

LABEL_MODES = ("late", "inline", "none")


@dataclass(frozen=True, kw_only=True)
class LabelPolicy:
    """How labels reach the log: ``late`` Label events, ``inline`` or ``none``."""

    mode: str = "late"
    median_delay_ms: int = 600_000
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in LABEL_MODES:
            raise ValueError(f"label mode must be one of {LABEL_MODES}, got {self.mode!r}")
        if self.median_delay_ms < 0 or self.sigma < 0:
            raise ValueError("label delay and its sigma must be >= 0")


def seeded(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the events and for label delays.

    Separate streams keep the events of a seed identical whatever the label
    mode: drawing delays from the events' generator would shift every draw
    after the first chunk.
    """
    events, labels = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(events), np.random.default_rng(labels)


class LateLabels:
    """Schedules Label events and merges those that are due into each chunk.

    Chunks must come in time order; a label is released in the first chunk
    whose last event is at or after the label's time, so the merged output is
    sorted by ``ts`` (an event precedes a label with the same ``ts``).
    """

    def __init__(self, policy: LabelPolicy, rng: np.random.Generator) -> None:
        self._policy = policy
        self._rng = rng
        self._ts = np.empty(0, dtype=np.int64)
        self._records: list[Record] = []

    def schedule(
        self, event_ids: list[str], site_ids: list[str], labels: np.ndarray, ts: np.ndarray
    ) -> None:
        """Queue one Label per event, due at ``ts + delay``."""
        p = self._policy
        delay = p.median_delay_ms * np.exp(p.sigma * self._rng.standard_normal(len(ts)))
        due = ts + delay.astype(np.int64)
        new = [
            ("Label", {"event_id": e, "ts": t, "label": y, "site_id": s})
            for e, t, y, s in zip(event_ids, due.tolist(), labels.tolist(), site_ids, strict=True)
        ]
        self._ts = np.concatenate([self._ts, due])
        self._records.extend(new)

    def merge(self, events: list[Record], ts: np.ndarray) -> list[Record]:
        """``events`` (sorted by ``ts``) with the labels due by their last ``ts``."""
        if len(ts) == 0:
            return events
        order = np.argsort(self._ts, kind="stable")
        n_due = int(np.searchsorted(self._ts[order], ts[-1], side="right"))
        due_idx, keep_idx = order[:n_due], order[n_due:]
        due = [self._records[i] for i in due_idx.tolist()]
        due_ts = self._ts[due_idx]
        self._records = [self._records[i] for i in keep_idx.tolist()]
        self._ts = self._ts[keep_idx]
        keys = np.concatenate([ts, due_ts])
        kind = np.concatenate([np.zeros(len(ts), np.int8), np.ones(len(due_ts), np.int8)])
        items = events + due
        return [items[i] for i in np.lexsort((kind, keys)).tolist()]

    def drain(self) -> list[Record]:
        """Every label still pending, in time order (the end of the stream)."""
        order = np.argsort(self._ts, kind="stable").tolist()
        out = [self._records[i] for i in order]
        self._records, self._ts = [], np.empty(0, dtype=np.int64)
        return out


def attach(
    policy: LabelPolicy,
    late: LateLabels,
    events: list[Record],
    ts: np.ndarray,
    labels: np.ndarray,
) -> list[Record]:
    """Apply the label policy to one time-ordered chunk of data events."""
    if policy.mode == "inline":
        for (_, record), y in zip(events, labels.tolist(), strict=True):
            record["label"] = y
        return events
    if policy.mode == "late":
        ids = [r["event_id"] for _, r in events]
        sites = [r["site_id"] for _, r in events]
        late.schedule(ids, sites, labels, ts)
        return late.merge(events, ts)
    return events

"""The replayed stream every architecture sees: events and label arrivals, in one order.

A comparison is fair only if every architecture scores the same events in
the same order and learns each label at the same moment. :func:`load_stream`
turns an event log into that order once: a list of steps, each either an
event (score it) or a label arrival (learn the event it belongs to).

Labels arrive as the log says -- inline (at once), or as later ``Label``
records -- unless ``label_delay`` moves every label ``N`` events after its
event (the ``--label-delay`` flag), which makes runs on inline logs measure
delayed feedback too.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas import Codec
from schemas.eventlog import read_events

__all__ = ["Stream", "load_stream"]

EVENT = 0
LABEL = 1


@dataclass(frozen=True)
class Stream:
    """Events (features, site, time, label, encoded size) and the step order."""

    record_type: str
    event_ids: list[str]
    features: list[dict[str, float]]
    sites: np.ndarray  # site index per event
    site_names: list[str]
    ts_ms: np.ndarray
    labels: np.ndarray  # bool per event (False where never labelled)
    labelled: np.ndarray  # bool: a label arrives for this event
    raw_bytes: np.ndarray  # Avro single-object size of the event (+ its Label record)
    steps: list[tuple[int, int]]  # (EVENT | LABEL, event index)

    def __len__(self) -> int:
        return len(self.event_ids)


def _millis(value: object) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else int(value)


def load_stream(path: Path, *, task: str | None = None, label_delay: int | None = None) -> Stream:
    """Read ``path`` into a :class:`Stream`; bad records are skipped (counted by the log)."""
    codec = Codec()
    ids: list[str] = []
    feats: list[dict[str, float]] = []
    sites: list[str] = []
    ts: list[int] = []
    inline: list[bool | None] = []
    raw: list[int] = []
    late: dict[str, tuple[bool, int]] = {}
    index: dict[str, int] = {}
    order: list[tuple[int, str]] = []
    record_type = None
    for event in read_events(path, on_error=lambda _bad: None):
        r = event.record
        if event.record_type == "Label":
            late.setdefault(r["event_id"], (bool(r["label"]), len(codec.encode("Label", r))))
            order.append((LABEL, r["event_id"]))
            continue
        record_type = record_type or event.record_type
        if event.record_type != record_type:
            continue
        index[r["event_id"]] = len(ids)
        ids.append(r["event_id"])
        feats.append(dict(r["features"]))
        sites.append(r.get("site_id") or "site-0")
        ts.append(_millis(r["ts"]))
        inline.append(r.get("label"))
        raw.append(len(codec.encode(event.record_type, r)))
        order.append((EVENT, r["event_id"]))
    if record_type is None:
        raise ValueError(f"{path}: no Transaction or SensorReading records")
    if task is not None:
        want = {"fraud": "Transaction", "iot": "SensorReading"}[task]
        if want != record_type:
            raise ValueError(f"{path} holds {record_type} records, not {want} (--task {task})")
    n = len(ids)
    labels = np.zeros(n, dtype=bool)
    labelled = np.zeros(n, dtype=bool)
    raw_bytes = np.array(raw, dtype=np.int64)
    for i, y in enumerate(inline):
        if y is not None:
            labels[i], labelled[i] = bool(y), True
    for eid, (y, size) in late.items():
        i = index.get(eid)
        if i is not None and not labelled[i]:
            labels[i], labelled[i] = y, True
            raw_bytes[i] += size
    steps = _steps(order, index, inline, labelled, label_delay)
    names = sorted(set(sites))
    position = {s: k for k, s in enumerate(names)}
    return Stream(
        record_type=record_type,
        event_ids=ids,
        features=feats,
        sites=np.array([position[s] for s in sites], dtype=np.int64),
        site_names=names,
        ts_ms=np.array(ts, dtype=np.int64),
        labels=labels,
        labelled=labelled,
        raw_bytes=raw_bytes,
        steps=steps,
    )


def _steps(
    order: list[tuple[int, str]],
    index: dict[str, int],
    inline: list[bool | None],
    labelled: np.ndarray,
    label_delay: int | None,
) -> list[tuple[int, int]]:
    steps: list[tuple[int, int]] = []
    if label_delay is not None:
        waiting: deque[int] = deque()
        for kind, eid in order:
            if kind != EVENT:
                continue
            i = index[eid]
            steps.append((EVENT, i))
            if labelled[i]:
                waiting.append(i)
            while waiting and i - waiting[0] >= label_delay:
                steps.append((LABEL, waiting.popleft()))
        steps.extend((LABEL, i) for i in waiting)
        return steps
    seen: set[int] = set()
    for kind, eid in order:
        i = index.get(eid)
        if i is None:
            continue
        if kind == EVENT:
            steps.append((EVENT, i))
            if inline[i] is not None:
                steps.append((LABEL, i))
                seen.add(i)
        elif i not in seen:
            steps.append((LABEL, i))
            seen.add(i)
    return steps

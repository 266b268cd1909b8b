"""The node's file source: resume position, site filter, pacing by count or by log clock."""

from __future__ import annotations

import json
import time

from edge_agents.sources import FileSource


def write_log(path, n: int, step_ms: int) -> None:
    rows = []
    for i in range(n):
        rows.append({"type": "SensorReading", "region": "r", "event_id": f"e{i}",
                     "ts": 1_700_000_000_000 + i * step_ms, "site_id": f"s{i % 2}",
                     "device_id": "d", "features": {"t": float(i)}})  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_speedup_replays_on_the_logs_clock_and_never_sleeps_negative(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, 41, step_ms=10)  # 400 ms of event time
    started = time.monotonic()
    items = list(FileSource(log, on_bad=lambda *a: None, speedup=2.0))
    elapsed = time.monotonic() - started
    assert len(items) == 41 and 0.19 <= elapsed < 2.0  # 400 ms / 2


def test_sites_filter_and_resume_after_a_position(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, 10, step_ms=1)
    items = list(FileSource(log, on_bad=lambda *a: None, sites=frozenset({"s1"}), after=4))
    assert [i.record["event_id"] for i in items] == ["e5", "e7", "e9"]
    assert [i.position for i in items] == [6, 8, 10]

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


def test_time_zero_from_a_file_waits_for_it_and_shares_its_clock(tmp_path):
    """Agents of a fleet take their time zero from a file written once all are up."""
    import threading

    log, zero = tmp_path / "log.jsonl", tmp_path / "start-at"
    write_log(log, 21, step_ms=10)  # 200 ms of event time
    source = FileSource(log, on_bad=lambda *a: None, speedup=1.0, start_at_file=zero)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(source))
    started = time.monotonic()
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive() and not got  # no file yet: nothing read
    zero.write_text(repr(time.time() + 0.2))  # time zero 0.2 s from now, then 200 ms of log
    reader.join(5)
    assert len(got) == 21 and 0.65 <= time.monotonic() - started < 3.0

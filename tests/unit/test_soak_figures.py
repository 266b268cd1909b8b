"""``bench/soak.py``'s figures from its samples: per-window rates and CPU, slopes, CPU time.

The soak's verdicts rest on these: the sustained maximum is the scored rate of
an overload run's last half, and a worker whose CPU per event grows from
window to window is told apart from one that got less of the cores.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import soak  # noqa: E402


def test_windows_give_rates_cpu_shares_and_cpu_per_event() -> None:
    at = [float(t) for t in range(101)]  # 100 s, one sample a second
    # 1,000 events/s for the first half, 500/s after; the worker uses 0.5 core throughout
    scored = [1000.0 * t if t <= 50 else 50_000 + 500.0 * (t - 50) for t in range(101)]
    cpu = {"central": [0.5 * t for t in at], "kafka": [0.1 * t for t in at]}
    rows = soak.windows(at, scored, cpu)
    assert len(rows) == soak.WINDOWS
    assert rows[0]["from_s"] == 20  # the warm-up is left out
    assert rows[0]["events_per_s"] == 1000 and rows[-1]["events_per_s"] == 500
    assert rows[0]["central_cpu"] == pytest.approx(0.5)
    assert rows[0]["kafka_cpu"] == pytest.approx(0.1)
    # same CPU, half the events: the cost per event doubled
    assert rows[0]["central_us_per_event"] == pytest.approx(500.0)
    assert rows[-1]["central_us_per_event"] == pytest.approx(1000.0)


def test_slope_is_per_second_over_the_steady_part() -> None:
    at = [2.0 * i for i in range(50)]  # a sample every 2 s
    values = [100.0] * 10 + [100.0 + 3.0 * t for t in at[10:]]  # a warm-up spike, then 3/s
    values[0] = 10_000.0
    assert soak.slope(at, values) == pytest.approx(3.0)


def test_cpu_seconds_reads_this_process() -> None:
    before, started = soak.cpu_seconds(os.getpid()), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    used = soak.cpu_seconds(os.getpid()) - before
    assert used == pytest.approx(time.process_time() - started, abs=0.05)
    assert soak.cpu_seconds(2**22 + 1) is None  # above pid_max: no such process

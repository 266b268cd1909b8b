"""The edge agent's bug boundary: one bug sets one record aside, a run of them stops the node."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agents.bugs import BugFence
from prism.services.supervisor import Service, Supervisor
from runtime.errors import BugStreakError


def test_a_clean_record_resets_the_run_and_the_total_keeps_counting() -> None:
    fence = BugFence(limit=2)
    for _ in range(2):
        fence.tripped(RuntimeError("x"))
    assert not fence.over and fence.in_a_row == 2
    fence.passed()
    assert fence.in_a_row == 0 and fence.total == 2
    for _ in range(2):
        fence.tripped(RuntimeError("y"))
    assert not fence.over  # 2 + 2 bugs, but never more than 2 in a row
    fence.tripped(RuntimeError("z"))
    assert fence.over and fence.in_a_row == 3 and fence.total == 5


def test_limit_zero_stops_at_the_first_bug_and_a_negative_limit_is_refused() -> None:
    fence = BugFence(limit=0)
    fence.tripped(ValueError("v"))
    assert fence.over
    with pytest.raises(ValueError, match=">= 0"):
        BugFence(limit=-1)


def test_a_trip_names_the_exception_type_and_a_fresh_trace_id() -> None:
    fence = BugFence(limit=10)
    one, two = fence.tripped(KeyError("k")), fence.tripped(ZeroDivisionError("division"))
    assert (one.error_type, two.error_type) == ("KeyError", "ZeroDivisionError")
    assert one.trace_id != two.trace_id and len(one.trace_id) == 16
    assert two.in_a_row == 2 and "division" in two.message


def test_the_stop_error_says_why_where_to_look_and_exits_70() -> None:
    fence = BugFence(limit=1)
    fence.tripped(RuntimeError("a"))
    last = fence.tripped(RuntimeError("boom"), trace_id="t-123")
    error = fence.stop(last)
    assert isinstance(error, BugStreakError) and error.exit_code == 70
    text = str(error)
    assert "2 records in a row" in text and "limit 1" in text
    assert "RuntimeError: boom" in text and "t-123" in text


def test_the_supervisor_halts_a_service_that_stopped_for_bugs_instead_of_restarting_it(
    tmp_path,
) -> None:
    halted = Service("edge-1", ["edge", "run"])
    halted._proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(70)"])
    halted._proc.wait(30)
    halted.state = "running"
    supervisor = Supervisor(tmp_path, [halted])
    next_try: dict[str, float] = {}
    supervisor._exited(halted, next_try)
    assert halted.state == "halted" and halted.exit_code == 70
    assert next_try == {} and halted.restarts == 0

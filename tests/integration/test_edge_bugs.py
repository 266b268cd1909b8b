"""An edge agent survives its own bugs, against the real local Kafka.

The bug is planted by ``tests/helpers/buggy_edge.py`` (scoring chosen event ids
raises), so the agent, its sinks and the broker are all real: one poisoned
record becomes one dead letter with the exception type and a trace id and the
next records are scored; more than K in a row stop the agent with exit code 70
and a message that says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.services import decoded, service_env, wait_exit

from runtime.settings import Settings

pytestmark = pytest.mark.integration
BUGGY = Path(__file__).parents[1] / "helpers" / "buggy_edge.py"
GOOD = {"type": "Transaction", "region": "r0", "ts": 1_700_000_000_000, "site_id": "s1",
        "account_id": "a", "merchant_id": "m", "amount": 10.0, "currency": "EUR",
        "features": {"f": 1.0}, "label": False}  # fmt: skip


def buggy_edge(settings: Settings, tmp_path: Path, node: str, ids: list[str], poisoned: set[str],
               *extra: str) -> subprocess.Popen:  # fmt: skip
    source = tmp_path / f"{node}.jsonl"
    source.write_text("".join(json.dumps({**GOOD, "event_id": i}) + "\n" for i in ids))
    planted = tmp_path / f"{node}.bugs"
    planted.write_text("\n".join(sorted(poisoned)))
    log = tmp_path / f"{node}.log"
    proc = subprocess.Popen(
        [sys.executable, str(BUGGY), str(planted), "edge", "run", "--node", node,
         "--source", str(source), "--state-dir", str(tmp_path / node), "--drain-timeout", "30",
         *extra],
        env=service_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def dead_letters(tmp_path: Path, node: str) -> list[dict]:
    path = tmp_path / node / "dead-letters.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def scored(settings: Settings, topic: str, node: str) -> list[str]:
    rows = decoded(settings.kafka_bootstrap, topic)
    return sorted(r["event_id"] for _, _, r in rows if r["node_id"] == node)


def test_one_poisoned_record_is_one_dead_letter_with_type_and_trace_id_and_the_rest_scored(
    test_settings: Settings, prism_topics, tmp_path: Path
):
    agent = buggy_edge(test_settings, tmp_path, "bug1", ["g1", "p1", "g2", "g3"], {"p1"})
    assert wait_exit(agent) == 0
    [dead] = dead_letters(tmp_path, "bug1")
    assert dead["reason_code"] == "internal-error" and dead["error_type"] == "ZeroDivisionError"
    assert dead["where"] == 2 and "planted bug on p1" in dead["reason"]
    log = Path(agent.log_path).read_text()
    # the traceback is in the log under the dead letter's trace id
    assert f"trace_id={dead['trace_id']}" in log and "Traceback" in log
    assert "ZeroDivisionError: planted bug on p1" in log
    assert scored(test_settings, prism_topics["scores"], "bug1") == ["g1", "g2", "g3"]
    # moved past it: a restart reads nothing again, so the bug is not replayed
    again = buggy_edge(test_settings, tmp_path, "bug1", ["g1", "p1", "g2", "g3"], {"p1"})
    assert wait_exit(again) == 0
    assert len(dead_letters(tmp_path, "bug1")) == 1


def test_more_than_k_bugs_in_a_row_stop_the_agent_with_exit_70_and_a_clear_message(
    test_settings: Settings, prism_topics, tmp_path: Path
):
    ids = ["g1", "p1", "p2", "g2", "p3", "p4", "p5", "p6", "g3"]
    agent = buggy_edge(test_settings, tmp_path, "bug2", ids, {i for i in ids if i[0] == "p"},
                       "--max-bugs-in-row", "3")  # fmt: skip
    assert wait_exit(agent) == 70
    dead = dead_letters(tmp_path, "bug2")
    assert [d["where"] for d in dead] == [2, 3, 5, 6, 7, 8]  # every poisoned one set aside
    assert {d["error_type"] for d in dead} == {"ZeroDivisionError"}
    assert len({d["trace_id"] for d in dead}) == 6
    log = Path(agent.log_path).read_text()
    assert "prism: error: 4 records in a row hit an internal error (limit 3)" in log
    assert dead[-1]["trace_id"] in log.splitlines()[-1]
    # two bugs then a clean record do not count as a run; nothing after the stop is read
    assert scored(test_settings, prism_topics["scores"], "bug2") == ["g1", "g2"]

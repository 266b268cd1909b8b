"""`prism stack up --brokers 3` as a user runs it: three real KRaft nodes, then down.

The failover under load is tests/reliability/test_broker_failover.py; this is
the command line around it: the bootstrap list, topics with 3 copies, a row
per node in `status`, a dead node seen, the single broker refused beside it,
and `down` leaving no process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from integration.test_stack import _clean_env, _prism

from prism.stack import kafka, kafka_cluster, process
from prism.stack.state import read_env_file
from runtime.settings import Settings

pytestmark = pytest.mark.integration


def _metadata_listing(admin: AdminClient, topic: str, timeout: float = 30.0):
    """Metadata from a broker that knows ``topic`` (one not the controller may lag)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        if topic in metadata.topics and not metadata.topics[topic].error:
            return metadata
        time.sleep(0.2)
    raise AssertionError(f"no broker lists {topic} after {timeout} s")


def test_cli_up_three_brokers_status_per_node_topics_with_three_copies_down(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    env = _clean_env(state) | {"PRISM_KAFKA_HEAP": "384m"}
    up = _prism(env, "stack", "up", "--brokers", "3")
    assert up.returncode == 0, up.stderr
    lines = dict(line.split("=", 1) for line in up.stdout.splitlines())
    assert read_env_file(state / "stack.env") == lines
    assert lines["PRISM_REPLICATION_FACTOR"] == "3"
    addresses = lines["PRISM_KAFKA_BOOTSTRAP"].split(",")
    settings = Settings(state_dir=state)
    pids = kafka_cluster.running_pids(settings)
    try:
        assert len(set(addresses)) == 3 and None not in pids.values() and len(pids) == 3
        assert not (state / "kafka").exists()  # the single broker's files untouched
        status = _prism(env, "stack", "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert list(rows) == ["kafka", "kafka-1", "kafka-2", "kafka-3", "redis"]
        assert [rows[f"kafka-{i}"]["address"] for i in (1, 2, 3)] == addresses
        assert all(rows[f"kafka-{i}"]["pid"] == pids[i] for i in (1, 2, 3))
        assert all(row["healthy"] for row in rows.values())

        topics = _prism(env, "topics", "create")  # RF from the stack file
        assert topics.returncode == 0, topics.stderr
        admin = AdminClient({"bootstrap.servers": lines["PRISM_KAFKA_BOOTSTRAP"]})
        metadata = _metadata_listing(admin, "prism.scores")  # every broker learns it soon
        assert len(metadata.brokers) == 3
        scores = metadata.topics["prism.scores"]
        assert all(len(p.replicas) == 3 for p in scores.partitions.values())
        config = admin.describe_configs([ConfigResource("topic", "prism.scores")])
        assert next(iter(config.values())).result()["min.insync.replicas"].value == "2"

        single = _prism(env, "stack", "up")  # one broker beside the cluster: refused
        assert single.returncode != 0 and "prism stack down" in single.stderr
        assert kafka.running_pid(settings) is None

        process.kill(pids[2], kafka.MARKER)  # a dead node is seen, in its own row
        broken = _prism(env, "stack", "status", "--json")
        assert broken.returncode == 1
        rows = {row["name"]: row for row in json.loads(broken.stdout)}
        assert rows["kafka-2"]["alive"] is False and not rows["kafka-2"]["healthy"]
        assert rows["kafka"]["reachable"] and "2/3 nodes running" in rows["kafka"]["detail"]
        assert rows["kafka-1"]["healthy"] and rows["kafka-3"]["healthy"]
    finally:
        down = _prism(env, "stack", "down")
    assert down.returncode == 0 and "kafka" in down.stderr, down.stderr
    assert not any(process.is_alive(pid, kafka.MARKER) for pid in pids.values())
    assert not (state / "stack.env").exists()

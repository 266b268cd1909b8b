"""The local multi-broker Kafka (`prism stack up --brokers N`): configs, layout, CLI.

The real three-node run, with a leader killed under load, is
tests/reliability/test_broker_failover.py; these are the pure parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.cli import build_parser
from prism.stack import StackInfo, kafka_cluster
from prism.stack.kafka import render_server_properties, replication
from prism.stack.kafka_cluster import Node, bootstrap_of, plan
from runtime.errors import StackError
from runtime.settings import Settings

INTERNAL_RF = (
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "share.coordinator.state.topic.replication.factor",
)
INTERNAL_ISR = ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr")


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def node_props(node: Node, nodes: list[Node], data: Path) -> dict[str, str]:
    voters = ",".join(n.voter for n in nodes)
    text = render_server_properties(
        broker_port=node.broker_port,
        controller_port=node.controller_port,
        data_dir=data,
        node_id=node.node_id,
        voters=voters,
        brokers=len(nodes),
    )
    return props(text)


def test_single_broker_config_keeps_one_copy_and_no_cluster_defaults(tmp_path: Path) -> None:
    p = props(render_server_properties(broker_port=1, controller_port=2, data_dir=tmp_path))
    assert p["node.id"] == "1" and p["controller.quorum.voters"] == "1@127.0.0.1:2"
    assert all(p[k] == "1" for k in INTERNAL_RF + INTERNAL_ISR)
    assert "default.replication.factor" not in p and "min.insync.replicas" not in p


def test_three_nodes_share_the_voters_and_keep_three_copies_two_in_sync(tmp_path: Path) -> None:
    nodes = plan(3, [(9001, 9101), (9002, 9102), (9003, 9103)])
    voters = "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    for node in nodes:
        p = node_props(node, nodes, tmp_path / str(node.node_id))
        assert p["node.id"] == str(node.node_id)
        assert p["controller.quorum.voters"] == voters
        assert p["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        assert p["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{node.broker_port}"
        assert p["log.dirs"] == str(tmp_path / str(node.node_id))
        assert all(p[k] == "3" for k in (*INTERNAL_RF, "default.replication.factor"))
        assert all(p[k] == "2" for k in (*INTERNAL_ISR, "min.insync.replicas"))
    assert bootstrap_of(nodes) == "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"


def test_free_ports_are_distinct_across_nodes() -> None:
    nodes = plan(3)
    ports = [p for n in nodes for p in (n.broker_port, n.controller_port)]
    assert len(set(ports)) == 6 and [n.node_id for n in nodes] == [1, 2, 3]


@pytest.mark.parametrize("brokers", range(1, 10))
def test_one_node_may_die_without_refusing_or_losing_an_acks_all_write(brokers: int) -> None:
    factor, min_isr = replication(brokers)
    assert factor <= brokers and 1 <= min_isr <= factor
    if brokers >= 3:  # acked by 2 of 3: survives losing one, and still writable without it
        assert (factor, min_isr) == (3, 2) and factor - min_isr >= 1 and min_isr >= 2


def test_nodes_live_apart_from_the_single_broker(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    paths = kafka_cluster.node_paths(settings, 3)
    assert [p.root for p in paths.values()] == [
        tmp_path / "kafka-cluster" / f"node-{i}" for i in (1, 2, 3)
    ]
    assert tmp_path / "kafka" not in {p.root for p in paths.values()}


def test_a_cluster_formatted_for_another_size_is_refused_with_what_to_do(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    (tmp_path / "kafka-cluster").mkdir()
    (tmp_path / "kafka-cluster" / "brokers").write_text("3")
    with pytest.raises(StackError, match="holds a 3-broker cluster.*prism stack down"):
        kafka_cluster.start(settings, 5)


def test_a_cluster_of_one_is_the_single_broker_not_this_module(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="at least 2"):
        kafka_cluster.start(Settings(state_dir=tmp_path), 1)


def test_env_lines_of_a_cluster_carry_its_replication_factor() -> None:
    single = StackInfo("127.0.0.1:1", "redis://:p@127.0.0.1:2/0", "redis://q:r@127.0.0.1:2/0")
    assert "PRISM_REPLICATION_FACTOR" not in single.env_lines()
    three = StackInfo("a:1,b:2,c:3", "redis://x", "redis://y", kafka_brokers=3)
    assert three.env_lines()["PRISM_REPLICATION_FACTOR"] == "3"
    assert three.env_lines()["PRISM_KAFKA_BOOTSTRAP"] == "a:1,b:2,c:3"


def test_stack_up_takes_brokers_and_defaults_to_one() -> None:
    parser = build_parser()
    assert parser.parse_args(["stack", "up"]).brokers == 1
    assert parser.parse_args(["stack", "up", "--brokers", "3"]).brokers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["stack", "up", "--brokers", "0"])

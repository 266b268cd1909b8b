"""#25.6 -- a three-broker KRaft cluster loses the partition leaders' broker under load.

A single broker cannot show that ``acks=all`` and idempotence hold across a
leader change: a restarted broker is the same leader with the same log. Here
three real nodes (`prism stack up --brokers 3`'s cluster: replication factor 3,
``min.insync.replicas`` 2) carry a paced replay while a central worker, the
merge job and an edge agent run; the broker leading most of the partitions in
use (one of scores among them) is SIGKILLed mid-load and stays dead. Nobody
is restarted:

- every replayed event has exactly one central score, every event of the
  edge's log exactly one edge score (topic or offline file): none lost, none
  twice across the leader change;
- every edge summary is on model-updates once and merged exactly once;
- the central checkpoints equal a reference learned in-process from what is in
  Kafka (1e-9), and learned every event once;
- the services finish on their own (one process each, exit 0, no traceback).

It prints how long the killed leader's partitions of the scores topic took
to accept writes again (the figure in docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from helpers.exact_run import assert_exact_run, assert_services_finished
from helpers.runs import datagen_log, start_cli, wait_records
from helpers.services import wait_exit, wait_for_log

from prism.stack import kafka_cluster, process
from prism.stack.kafka import MARKER
from prism.stack.topics import TOPICS, create_topics
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
EVENTS = 9_000  # replayed to the central worker at RATE events/s
RATE = 500
EDGE_EVENTS = 2_400
BROKERS = 3
IN_USE = ("transactions", "scores", "model-updates", "global-model")


@pytest.fixture
def cluster(test_settings: Settings, tmp_path: Path):
    nodes = Settings(state_dir=tmp_path / "cluster", kafka_heap="384m")
    bootstrap = kafka_cluster.start(nodes, BROKERS)
    try:
        prefix = f"t{os.urandom(4).hex()}"
        update = {"kafka_bootstrap": bootstrap, "redis_prefix": prefix, "replication_factor": 3}
        yield nodes, test_settings.model_copy(update=update)
    finally:
        kafka_cluster.stop(nodes)


def leaders(admin: AdminClient, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the node id leading it now."""
    metadata = admin.list_topics(timeout=10)
    return {
        (name, p.id): p.leader for name in topics for p in metadata.topics[name].partitions.values()
    }


def assert_replicated(admin: AdminClient, topics: list[str]) -> None:
    """Every partition has 3 in-sync replicas, and a write needs 2 of them.

    Polled: a broker other than the controller learns of a topic just created
    a moment later, and its followers join the ISR after their first fetch.
    """
    deadline, seen = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        seen = {
            (name, p.id): (len(p.replicas), len(p.isrs))
            for name in topics
            if name in metadata.topics
            for p in metadata.topics[name].partitions.values()
        }
        if {t for t, _p in seen} == set(topics) and set(seen.values()) == {(3, 3)}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"not every partition has 3 in-sync replicas: {seen}")
    for future in admin.describe_configs([ConfigResource("topic", t) for t in topics]).values():
        assert future.result()["min.insync.replicas"].value == "2"


def high_marks(bootstrap: str, parts: list[tuple[str, int]]) -> dict[tuple[str, int], int] | None:
    """Each partition's high watermark, asked by a new client: no stale leader cached."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-probe"})
    try:
        return {tp: consumer.get_watermark_offsets(TopicPartition(*tp), 2)[1] for tp in parts}
    except KafkaException:  # no leader elected yet, or this client asked the dead one
        return None
    finally:
        consumer.close()


def seconds_until_written(bootstrap: str, parts: list[tuple[str, int]], since: float) -> float:
    """Until each of ``parts`` (led by the dead broker) took a new acks=all write.

    The first answer after the kill already comes from a new leader; the time
    runs until a later answer shows a write on top of it, so it is an upper bound.
    """
    before, deadline = None, since + 120
    while time.monotonic() < deadline:
        marks = high_marks(bootstrap, parts)
        if marks is not None:
            before = before or marks
            if all(marks[tp] > before[tp] for tp in parts):
                return time.monotonic() - since
        time.sleep(0.1)
    raise AssertionError(f"partitions {parts} took no write within 120 s of the kill")


def wait_leaders_moved(admin: AdminClient, parts: list[tuple[str, int]], dead: int) -> None:
    """Until every partition of ``parts`` has a live leader other than ``dead``."""
    topics = sorted({topic for topic, _p in parts})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = leaders(admin, topics)
        if all(now[tp] not in (dead, -1) for tp in parts):
            return
        time.sleep(0.2)
    raise AssertionError(f"node {dead} (killed) still leads, or nobody does: {now}")


def test_leader_broker_killed_under_load_nothing_lost_nothing_twice(
    cluster, tmp_path: Path
) -> None:
    nodes, settings = cluster
    boot = settings.kafka_bootstrap or ""
    create_topics(settings, bootstrap=boot, partitions=3)
    admin = AdminClient({"bootstrap.servers": boot})
    assert_replicated(admin, [settings.topic(name) for name in TOPICS])
    central_log, edge_log = (
        datagen_log(tmp_path, "central", EVENTS, 31),
        datagen_log(tmp_path, "edge", EDGE_EVENTS, 7),
    )

    merger = start_cli(settings, tmp_path, "merger", "merger", "run", "--round-size", "1",
                    "--idle-exit", "25", "--group", "m-failover")  # fmt: skip
    central = start_cli(settings, tmp_path, "central", "central", "run", "--task", "fraud",
                     "--group", "c-failover", "--worker-id", "c1", "--idle-exit", "15",
                     "--checkpoint-interval", "1")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=90)
    wait_for_log(central, "assigned", timeout=120)
    edge = start_cli(settings, tmp_path, "edge", "edge", "run", "--node", "e1", "--source",
                  str(edge_log), "--state-dir", str(tmp_path / "e1"), "--rate", str(RATE // 4),
                  "--summary-every", "150", "--drain-timeout", "120")  # fmt: skip
    replay = start_cli(settings, tmp_path, "replay", "replay", str(central_log), "--no-progress",
                    "--rate", str(RATE))  # fmt: skip
    services = {"merger": merger, "central": central, "edge": edge}

    wait_records(boot, settings.topic("scores"), EVENTS // 4, timeout=120)
    led = leaders(admin, [settings.topic(name) for name in IN_USE])
    scores_leaders = {
        node for (topic, _p), node in led.items() if topic == settings.topic("scores")
    }
    victim = max(scores_leaders, key=lambda node: sum(n == node for n in led.values()))
    pid = kafka_cluster.node_pid(nodes, victim)
    assert pid is not None, f"node {victim} is not running"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert process.wait_gone(pid, MARKER, 20.0)
    orphans = [
        tp for tp, node in led.items() if node == victim and tp[0] == settings.topic("scores")
    ]
    gap = seconds_until_written(boot, orphans, killed_at)
    wait_leaders_moved(admin, list(led), victim)
    print(f"\nfailover: node {victim} led {sum(n == victim for n in led.values())}/{len(led)} "
          f"partitions; its scores partitions took writes again after {gap:.1f} s")  # fmt: skip

    assert wait_exit(replay, timeout=300) == 0
    assert_services_finished(services, timeout=300)  # the same processes, on their own
    assert_exact_run(
        settings,
        tmp_path,
        central_log=central_log,
        edge_log=edge_log,
        group="c-failover",
        events=EVENTS,
    )

"""docker-compose.yml started for real: ``up --scale edge=3 --wait``, a replayed log,
signed globals, restarts, ``down`` + ``up``, the SASL overlay and the monitoring profile,
asserted through the ports the stack publishes on 127.0.0.1.

The tests share one stack and run in file order (each picks up where the last left).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from helpers.compose import SASL, Compose, leftovers

from prism.stack.topics import TOPICS
from runtime.model_registry import RegistryClient, RegistryKeys
from schemas import Codec
from schemas.eventlog import read_events
from schemas.identity import KeyVerifier, parse_trust_file

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

KAFKA = "127.0.0.1:9092"
ADMIN_URL = "redis://:prism-dev-password@127.0.0.1:6379/0"
QUERY_URL = "redis://prism-query:prism-query-password@127.0.0.1:6379/0"
SERVICES = {
    "kafka",
    "redis",
    "topics",
    "keys",
    "central-fraud",
    "central-iot",
    "merger",
    "edge",
    "prometheus",
}
# the services by name: the monitoring profile's grafana has no stand-in image (docs/compose.md)
UP = ("--profile", "monitoring", "up", "-d", "--scale", "edge=3", "--wait", "--wait-timeout", "240",
      *sorted(SERVICES))  # fmt: skip
EVENTS = 1500  # per replayed log


def replay(compose: Compose, seed: int, tmp: Path) -> set[str]:
    """Replay the compose `replay` profile's log for SEED; return its event ids (the
    same log generated here: same generator, same seed)."""
    compose.env.update(REPLAY_EVENTS=str(EVENTS), REPLAY_SEED=str(seed))
    out = compose("--profile", "replay", "run", "--rm", "replay", timeout=240)
    assert f"transaction={EVENTS}" in out and "errors=0" in out, out
    log = tmp / f"replay-{seed}.avro"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "prism.cli",
            "datagen",
            "fraud",
            "--events",
            str(EVENTS),
            "--sites",
            "8",
            "--seed",
            str(seed),
            "--out",
            str(log),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {e.record["event_id"] for e in read_events(log) if e.record_type != "Label"}


def central_scores(want: set[str], timeout: float = 180) -> collections.Counter[str]:
    """How many times the centre scored each event: the scores topic read from its start
    until every wanted event is there, then on to the end offsets of that moment (the
    edges never stop scoring, so "no more messages" never comes)."""
    codec = Codec()
    consumer = Consumer(
        {
            "bootstrap.servers": KAFKA,
            "group.id": f"compose-test-{time.time()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["prism.scores"])
    counts: collections.Counter[str] = collections.Counter()
    deadline, ends = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(5000, timeout=1.0):
                if m.error() is None:
                    score = codec.decode(m.value())
                    if score["source"] == "central":
                        counts[score["event_id"]] += 1
            if ends is None and want <= counts.keys():
                parts = consumer.assignment()
                ends = [consumer.get_watermark_offsets(p, timeout=10) for p in parts]
            if ends is not None:
                at = [p.offset for p in consumer.position(parts)]
                if all(hi <= lo or pos >= hi for (lo, hi), pos in zip(ends, at, strict=True)):
                    break
    finally:
        consumer.close()
    return counts


def checkpoints() -> dict[bytes, bytes]:
    client = redis.Redis.from_url(QUERY_URL, socket_timeout=10)
    return {
        k: client.get(k)
        for k in client.scan_iter("prism:checkpoint:*")
        if client.type(k) == b"string"
    }


def topics(bootstrap: str = KAFKA, **config: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap, **config})
    return set(admin.list_topics(timeout=10).topics)


def trust_file(compose: Compose) -> str:
    """The trust file the `keys` service wrote, as the merger reads it."""
    return compose("exec", "-T", "merger", "cat", "/keys/trust.json", timeout=60)


def edge_nodes(compose: Compose) -> set[str]:
    """Each replica's node id: edge-<its hostname>, the container's short id."""
    return {f"edge-{cid[:12]}" for cid in compose("ps", "-q", "edge").split()}


# -- the base stack ------------------------------------------------------------------
@pytest.fixture(scope="module")
def first(compose: Compose, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The stack up with three edges and Prometheus, and a first log replayed."""
    compose(*UP, timeout=360)
    return replay(compose, 1, tmp_path_factory.mktemp("logs"))


def test_every_service_comes_up_healthy(compose: Compose, first: set[str]) -> None:
    ps = compose.wait_healthy(SERVICES, timeout=60)
    assert sum(c["Service"] == "edge" for c in ps) == 3
    for c in ps:  # the Prism image's HEALTHCHECK is on, not only the compose file's
        if c["Service"] not in {"topics", "keys", "prometheus"}:
            assert c["Health"] == "healthy", c


def test_the_centre_scores_every_replayed_event_once(first: set[str]) -> None:
    scored = central_scores(first)
    assert first <= scored.keys(), f"{len(first - scored.keys())} events not scored"
    assert {n for e, n in scored.items() if e in first} == {1}


def test_global_model_merges_all_three_edges_and_the_central_shard(
    compose: Compose, first: set[str]
) -> None:
    edges = edge_nodes(compose)
    assert len(edges) == 3
    client = RegistryClient(QUERY_URL, keys=RegistryKeys())
    deadline, contributors = time.monotonic() + 150, set()
    while time.monotonic() < deadline:
        try:
            history = client.history("fraud-linear")
            contributors = {c["node_id"] for v in history for c in v["contributors"]}
        except Exception:  # noqa: BLE001 - no global model yet
            pass
        if edges <= contributors and any(
            n.startswith("prism-central-fraud/") for n in contributors
        ):
            break
        time.sleep(2)
    assert edges <= contributors, (edges, contributors)
    assert any(n.startswith("prism-central-fraud/p") for n in contributors), contributors
    # signed by default: every version is the merger's, by the keys service's trust file
    readers = KeyVerifier(parse_trust_file(trust_file(compose)), contract="GlobalModel")
    for version in client.history("fraud-linear"):
        assert version["key_id"] == "merger" and readers.check(version), version["version"]


def test_read_only_user_may_read_but_not_write(first: set[str]) -> None:
    client = redis.Redis.from_url(QUERY_URL, socket_timeout=10)
    assert client.exists("prism:models")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("prism:models", "overwritten")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.delete("prism:models")


def test_prometheus_scrapes_every_service(compose: Compose, first: set[str]) -> None:
    want = {"central-fraud:9101", "central-iot:9103", "merger:9102"}
    deadline, health = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen("http://127.0.0.1:9090/api/v1/targets", timeout=10) as r:
            targets = json.load(r)["data"]["activeTargets"]
        health = {t["labels"]["instance"]: (t["labels"]["job"], t["health"]) for t in targets}
        edges = [i for i, (job, _) in health.items() if job == "edge"]
        if want <= health.keys() and len(edges) == 3 and all(h == "up" for _, h in health.values()):
            return
        time.sleep(3)
    raise AssertionError(f"Prometheus targets not all up: {health}")


def test_restarting_kafka_and_redis_loses_nothing(
    compose: Compose, first: set[str], tmp_path: Path
) -> None:
    before_topics = topics()
    assert {f"prism.{t}" for t in TOPICS} <= before_topics
    before = checkpoints()
    assert any(b"prism-central-fraud" in k for k in before), before.keys()
    compose("restart", "kafka", timeout=120)
    compose.wait_healthy(SERVICES)
    assert topics() >= before_topics
    compose("restart", "redis", timeout=120)
    compose.wait_healthy(SERVICES)
    after = checkpoints()
    assert before.keys() <= after.keys()  # AOF on the redis-data volume
    second = replay(compose, 2, tmp_path)  # and the stack still scores, each event once
    scored = central_scores(first | second)
    assert (first | second) <= scored.keys()
    assert {n for e, n in scored.items() if e in first | second} == {1}


def test_down_then_up_resumes_from_the_checkpoints_scoring_nothing_twice(
    compose: Compose, first: set[str], tmp_path: Path
) -> None:
    before, keys = checkpoints(), trust_file(compose)
    compose.remember_volumes()
    compose("--profile", "monitoring", "down", "-t", "20", timeout=180)
    assert leftovers()["containers"] == []
    compose(*UP, timeout=360)
    assert trust_file(compose) == keys  # the same identities: made once, kept on the volume
    assert "keys: kept" in compose("logs", "keys", timeout=60)
    # the topics and the checkpoints are back from their volumes
    assert {f"prism.{t}" for t in TOPICS} <= topics()
    assert before.keys() <= checkpoints().keys()
    third = replay(compose, 3, tmp_path)
    scored = central_scores(third)
    assert third <= scored.keys()
    assert first <= scored.keys()  # the scores made before `down` are still in the topic
    twice = {e: n for e, n in scored.items() if n > 1}
    assert twice == {}, f"{len(twice)} events scored more than once"


def test_down_v_leaves_nothing_behind(compose: Compose) -> None:
    compose.destroy()
    assert leftovers() == {"containers": [], "networks": [], "volumes": []}
    for name in compose.volumes:
        gone = subprocess.run(["docker", "volume", "inspect", name], capture_output=True)
        assert gone.returncode != 0, f"volume {name} left behind"


# -- the SASL/SCRAM overlay ----------------------------------------------------------
def test_sasl_overlay_starts_refuses_a_client_without_login_and_edges_finish(engine: None) -> None:
    sasl = Compose(files=SASL)
    try:
        sasl(
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            "240",
            "kafka",
            "topics",
            "central-fraud",
            timeout=360,
        )
        sasl.wait_healthy({"kafka-format", "kafka", "redis", "topics", "central-fraud"})
        login = {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "prism",
        }
        # the SCRAM user made at format time is the broker's: the services log in with it
        assert {f"prism.{t}" for t in TOPICS} <= topics(
            **login, **{"sasl.password": "prism-dev-kafka-password"}
        )
        with pytest.raises(KafkaException):  # no login: the listener does not answer
            topics()
        with pytest.raises(KafkaException):  # a wrong password is refused
            topics(**login, **{"sasl.password": "wrong"})
        edge_reads_its_log_logs_in_and_stays_down(sasl)
    finally:
        sasl.destroy()
    assert leftovers() == {"containers": [], "networks": [], "volumes": []}


def edge_reads_its_log_logs_in_and_stays_down(sasl: Compose) -> None:
    """An edge with a short log: it logs in, scores it all, exits 0, and is not restarted."""
    sasl.env.update(EDGE_EVENTS="200", EDGE_RATE="100")
    sasl("up", "-d", "edge", timeout=180)
    (cid,) = sasl("ps", "-a", "-q", "edge", timeout=60).split()

    def state() -> list[str]:
        fmt = "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}"
        out = subprocess.run(
            ["docker", "inspect", "-f", fmt, cid],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.split()

    deadline = time.monotonic() + 120
    while state()[0] != "exited" and time.monotonic() < deadline:
        time.sleep(1)
    assert state() == ["exited", "0", "0"], sasl.logs()
    logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, timeout=60)
    assert "edge agent done" in logs.stderr + logs.stdout
    assert "events=200 " in logs.stderr + logs.stdout
    window = time.monotonic() + 10  # `unless-stopped` would restart it within a second
    while time.monotonic() < window:
        assert state() == ["exited", "0", "0"]
        time.sleep(1)

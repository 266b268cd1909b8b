"""Kafka SASL/SCRAM end to end: a real broker that refuses anonymous clients.

The broker is a real Apache Kafka started by ``prism.stack.kafka`` with a
SASL_PLAINTEXT listener (SCRAM-SHA-512, users written at format time). Every
Prism process below is a real ``prism`` CLI process given only the
``PRISM_KAFKA_SECURITY_PROTOCOL`` / ``PRISM_KAFKA_SASL_*`` variables: topic
creation, replay, the central learner, an edge agent and the merger all work
through SASL, and a wrong password or a client without SASL is stopped with a
message that says what to set -- never a silent hang.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from helpers.services import service_env, wait_exit, wait_for_log
from pydantic import SecretStr

from prism.cli import main
from prism.stack import kafka as local_kafka
from prism.stack.topics import TOPICS
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import read_events

pytestmark = pytest.mark.integration
CODEC = Codec()
USER = "prism"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker of this module's own with a SCRAM-SHA-512 listener and the user ``prism``."""
    broker_settings = Settings(state_dir=tmp_path_factory.mktemp("sasl-broker"))
    sasl = local_kafka.BrokerSasl({USER: secrets.token_urlsafe(18)})
    bootstrap = local_kafka.start(broker_settings, sasl=sasl)
    try:
        yield bootstrap, sasl
    finally:
        local_kafka.stop(broker_settings)


@pytest.fixture
def sasl_settings(sasl_broker, test_settings: Settings) -> Settings:
    """The test's settings (session Redis, unique prefix) on the SASL broker, as user prism."""
    bootstrap, sasl = sasl_broker
    return test_settings.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(sasl.users[USER]),
        }
    )


def env_of(settings: Settings, **override: str) -> dict[str, str]:
    env = service_env(settings)
    env.update(
        PRISM_KAFKA_SECURITY_PROTOCOL=settings.kafka_security_protocol,
        PRISM_KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism,
        PRISM_KAFKA_SASL_USERNAME=settings.kafka_sasl_username or "",
        PRISM_KAFKA_SASL_PASSWORD=(
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        ),
    )
    env.update(override)
    return {k: v for k, v in env.items() if v != ""}  # an empty variable is an unset one


class Procs:
    """``prism`` CLI processes with their own logs; whatever still runs is killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.started = tmp_path, []

    def start(self, env: dict[str, str], *args: str, name: str) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "prism.cli", *args],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def run(self, env: dict[str, str], *args: str, name: str, timeout: float = 180) -> tuple:
        """Run to the end; (exit code, log text, seconds taken)."""
        began = time.monotonic()
        proc = self.start(env, *args, name=name)
        code = wait_exit(proc, timeout)
        return code, Path(proc.log_path).read_text(errors="replace"), time.monotonic() - began


@pytest.fixture
def procs(tmp_path: Path):
    out = Procs(tmp_path)
    yield out
    for proc in out.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def read_all(bootstrap: str, security: dict[str, str], topic: str, partitions: int = 3) -> list:
    """Every record of ``topic`` up to its end, read through SASL: decoded values."""
    group = f"read-{uuid.uuid4().hex}"
    consumer = Consumer({**security, "bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                for p in range(partitions)}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items() if hi > lo])
        want, out = sum(hi - lo for lo, hi in ends.values()), []
        deadline = time.monotonic() + 60
        while len(out) < want and time.monotonic() < deadline:
            out += [m for m in consumer.consume(10_000, timeout=1.0) if m.error() is None]
        assert len(out) == want, f"read {len(out)} of {want} records of {topic}"
        return [CODEC.decode(m.value()) for m in out]
    finally:
        consumer.close()


def fraud_log(tmp_path: Path, events: int, sites: int) -> Path:
    path = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", str(events), "--sites", str(sites),
                 "--regions", "1", "--seed", "3", "--fraud-rate", "0.05", "--labels", "inline",
                 "--out", str(path)]) == 0  # fmt: skip
    return path


def test_every_service_works_through_sasl_scram(
    sasl_broker, sasl_settings: Settings, procs: Procs, tmp_path: Path
) -> None:
    bootstrap, sasl = sasl_broker
    password = sasl.users[USER]
    env = env_of(sasl_settings)
    security = sasl.client_security(USER)
    log = fraud_log(tmp_path, events=3000, sites=3)
    code, out, _ = procs.run(env, "topics", "create", name="topics")
    assert code == 0, out
    assert out.count("created") == len(TOPICS)  # every topic, created through SASL

    group, worker = f"g-{uuid.uuid4().hex[:6]}", "w-sasl"
    central = procs.start(env, "central", "run", "--task", "fraud", "--group", group,
                          "--worker-id", worker, "--idle-exit", "4", name="central")  # fmt: skip
    wait_for_log(central, "partition assigned", timeout=120)
    code, out, _ = procs.run(env, "replay", str(log), "--no-progress", "--rate", "3000",
                             name="replay")  # fmt: skip
    assert code == 0, out
    assert wait_exit(central) == 0

    sent = [
        r["event_id"] for r in read_all(bootstrap, security, sasl_settings.topic("transactions"))
    ]
    scores = read_all(bootstrap, security, sasl_settings.topic("scores"))
    assert len(sent) == 3000
    assert sorted(s["event_id"] for s in scores) == sorted(sent)  # one score per event
    assert {s["node_id"] for s in scores} == {worker}
    assert read_all(bootstrap, security, sasl_settings.topic("dead-letter")) == []

    # an edge agent (confluent-kafka producer, admin probe and globals consumer) and the
    # merger, through the same listener: the edge's scores and summaries arrive and merge
    mine = [e.record["event_id"] for e in read_events(log) if e.record_type == "Transaction"
            and e.record["site_id"] == "store-0000"]  # fmt: skip
    edge = procs.start(env, "edge", "run", "--node", "edge-s", "--source", str(log),
                       "--sites", "store-0000", "--state-dir", str(tmp_path / "edge"),
                       "--drain-timeout", "60", name="edge")  # fmt: skip
    assert wait_exit(edge) == 0
    edge_scores = [s for s in read_all(bootstrap, security, sasl_settings.topic("scores"))
                   if s["node_id"] == "edge-s"]  # fmt: skip
    assert mine and sorted(s["event_id"] for s in edge_scores) == sorted(mine)
    merger = procs.start(env, "merger", "run", "--round-size", "1", "--idle-exit", "4",
                         "--group", f"m-{group}", name="merger")  # fmt: skip
    assert wait_exit(merger) == 0
    updates = read_all(bootstrap, security, sasl_settings.topic("model-updates"))
    merged = read_all(bootstrap, security, sasl_settings.topic("global-model"), partitions=3)
    assert {u["node_id"] for u in updates} >= {"edge-s"}
    assert merged, "the merger published no global model"

    logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    assert "kafka_auth=SASL_PLAINTEXT/SCRAM-SHA-512 user=prism" in logs["central.log"]
    for name, text in logs.items():
        assert password not in text, f"{name} shows the SASL password"


def test_a_wrong_password_or_no_sasl_is_refused_with_a_clear_message(
    sasl_broker, sasl_settings: Settings, procs: Procs
) -> None:
    bootstrap, sasl = sasl_broker
    wrong = env_of(sasl_settings, PRISM_KAFKA_SASL_PASSWORD="not-" + sasl.users[USER])
    for name, args in {
        "topics": ("topics", "create"),
        "central": ("central", "run", "--task", "fraud", "--group", "g-wrong"),
        "merger": ("merger", "run", "--group", "m-wrong"),
    }.items():
        code, out, took = procs.run(wrong, *args, name=f"wrong-{name}", timeout=90)
        assert code == 2, f"{name}: exit {code}\n{out[-2000:]}"
        assert "refused the login of SASL_PLAINTEXT/SCRAM-SHA-512 user=prism" in out, name
        assert "PRISM_KAFKA_SASL_PASSWORD" in out and sasl.users[USER] not in out, name
        assert took < 60, f"{name} took {took:.0f} s to give up"

    # no SASL at all: the broker closes the connection; replay says what to set
    plain = env_of(sasl_settings, PRISM_KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
                   PRISM_KAFKA_SASL_USERNAME="", PRISM_KAFKA_SASL_PASSWORD="")  # fmt: skip
    log = fraud_log(procs.tmp_path, events=20, sites=1)
    code, out, took = procs.run(plain, "replay", str(log), "--no-progress", name="plain")
    assert code == 2, out[-2000:]
    assert "set PRISM_KAFKA_SECURITY_PROTOCOL" in out and took < 60, out[-2000:]
    # and a bare librdkafka client without SASL gets no metadata from the listener
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "anon", "log_level": 0})
    with pytest.raises(KafkaException):
        consumer.list_topics(timeout=5)
    consumer.close()

    # a SASL user with the PLAINTEXT protocol is a usage error, before any connection
    mixed = env_of(sasl_settings, PRISM_KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    code, out, _ = procs.run(mixed, "topics", "create", name="mixed")
    assert code == 2 and "set it to SASL_PLAINTEXT or SASL_SSL" in out, out[-2000:]


def test_the_faust_engine_logs_in_through_aiokafka(
    sasl_broker, sasl_settings: Settings, procs: Procs, tmp_path: Path
) -> None:
    """``--engine faust`` uses aiokafka, not librdkafka: its own SCRAM login, same outcome."""
    bootstrap, sasl = sasl_broker
    env, security = env_of(sasl_settings), sasl.client_security(USER)
    log = fraud_log(tmp_path, events=1000, sites=1)
    assert procs.run(env, "topics", "create", name="topics")[0] == 0
    central = procs.start(env, "central", "run", "--task", "fraud", "--engine", "faust",
                          "--group", f"gf-{uuid.uuid4().hex[:6]}", "--worker-id", "wf",
                          "--idle-exit", "4", name="central-faust")  # fmt: skip
    wait_for_log(central, "partition assigned", timeout=180)
    code, out, _ = procs.run(env, "replay", str(log), "--no-progress", name="replay")
    assert code == 0, out
    assert wait_exit(central) == 0
    sent = [
        r["event_id"] for r in read_all(bootstrap, security, sasl_settings.topic("transactions"))
    ]
    scores = read_all(bootstrap, security, sasl_settings.topic("scores"))
    assert len(sent) == 1000 and sorted(s["event_id"] for s in scores) == sorted(sent)
    assert sasl.users[USER] not in Path(central.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

"""Operator controls (#27 item 4) on the real Kafka + Redis: rollback, quarantine, pin.

The merger and the edges are real `prism` processes; the operator commands
are the real CLI. Waits poll with deadlines.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from helpers.runs import datagen_log
from helpers.services import TopicWatch, decoded, service_env, wait_exit

from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
NAME = "fraud-linear"


def _updates(round_no: int) -> list[bytes]:
    """Two nodes' updates of one round: round r is based on version r - 1."""
    from models.serialization import weight_summary_record
    from models.specs import get_spec

    spec, out = get_spec(NAME), []
    for node in "ab":
        rng, model = np.random.default_rng(round_no * 100 + ord(node)), spec.new_model()
        for _ in range(100):
            x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
            # each round learns a different rule: versions differ visibly
            spec.learn_one(model, x, bool(x["amount"] > 2 + round_no * 0.5))
        s = spec.summarize(model).with_provenance(
            node_id=node, sequence=round_no, base_version=round_no - 1
        )
        record = weight_summary_record(s, tier="edge", created_at_ms=1)
        out.append(CODEC.encode("WeightSummary", record))
    return out


def _send(settings: Settings, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for v in values:
        producer.produce(topic, v, key=b"one")
    assert producer.flush(30) == 0


def _prism(
    settings: Settings, *args: str, redis_url: str | None = None
) -> subprocess.CompletedProcess:
    env = service_env(settings) | {"PRISM_REDIS_PREFIX": settings.redis_prefix}
    if redis_url is not None:
        env["PRISM_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "prism", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _wait(what: str, check: Callable[[], object], timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


def _current(client: redis.Redis, s: Settings) -> dict | None:
    data = client.get(f"{s.redis_prefix}:model:{NAME}:current")
    return None if data is None else CODEC.decode(data)


def _merger(spawn, group: str, log_name: str, *extra: str):
    return spawn("merger", "run", "--round-size", "2", "--round-timeout", "600",
                 "--group", group, *extra, log_name=log_name)  # fmt: skip


def test_rollback_reaches_the_edges_and_a_pinned_edge_stays(
    isolated: Settings, prism_topics, spawn, tmp_path: Path
) -> None:
    s, boot = isolated, isolated.kafka_bootstrap or ""
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    for r in (1, 2, 3):
        _send(s, prism_topics["model-updates"], _updates(r))
    merger = _merger(spawn, "glife1", "merger.log")
    _wait("version 3 current", lambda: (_current(client, s) or {}).get("version") == 3)
    assert _prism(s, "models", "pin", "e2", "3").returncode == 0

    log = datagen_log(tmp_path, "events", 20000, seed=3)  # at 50/s: longer than the test
    for node in ("e1", "e2"):
        spawn("edge", "run", "--node", node, "--source", str(log), "--state-dir",
              str(tmp_path / node), "--rate", "50", "--summary-every", "1000000",
              log_name=f"{node}.log")  # fmt: skip

    watch = TopicWatch(boot, prism_topics["scores"])
    scores = watch.all

    def on_version(node: str, version: int) -> list[dict]:
        return [r for r in scores() if r["node_id"] == node and r["model_version"] == version]

    _wait("both edges score with version 3", lambda: on_version("e1", 3) and on_version("e2", 3))
    done = _prism(s, "models", "rollback", NAME, "--to", "1", "--reason", "incident 7")
    assert done.returncode == 0, done.stderr
    asked = time.monotonic()
    rolled = _wait("e1 scores with the rolled-back model", lambda: on_version("e1", 4), 60)
    print(f"rollback to the first score with it: {time.monotonic() - asked:.1f} s")
    assert all(
        r["provenance"] == {"restored_from": "1", "reason": "rollback to 1 by an operator: "
                            "incident 7"} for r in rolled  # type: ignore[union-attr]
    )  # fmt: skip

    current = _current(client, s)
    assert current is not None
    assert (current["version"], current["restored_from"], current["strategy"]) == (4, 1, "restore")
    history = [
        CODEC.decode(v) for v in client.lrange(f"{s.redis_prefix}:model:{NAME}:history", 0, -1)
    ]
    v1 = next(r for r in history if r["version"] == 1)
    assert current["state"]["tensors"] == v1["state"]["tensors"]  # the very model of version 1
    assert not client.exists(f"{s.redis_prefix}:model:{NAME}:rollback")  # handled
    events = [r for _, _, r in decoded(boot, prism_topics["lifecycle"])]
    assert [(e["action"], e["reason_code"], e["version"], e["published_version"])
            for e in events] == [("rolled-back", "rollback", 1, 4)]  # fmt: skip

    time.sleep(3)  # e2 keeps scoring meanwhile: still on its pinned version
    e2 = [r for r in scores() if r["node_id"] == "e2"]
    later = [r for r in e2 if r["scored_at"] > rolled[0]["scored_at"]]  # type: ignore[index]
    assert later and {r["model_version"] for r in later} == {3}
    assert all(r["provenance"] == {"pinned": "3"} for r in later)
    # unpinned, e2 moves on to the current version
    assert _prism(s, "models", "unpin", "e2").returncode == 0
    _wait("e2 adopts version 4 once unpinned", lambda: on_version("e2", 4), 60)
    merger.terminate()
    assert wait_exit(merger) == 0
    watch.consumer.close()


def test_quarantine_survives_a_merger_restart(
    isolated: Settings, prism_topics, spawn, redis_query_url: str
) -> None:
    s, boot = isolated, isolated.kafka_bootstrap or ""
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    for r in (1, 2):
        _send(s, prism_topics["model-updates"], _updates(r))
    assert wait_exit(_merger(spawn, "glife2", "m1.log", "--idle-exit", "4")) == 0
    assert _current(client, s)["version"] == 2  # type: ignore[index]

    for args in (("quarantine", NAME, "2"), ("rollback", NAME, "--to", "1")):
        done = _prism(s, "models", *args, redis_url=redis_query_url)  # the read-only user
        assert done.returncode == 77 and "may not change the registry" in done.stderr, done.stderr
    assert not client.exists(f"{s.redis_prefix}:model:{NAME}:quarantine")
    # quarantined while no merger runs: the next one finds it in the registry
    assert _prism(s, "models", "quarantine", NAME, "2").returncode == 0
    assert wait_exit(_merger(spawn, "glife2", "m2.log", "--idle-exit", "4")) == 0
    current = _current(client, s)
    assert current is not None and (current["version"], current["restored_from"]) == (3, 1)
    assert "quarantined" in current["reason"]

    # never served again: the CLI refuses, and so does a merger restarted once more
    refused = _prism(s, "models", "rollback", NAME, "--to", "2")
    assert refused.returncode == 2 and "quarantined" in refused.stderr
    key = f"{s.redis_prefix}:model:{NAME}:rollback"
    client.hset(key, mapping={"to": "2", "reason": "past the CLI", "at": "1"})
    assert wait_exit(_merger(spawn, "glife2", "m3.log", "--idle-exit", "4")) == 0
    assert _current(client, s)["version"] == 3  # type: ignore[index]
    assert not client.exists(key)
    events = [r for _, _, r in decoded(boot, prism_topics["lifecycle"])]
    assert [(e["action"], e["reason_code"], e["version"]) for e in events] == [
        ("rolled-back", "quarantine", 1),
        ("rollback-refused", "quarantined", 2),
    ]
    globals_ = [CODEC.decode(v) for _, _, _, v in _read(boot, prism_topics["global-model"])]
    assert all(g["restored_from"] != 2 for g in globals_)
    assert sorted({g["version"] for g in globals_}) == [1, 2, 3]  # 2 only before its quarantine


def _read(boot: str, topic: str) -> list:
    from helpers.services import read_topic

    return read_topic(boot, topic)


def test_the_read_only_user_is_refused(isolated: Settings, redis_query_url: str) -> None:
    for args in (("pin", "e1", "3"), ("unpin", "e1")):
        done = _prism(isolated, "models", *args, redis_url=redis_query_url)
        assert done.returncode == 77, done.stderr
        assert "may not change the registry" in done.stderr and "Traceback" not in done.stderr
    client = redis.Redis.from_url(isolated.redis_url.get_secret_value())  # type: ignore[union-attr]
    assert not client.exists(f"{isolated.redis_prefix}:pins")

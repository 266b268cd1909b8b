"""#10.8 -- least-privilege Redis users: each service can do its job and nothing more.

The local redis-server declares one ACL user per kind of service
(prism/stack/redis_acl.py; docker-compose declares the same, checked in
tests/unit/test_compose.py). Against a real redis-server of the test's own:

- every user is refused (NOPERM) outside its keys and commands: no user but
  the admin writes another service's keys, runs KEYS/FLUSHALL/CONFIG, or (the
  edge and query users) writes at all;
- a central worker, the merger and an edge agent (globals from the registry),
  each connected as its own user, run a replay end to end: one score per
  event, checkpoints and the registry written, the global adopted by the edge
  — the privileges are enough, not just small; the shadow job, as its own
  user, pairs edge and central scores and saves its state.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from helpers.runs import datagen_log, event_ids, start_cli
from helpers.services import decoded, wait_exit, wait_for_log
from pydantic import SecretStr

from prism.stack import redis_server
from runtime.model_registry import RegistryClient, RegistryKeys, RegistryWriter
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
EVENTS = 1_500


@pytest.fixture
def acl_redis(tmp_path: Path):
    server = Settings(state_dir=tmp_path / "redis-state", redis_prefix=f"t{os.urandom(4).hex()}")
    addresses = redis_server.start(server)
    try:
        yield server.redis_prefix, addresses
    finally:
        redis_server.stop(server)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _refused(call, *args) -> bool:
    try:
        call(*args)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_each_user_is_refused_outside_its_keys_and_commands(acl_redis) -> None:
    p, addresses = acl_redis
    admin = _client(addresses.url)
    for key in (f"{p}:checkpoint:g:0", f"{p}:merger:g:offsets", f"{p}:model:m:current",
                "other:key"):  # fmt: skip
        admin.set(key, b"admin")
    central, merger, edge, shadow = (
        _client(addresses.role_urls[r]) for r in ("central", "merger", "edge", "shadow")
    )
    query = _client(addresses.query_url)
    with shadow.pipeline(transaction=True) as tx:  # its state: totals + offsets in one MULTI
        tx.hset(f"{p}:shadow:g", "p0", b"{}").execute()

    assert central.set(f"{p}:checkpoint:g:0", b"c") and central.get(f"{p}:checkpoint:g:0") == b"c"
    assert merger.set(f"{p}:merger:g:offsets", b"m") and merger.hset(f"{p}:node:n1", "a", 1) >= 0
    assert merger.set(f"{p}:model:m:current", b"m")
    with central.pipeline(transaction=True) as tx:  # checkpoints are MULTI/EXEC
        tx.set(f"{p}:checkpoint:g:1", b"x").hset(f"{p}:checkpoint:g:1:pending", "e", b"v")
        tx.execute()
    assert edge.get(f"{p}:model:m:current") == b"m" and query.get("other:key") == b"admin"

    refusals = {
        "central writes the merger's state": (central.set, f"{p}:merger:g:offsets", b"x"),
        "central writes the registry": (central.set, f"{p}:model:m:current", b"x"),
        "central reads the registry": (central.get, f"{p}:model:m:current"),
        "central reads the merger's state": (central.get, f"{p}:merger:g:offsets"),
        "merger writes a checkpoint": (merger.set, f"{p}:checkpoint:g:0", b"x"),
        "central writes outside the prefix": (central.set, "other:key", b"x"),
        "merger deletes outside the prefix": (merger.delete, "other:key"),
        "edge writes the registry": (edge.set, f"{p}:model:m:current", b"x"),
        "edge reads a checkpoint": (edge.get, f"{p}:checkpoint:g:0"),
        "shadow writes the registry": (shadow.set, f"{p}:model:m:current", b"x"),
        "shadow reads a checkpoint": (shadow.get, f"{p}:checkpoint:g:0"),
        "shadow reads the merger's state": (shadow.get, f"{p}:merger:g:offsets"),
        "central writes the shadow state": (central.hset, f"{p}:shadow:g", "p0", b"x"),
        "edge writes the shadow state": (edge.hset, f"{p}:shadow:g", "p0", b"x"),
        "query writes": (query.set, "other:key", b"x"),
        "query deletes": (query.delete, f"{p}:model:m:current"),
    }
    for role, client in {"central": central, "merger": merger, "edge": edge, "shadow": shadow,
                         "query": query}.items():  # fmt: skip
        refusals[f"{role} runs KEYS"] = (client.keys, "*")
        refusals[f"{role} runs FLUSHALL"] = (client.flushall,)
        refusals[f"{role} runs CONFIG GET"] = (client.config_get, "dir")
        refusals[f"{role} subscribes"] = (client.publish, "channel", "x")
    allowed = [what for what, (call, *args) in refusals.items() if not _refused(call, *args)]
    assert allowed == []
    assert admin.get(f"{p}:merger:g:offsets") == b"m" and admin.get("other:key") == b"admin"
    assert admin.hget(f"{p}:shadow:g", "p0") == b"{}"
    for c in (admin, central, merger, edge, shadow, query):
        c.close()


def test_services_run_end_to_end_each_as_its_own_user(acl_redis, test_settings, prism_topics,
                                                      tmp_path: Path) -> None:  # fmt: skip
    prefix, addresses = acl_redis

    def as_role(role: str) -> Settings:
        return test_settings.model_copy(update={
            "redis_url": SecretStr(addresses.role_urls[role]), "redis_prefix": prefix})  # fmt: skip

    central_log = datagen_log(tmp_path, "central", EVENTS, 41, labels="inline")
    edge_log = datagen_log(tmp_path, "edge", 1_200, 9)
    merger = start_cli(as_role("merger"), tmp_path, "merger", "merger", "run", "--round-size",
                       "1", "--idle-exit", "10", "--group", "m-acl")  # fmt: skip
    central = start_cli(as_role("central"), tmp_path, "central", "central", "run", "--task",
                        "fraud", "--group", "c-acl", "--worker-id", "c1", "--idle-exit", "10",
                        "--summary-interval", "1")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=60)
    wait_for_log(central, "assigned", timeout=90)
    replay = start_cli(test_settings, tmp_path, "replay", "replay", str(central_log),
                       "--no-progress", "--rate", "500")  # fmt: skip
    wait_for_log(merger, "round closed", timeout=90)
    edge = start_cli(as_role("edge"), tmp_path, "edge", "edge", "run", "--node", "e1", "--source",
                     str(edge_log), "--state-dir", str(tmp_path / "e1"), "--rate", "400",
                     "--globals-from", "registry", "--summary-every", "200",
                     "--drain-timeout", "60")  # fmt: skip
    assert wait_exit(replay, timeout=120) == 0
    for name, proc in {"central": central, "merger": merger, "edge": edge}.items():
        assert wait_exit(proc, timeout=180) == 0, name
        text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert "NOPERM" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"
    assert b"global model adopted" in Path(edge.log_path).read_bytes()  # type: ignore[attr-defined]

    boot = test_settings.kafka_bootstrap or ""
    central_scores = [r["event_id"] for _p, _o, r in decoded(boot, test_settings.topic("scores"))
                      if r["source"] == "central"]  # fmt: skip
    assert Counter(central_scores) == Counter(event_ids(central_log))
    admin, codec = _client(addresses.url), Codec()
    learned = sum(
        codec.decode(data, expected="CentralCheckpoint")["counters"].get("learned", 0)
        for p in range(3)
        if (data := admin.get(f"{prefix}:checkpoint:c-acl:{p}")) is not None
    )
    assert learned == EVENTS
    assert admin.hlen(f"{prefix}:merger:m-acl:offsets") > 0
    admin.close()
    registry = RegistryWriter(addresses.url, keys=RegistryKeys(prefix)).setup()
    assert registry.current_version("fraud-linear") >= 1
    registry.close()
    # the central worker's shards, recorded by the merger (the registry's one writer)
    query = RegistryClient(addresses.url, keys=RegistryKeys(prefix))
    shards = [n for n in query.nodes() if n["tier"] == "central"]
    query.close()
    assert shards and {n["meta"].get("worker") for n in shards} == {"c1"}


def test_the_shadow_job_pairs_scores_as_its_own_user(acl_redis, test_settings, prism_topics,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """`prism up --edge-mode hybrid` and compose's hybrid profile run the shadow job as
    prism-shadow: its keys are enough to pair scores, save its state and resume."""
    prefix, addresses = acl_redis
    pairs = 40
    producer = Producer({"bootstrap.servers": test_settings.kafka_bootstrap})
    codec = Codec()
    for i in range(pairs):
        for source, score in (("blend", 0.2), ("central", 0.2 if i % 4 else 0.9)):
            record = {"event_id": f"e{i}", "ts": 1_700_000_000_000 + i,
                      "scored_at": 1_700_000_000_050 + i, "node_id": "h1",
                      "model_name": "fraud-linear", "model_version": 1, "source": source,
                      "score": score, "latency_ms": 0.5, "label": None}  # fmt: skip
            producer.produce(prism_topics["scores"], codec.encode("Score", record),
                             key=f"e{i}".encode())  # fmt: skip
    assert producer.flush(30) == 0
    as_shadow = test_settings.model_copy(update={
        "redis_url": SecretStr(addresses.role_urls["shadow"]), "redis_prefix": prefix})  # fmt: skip
    for run in ("shadow", "shadow-again"):  # the second resumes from the saved state
        job = start_cli(as_shadow, tmp_path, run, "shadow", "run", "--group", "sh-acl",
                        "--idle-exit", "5")  # fmt: skip
        assert wait_exit(job, timeout=120) == 0, run
        text = Path(job.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert "NOPERM" not in text and "Traceback" not in text, f"{run}:\n{text[-3000:]}"
        query = RegistryClient(addresses.query_url, keys=RegistryKeys(prefix))
        [state] = query.shadow_states().values()
        query.close()
        totals = [s["stats"]["fraud-linear"] for s in state.values()]
        assert sum(t["pairs"] for t in totals) == pairs, run  # counted once, not again
        assert sum(t["decisions_differ"] for t in totals) == pairs // 4, run

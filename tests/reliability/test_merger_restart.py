"""#10.3 -- the merge job stopped mid-round (SIGKILL or SIGTERM) and restarted; #25.2 --
killed -9 during a Redis outage; FedAvgM / FedAdam momentum across a restart (the last).

Round 1 (six nodes) is merged; then half of round 2 arrives and the merger
checkpoints with that round open. It is stopped, the other half arrives (plus
a redelivery of one update it had already taken), and a restarted merger must
complete the round: version 2 has exactly the six round-2 updates, the exact
statistics count every one of them once, nothing is dead-lettered and no
third version appears.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter

import numpy as np
import pytest
import redis
from helpers.runs import start_cli, wait_records
from helpers.services import decoded, read_topic, wait_exit, wait_for_log
from integration.test_merger import CODEC, SPEC, N, local, message, send
from reliability.test_redis_restart import own_redis, wait_for_count  # noqa: F401 - a fixture

from models.serialization import global_model_from_record, summary_from_weight_record
from prism.stack import redis_server
from prism.stack.ports import free_port
from runtime.settings import Settings
from streams.merger.rounds import Merger, MergerConfig, Update

pytestmark = pytest.mark.integration
NODES = "abcdef"


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _wait_metric(proc, port: int, name: str, at_least: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the merger exited early"
        try:
            if _metric(port, name) >= at_least:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} < {at_least} after {timeout} s")


@pytest.fixture
def isolated(test_settings: Settings, monkeypatch) -> Settings:
    prefix = f"t{time.monotonic_ns() % 10**9}"
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    return test_settings.model_copy(update={"redis_prefix": prefix})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_round_interrupted_by_a_merger_restart_completes_with_each_update_once(
    sig, isolated: Settings, prism_topics, spawn
) -> None:
    s, topic = isolated, prism_topics["model-updates"]
    group = f"mid-{sig.name}"
    round1 = [local(n, 1, 0) for n in NODES]
    round2 = [local(n, 2, 1, draws=7) for n in NODES]
    port = free_port()
    args = ("merger", "run", "--round-size", "6", "--round-timeout", "600", "--group", group)
    first = spawn(*args, "--metrics-port", str(port), log_name="merger1.log")
    wait_for_log(first, "assigned", timeout=60)
    send(s, topic, [message(x) for x in round1])
    _wait_metric(first, port, "prism_merge_rounds_total", 1)
    send(s, topic, [message(x) for x in round2[:3]])
    _wait_metric(first, port, 'prism_events_total{kind="updates"', 9)
    done = _metric(port, "prism_checkpoints_total")
    _wait_metric(first, port, "prism_checkpoints_total", done + 1)  # stored with the round open
    first.send_signal(sig)
    assert first.wait(30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)

    send(s, topic, [message(round2[0])] + [message(x) for x in round2[3:]])  # + a redelivery
    second = spawn(*args, "--idle-exit", "4", log_name="merger2.log")
    assert wait_exit(second) == 0

    client = redis.Redis.from_url(s.redis_url.get_secret_value())  # type: ignore[union-attr]
    history = [
        global_model_from_record(CODEC.decode(v))
        for v in client.lrange(f"{s.redis_prefix}:model:fraud-linear:history", 0, -1)
    ]
    client.close()
    assert [h.version for h in history] == [2, 1]
    v2 = history[0]
    assert sorted((c.node_id, c.sequence) for c in v2.contributors) == [(n, 2) for n in NODES]
    assert v2.summary.n_samples == N * 12  # round 1 and round 2, each update once
    everything = round1 + round2
    want = sum(SPEC.algebra.align(x, v2.summary.features).tensor("count") for x in everything)
    np.testing.assert_array_equal(v2.summary.tensor("count"), want)
    boot = s.kafka_bootstrap or ""
    assert decoded(boot, prism_topics["dead-letter"]) == []
    published = {r["version"] for _, _, r in decoded(boot, prism_topics["global-model"])}
    assert published == {1, 2}


def test_a_merger_killed_during_a_redis_outage_never_reuses_a_version_number(
    own_redis,  # noqa: F811 - the fixture imported above
    prism_topics,
    tmp_path,
) -> None:
    """Chaos seed 1677549799: Redis stopped, rounds closed, the merger killed -9, both back.

    Before the fix the rounds closed during the outage went to the topic, the kill lost
    their state, and the restarted merger published the same numbers with other contents.
    Checked: each (key, version) on ``global-model`` has one content; no summary is a
    contributor of two versions; the registry's history is 1..3 with each update once."""
    server, s = own_redis
    topic, boot = prism_topics["model-updates"], s.kafka_bootstrap or ""
    rounds = [[local(n, r, r - 1, draws=r) for n in NODES] for r in (1, 2, 3)]
    args = ("merger", "run", "--round-size", "6", "--round-timeout", "600", "--group", "m-kill")
    first = start_cli(s, tmp_path, "merger1", *args)
    wait_for_log(first, "assigned", timeout=60)
    send(s, topic, [message(x) for x in rounds[0]])
    wait_for_log(first, "round closed", timeout=60)
    wait_records(boot, prism_topics["global-model"], 1)
    assert redis_server.stop(server)
    send(s, topic, [message(x) for x in rounds[1] + rounds[2]])
    wait_for_count(first, "round closed", 3)  # both merged in memory, Redis away
    time.sleep(1.0)  # what the old order produced before Redis had it is on the topic now
    first.kill()
    assert first.wait(30) == -signal.SIGKILL
    redis_server.restart(server)
    second = start_cli(s, tmp_path, "merger2", *args, "--idle-exit", "4")
    assert wait_exit(second, timeout=120) == 0

    contents: dict[tuple[bytes, int], set[bytes]] = {}
    versions: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for _p, _o, key, value in read_topic(boot, prism_topics["global-model"]):
        record = CODEC.decode(value)
        contents.setdefault((key, record["version"]), set()).add(value)
        merged = {(c["node_id"], c["sequence"]) for c in record["contributors"]}
        versions.setdefault((record["model_name"], record["version"]), set()).update(merged)
    reused = {k: len(v) for k, v in contents.items() if len(v) > 1}
    assert not reused, f"version numbers with more than one content: {reused}"
    seen: Counter[tuple[str, int]] = Counter(c for merged in versions.values() for c in merged)
    assert not [c for c, k in seen.items() if k > 1], "summaries merged into two versions"

    client = redis.Redis.from_url(s.redis_url.get_secret_value())  # type: ignore[union-attr]
    history = [
        global_model_from_record(CODEC.decode(v))
        for v in client.lrange(f"{s.redis_prefix}:model:fraud-linear:history", 0, -1)
    ]
    client.close()
    assert [h.version for h in history] == [3, 2, 1]
    for h, r in zip(history, (3, 2, 1), strict=True):
        assert sorted((c.node_id, c.sequence) for c in h.contributors) == [(n, r) for n in NODES]
    assert history[0].summary.n_samples == N * 18  # every update once
    assert {v for _k, v in contents} == {1, 2, 3}
    assert decoded(boot, prism_topics["dead-letter"]) == []


def _in_process(rounds: list[list[bytes]], config: MergerConfig) -> list[np.ndarray]:
    """What an uninterrupted merger publishes from the same records: each version's weights."""
    merger, out = Merger(config), []
    for values in rounds:
        for value in values:
            record = CODEC.decode(value, expected="WeightSummary")
            update = Update(summary_from_weight_record(record), created_at_ms=record["created_at"])
            assert merger.offer(update, int(record["created_at"])) is None
        (closed,) = merger.close_due(0)
        out.append(closed.result.summary.tensor("weights"))
    return out


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam"])
def test_a_restarted_merger_steps_on_from_the_same_server_momentum(
    strategy: str, isolated: Settings, prism_topics, spawn
) -> None:
    """Three rounds, a restart, a fourth: version 4 is the uninterrupted run's, bit for bit
    (before the optimizer state rested in Redis, the restart reset the momentum)."""
    s, topic = isolated, prism_topics["model-updates"]
    rounds = [[message(local(n, r, r - 1, draws=10 * r + i)) for i, n in enumerate(NODES)]
              for r in (1, 2, 3, 4)]  # fmt: skip
    args = ("merger", "run", "--strategy", strategy, "--deltas", "off", "--round-size", "6",
            "--round-timeout", "600", "--idle-exit", "4", "--group", f"m-{strategy}")  # fmt: skip
    send(s, topic, [v for values in rounds[:3] for v in values])
    assert wait_exit(spawn(*args, log_name="merger1.log")) == 0
    send(s, topic, rounds[3])
    assert wait_exit(spawn(*args, log_name="merger2.log")) == 0

    client = redis.Redis.from_url(s.redis_url.get_secret_value())  # type: ignore[union-attr]
    history = [
        global_model_from_record(CODEC.decode(v))
        for v in client.lrange(f"{s.redis_prefix}:model:fraud-linear:history", 0, -1)
    ]
    client.close()
    assert [h.version for h in history] == [4, 3, 2, 1]
    config = MergerConfig(strategy=strategy, round_size=6, round_timeout_s=600.0, deltas=None)
    expected = _in_process(rounds, config)
    for h, weights in zip(reversed(history), expected, strict=True):
        # the registry keeps float32 of the sent model, which is float32 already
        assert h.summary.tensor("weights").tobytes() == weights.tobytes(), h.version

"""#10.3 -- the merge job stopped mid-round (SIGKILL or SIGTERM) and restarted.

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

import numpy as np
import pytest
import redis
from helpers.services import decoded, wait_exit, wait_for_log
from integration.test_merger import CODEC, SPEC, N, local, message, send

from models.serialization import global_model_from_record
from prism.stack.ports import free_port
from runtime.settings import Settings

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

"""#10.5 -- Redis (AOF, appendfsync always) stopped mid-replay (SIGTERM, then SIGKILL), restarted.

A Redis of the test's own holds the checkpoints, the merger's state and the
registry while a central worker, the merge job and an edge agent (globals
from the registry) run on the session broker. Twice, mid-replay, the writers
are frozen (SIGSTOP) for a moment, everything under the prefix is read, Redis
is stopped (SIGTERM once, SIGKILL once), the services run on for a few
seconds without it, and Redis is restarted on the same port with the same
AOF. Checked:

- every key and value written before each stop is there after the restart,
  unchanged (nothing acknowledged was lost, even by a SIGKILL);
- the services rode it out: one process each, exit 0, no traceback; the
  central worker and the merger logged the outage and wrote again after it;
- every replayed event has exactly one central score, and the central
  checkpoints equal a reference learned in-process (1e-9): nothing learned
  twice or skipped while checkpoints were postponed;
- the registry's current global model is the last version on the
  global-model topic, and the edge adopted a global after the last restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis
from helpers.central import assert_checkpoint_matches, reference_models
from helpers.runs import datagen_log, event_ids, start_cli, wait_records
from helpers.services import decoded, read_topic, wait_exit, wait_for_log
from pydantic import SecretStr

from prism.stack import redis_server
from runtime.model_registry import RegistryKeys, RegistryWriter
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
EVENTS = 9_000
RATE = 600
EDGE_EVENTS = 2_400


@pytest.fixture
def own_redis(test_settings: Settings, tmp_path: Path):
    server = Settings(state_dir=tmp_path / "redis-state")
    addresses = redis_server.start(server)
    try:
        yield (
            server,
            test_settings.model_copy(
                update={
                    "redis_url": SecretStr(addresses.url),
                    "redis_query_url": SecretStr(addresses.query_url),
                    "redis_prefix": f"t{os.urandom(4).hex()}",
                }
            ),
        )
    finally:
        redis_server.stop(server)


def contents(url: str, prefix: str) -> dict[bytes, object]:
    """Every key under the prefix with its value, by type (order-free where Redis is)."""
    client = redis.Redis.from_url(url)
    out: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"set":
            out[key] = client.smembers(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}")
    client.close()
    return out


def signal_all(procs: Iterable[subprocess.Popen], sig: int) -> None:
    for proc in procs:
        os.kill(proc.pid, sig)


def wait_for_count(proc: subprocess.Popen, text: str, count: int, timeout: float = 60.0) -> None:
    path = Path(proc.log_path)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while path.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not {count} times in {path}"
        time.sleep(0.2)


def outage(
    server: Settings, settings: Settings, writers: list, *, kill: bool, outage_number: int
) -> None:
    """Freeze the writers, read everything, stop Redis, let them run without it, restart."""
    url = settings.redis_url.get_secret_value()  # type: ignore[union-attr]
    signal_all(writers, signal.SIGSTOP)
    try:
        time.sleep(0.3)  # a transaction in flight is either applied or not sent
        before = contents(url, settings.redis_prefix)
        pid = redis_server.running_pid(server)
        assert pid is not None
        if kill:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while redis_server.running_pid(server) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            assert redis_server.stop(server)
    finally:
        signal_all(writers, signal.SIGCONT)
    time.sleep(4)  # the services go on without Redis
    signal_all(writers, signal.SIGSTOP)
    try:
        redis_server.restart(server)
        after = contents(url, settings.redis_prefix)
    finally:
        signal_all(writers, signal.SIGCONT)
    assert before, "nothing was written before the stop: the test would prove nothing"
    for proc in writers:  # each wrote again: it noticed Redis was away, and that it is back
        wait_for_count(proc, "redis back", outage_number)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == value, key


def test_redis_sigterm_and_sigkill_mid_replay(own_redis, prism_topics, tmp_path: Path) -> None:
    server, settings = own_redis
    boot = settings.kafka_bootstrap or ""
    central_log = datagen_log(tmp_path, "central", EVENTS, 31)
    edge_log = datagen_log(tmp_path, "edge", EDGE_EVENTS, 7)
    merger = start_cli(settings, tmp_path, "merger", "merger", "run", "--round-size", "1",
                       "--idle-exit", "20", "--group", "m-redis")  # fmt: skip
    central = start_cli(settings, tmp_path, "central", "central", "run", "--task", "fraud",
                        "--group", "c-redis", "--worker-id", "c1", "--idle-exit", "15",
                        "--checkpoint-interval", "0.5", "--summary-interval", "2")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=60)
    wait_for_log(central, "assigned", timeout=90)
    edge = start_cli(settings, tmp_path, "edge", "edge", "run", "--node", "e1", "--source",
                     str(edge_log), "--state-dir", str(tmp_path / "e1"), "--rate", str(RATE // 5),
                     "--summary-every", "100", "--globals-from", "registry",
                     "--drain-timeout", "60")  # fmt: skip
    replay = start_cli(settings, tmp_path, "replay", "replay", str(central_log), "--no-progress",
                       "--rate", str(RATE))  # fmt: skip

    wait_records(boot, settings.topic("scores"), EVENTS // 5)
    outage(server, settings, [central, merger], kill=False, outage_number=1)
    wait_records(boot, settings.topic("scores"), EVENTS // 2, timeout=120)
    outage(server, settings, [central, merger], kill=True, outage_number=2)
    edge_log_mark = Path(edge.log_path).stat().st_size  # type: ignore[attr-defined]

    assert wait_exit(replay, timeout=240) == 0
    for name, proc in {"merger": merger, "central": central, "edge": edge}.items():
        assert wait_exit(proc, timeout=240) == 0, name
        text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
        if name != "edge":  # they wrote while Redis was away, kept it, and wrote it after
            assert text.count("redis unavailable") >= 2, f"{name}:\n{text[-3000:]}"
            assert text.count("redis back") >= 2, f"{name}:\n{text[-3000:]}"

    scores = [r for _p, _o, r in decoded(boot, settings.topic("scores"))]
    central_ids = [r["event_id"] for r in scores if r["source"] == "central"]
    assert Counter(central_ids) == Counter(event_ids(central_log))

    url = settings.redis_url.get_secret_value()  # type: ignore[union-attr]
    client = redis.Redis.from_url(url)
    learned = 0
    for p, ref in reference_models(settings).items():
        key = f"{settings.redis_prefix}:checkpoint:c-redis:{p}"
        cp = CODEC.decode(client.get(key), expected="CentralCheckpoint")
        assert_checkpoint_matches(cp, ref)
        learned += cp["counters"].get("learned", 0)
    client.close()
    assert learned == EVENTS

    globals_topic = read_topic(boot, settings.topic("global-model"))
    on_topic = [CODEC.decode(v) for _p, _o, _k, v in globals_topic]
    keys = RegistryKeys(settings.redis_prefix)
    registry = RegistryWriter(url, codec=CODEC, keys=keys).setup()
    assert registry.current_version("fraud-linear") == max(int(r["version"]) for r in on_topic)
    registry.close()
    edge_text = Path(edge.log_path).read_bytes()  # type: ignore[attr-defined]
    assert b"global model adopted" in edge_text[edge_log_mark:]


def test_a_central_worker_started_while_redis_is_down_waits_for_it(
    own_redis, prism_topics, tmp_path: Path
) -> None:
    """A supervisor's restart can land in a Redis outage (found by ``make chaos``, seed
    1861302288): the worker must wait for Redis (``--redis-wait``), not die at start."""
    server, settings = own_redis
    assert redis_server.stop(server)
    central = start_cli(settings, tmp_path, "central", "central", "run", "--task", "fraud",
                        "--group", "c-late", "--worker-id", "c1", "--idle-exit", "4")  # fmt: skip
    wait_for_log(central, "while='starting'", timeout=60)
    time.sleep(2)  # still waiting, a few retries later
    assert central.poll() is None, Path(central.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
    redis_server.restart(server)
    wait_for_log(central, "assigned", timeout=90)
    assert wait_exit(central, timeout=120) == 0
    text = Path(central.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    assert "Traceback" not in text, text[-3000:]

"""``prism replay`` against a broker that is down at its start and killed -9 under it.

The design promises each replayed record on its topic **exactly once**: the
central worker dead-letters a repeated event id (``duplicate-events``) rather
than score it, so a replay that re-sent a record would show up as a dead
letter, and one that dropped it as an unscored event. The idempotent producer
(``acks=all``) retries every unacknowledged record in order for as long as it
takes, and the broker drops a retry it already holds.

- the replay started while its broker is down waits for it (``--wait-broker``),
  then rides out three SIGKILLs and restarts while it sends: exit 0, every event id of the
  log once on ``transactions`` and once on ``labels``, nothing else;
- a broker that never comes back ends the replay after ``--wait-broker``
  seconds: exit 2 at the start, and exit 1 naming how many records were not
  delivered mid-run.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from helpers.broker import controller_port, kill_broker
from helpers.runs import datagen_log, start_cli, wait_records
from helpers.services import decoded, wait_exit, wait_for_log

from prism.stack import kafka as local_kafka
from prism.stack.topics import create_topics
from runtime.settings import Settings
from schemas.eventlog import read_events

pytestmark = pytest.mark.integration
EVENTS = 3_000  # transactions, each with its late label: ~6,000 records
RATE = 50  # records/s: the replay sends for ~2 min, so every kill hits it mid-stream


def _ports(broker: Settings, boot: str) -> tuple[int, int]:
    return int(boot.rsplit(":", 1)[1]), controller_port(broker)


@pytest.fixture
def own_broker(test_settings: Settings, tmp_path: Path):
    broker = Settings(state_dir=tmp_path / "broker")
    bootstrap = local_kafka.start(broker)
    try:
        prefix = f"t{os.urandom(4).hex()}"
        settings = test_settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "redis_prefix": prefix,
                "topic_prefix": prefix + ".",
            }
        )
        create_topics(settings, bootstrap=bootstrap, partitions=3)
        yield broker, settings
    finally:
        local_kafka.stop(broker)


def test_replay_waits_for_the_broker_and_survives_kill9s_every_record_once(
    own_broker, tmp_path: Path
) -> None:
    broker, settings = own_broker
    boot = settings.kafka_bootstrap or ""
    ports = _ports(broker, boot)
    log = datagen_log(tmp_path, "replay", EVENTS, 31)
    sent = Counter((e.record_type, e.record["event_id"]) for e in read_events(log))
    kill_broker(broker)  # down before the replay starts

    replay = start_cli(settings, tmp_path, "replay", "replay", str(log), "--no-progress",
                       "--rate", str(RATE), "--wait-broker", "240")  # fmt: skip
    started = time.monotonic()
    wait_for_log(replay, "waiting up to 240 s for Kafka", timeout=60)
    time.sleep(max(2.0, started + 20.0 - time.monotonic()))  # past a 15 s connect check
    local_kafka.start(broker, ports=ports)
    transactions = settings.topic("transactions")
    for eighths in (1, 2, 3):  # half the log is still to be sent after the last kill
        wait_records(boot, transactions, EVENTS * eighths // 8, timeout=240)
        assert replay.poll() is None, "the replay ended before the kill"
        kill_broker(broker)
        time.sleep(3)  # records pile up in the producer, some in flight when it died
        local_kafka.start(broker, ports=ports)

    assert wait_exit(replay, timeout=400) == 0, Path(replay.log_path).read_text()[-3000:]
    got = _on_topics(settings)
    missing = sent - got
    twice = {k: n for k, n in got.items() if n > 1}
    assert not missing, f"{sum(missing.values())} records lost, e.g. {list(missing)[:5]}"
    assert not twice, f"{len(twice)} records more than once, e.g. {list(twice.items())[:5]}"
    assert got == sent


def _on_topics(settings: Settings, timeout: float = 90.0) -> Counter[tuple[str, str]]:
    """(record type, event id) -> copies on transactions and labels, once the broker answers
    for every partition again (a leader may still be moving after the last restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got: Counter[tuple[str, str]] = Counter()
            for name, rtype in (("transactions", "Transaction"), ("labels", "Label")):
                for _p, _o, record in decoded(settings.kafka_bootstrap or "", settings.topic(name)):
                    got[(rtype, record["event_id"])] += 1
            return got
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_replay_gives_up_after_wait_broker_and_says_so(own_broker, tmp_path: Path) -> None:
    broker, settings = own_broker
    log = datagen_log(tmp_path, "giveup", 1_000, 32)
    records = sum(1 for _ in read_events(log))
    kill_broker(broker)
    start = time.monotonic()
    at_start = start_cli(settings, tmp_path, "at-start", "replay", str(log), "--no-progress",
                         "--wait-broker", "6")  # fmt: skip
    assert wait_exit(at_start, timeout=60) == 2
    assert 6 <= time.monotonic() - start < 40
    text = Path(at_start.log_path).read_text()
    assert "cannot reach Kafka: after waiting 6 s (--wait-broker)" in text, text[-2000:]

    local_kafka.start(broker, ports=_ports(broker, settings.kafka_bootstrap or ""))
    mid_run = start_cli(settings, tmp_path, "mid-run", "replay", str(log), "--no-progress",
                        "--rate", "200", "--wait-broker", "8")  # fmt: skip
    wait_records(settings.kafka_bootstrap or "", settings.topic("transactions"), 100, timeout=120)
    kill_broker(broker)  # and left dead
    assert wait_exit(mid_run, timeout=120) == 1
    text = Path(mid_run.log_path).read_text()
    line = next(x for x in text.splitlines() if x.startswith("prism: error: replay: "))
    failed, sent = int(line.split()[3]), int(line.split()[5])
    assert 0 < failed <= sent < records, line
    assert f"{failed} of {sent} records sent not delivered" in line, line
    assert "Kafka acknowledged nothing for 8 s (--wait-broker)" in line, line
    assert f"events={sent} delivered={sent - failed} " in text

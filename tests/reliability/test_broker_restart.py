"""#10.1 -- the real broker stopped mid-replay (SIGTERM, then SIGKILL) and restarted.

A broker of the test's own carries a paced replay while a central worker, the
merge job and an edge agent run. The broker is stopped cleanly once and killed
once, each time restarted on the same ports. Nobody is restarted by hand:

- every replayed event has exactly one central score, and every event of the
  edge's log exactly one edge score (on the topic while linked, in its offline
  file while cut off);
- every edge summary is on model-updates once and merged exactly once;
- the central checkpoints equal a reference learned in-process from what is in
  Kafka (1e-9): nothing learned twice or skipped across the outages;
- the services were never restarted (one process each, exit 0 after idling).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.broker import controller_port, kill_broker
from helpers.exact_run import assert_exact_run, assert_services_finished
from helpers.runs import datagen_log, event_ids, start_cli, wait_records
from helpers.services import decoded, wait_exit, wait_for_log

from prism.stack import kafka as local_kafka
from prism.stack.topics import create_topics
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
EVENTS = 12_000  # replayed to the central worker at RATE events/s
RATE = 600
EDGE_EVENTS = 3_000


@pytest.fixture
def own_broker(test_settings: Settings, tmp_path: Path):
    broker = Settings(state_dir=tmp_path / "broker")
    bootstrap = local_kafka.start(broker)
    try:
        prefix = f"t{os.urandom(4).hex()}"
        yield (
            broker,
            test_settings.model_copy(update={"kafka_bootstrap": bootstrap, "redis_prefix": prefix}),
        )
    finally:
        local_kafka.stop(broker)


def test_broker_sigterm_and_sigkill_mid_replay_nothing_lost_nothing_twice(
    own_broker, tmp_path: Path
) -> None:
    broker, settings = own_broker
    boot = settings.kafka_bootstrap or ""
    create_topics(settings, bootstrap=boot, partitions=3)
    central_log, edge_log = (
        datagen_log(tmp_path, "central", EVENTS, 11),
        datagen_log(tmp_path, "edge", EDGE_EVENTS, 5),
    )
    port, controller = int(boot.rsplit(":", 1)[1]), controller_port(broker)

    merger = start_cli(settings, tmp_path, "merger", "merger", "run", "--round-size", "1",
                    "--idle-exit", "25", "--group", "m-restart")  # fmt: skip
    central = start_cli(settings, tmp_path, "central", "central", "run", "--task", "fraud",
                     "--group", "c-restart", "--worker-id", "c1", "--idle-exit", "15",
                     "--checkpoint-interval", "1")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=60)
    wait_for_log(central, "assigned", timeout=90)
    edge = start_cli(settings, tmp_path, "edge", "edge", "run", "--node", "e1", "--source",
                  str(edge_log), "--state-dir", str(tmp_path / "e1"), "--rate", str(RATE // 4),
                  "--summary-every", "150", "--drain-timeout", "120")  # fmt: skip
    replay = start_cli(settings, tmp_path, "replay", "replay", str(central_log), "--no-progress",
                    "--rate", str(RATE))  # fmt: skip
    services = {"merger": merger, "central": central, "edge": edge}
    # linked before the outage, which it must notice ("link down"): on a busy machine the
    # agent's start outlasted the replay's first fifth, and the broker was stopped under it
    wait_for_log(edge, "linked=True", timeout=120)

    wait_records(boot, settings.topic("scores"), EVENTS // 5)
    assert local_kafka.stop(broker)  # SIGTERM of the real broker
    wait_for_log(edge, "link down", timeout=60)
    time.sleep(3)  # an outage of a few seconds: records pile up on every side
    local_kafka.start(broker, ports=(port, controller))
    wait_records(boot, settings.topic("scores"), EVENTS // 2, timeout=120)
    kill_broker(broker)
    time.sleep(3)
    local_kafka.start(broker, ports=(port, controller))

    assert wait_exit(replay, timeout=240) == 0
    assert_services_finished(services, timeout=240)  # the same processes, on their own
    assert_exact_run(
        settings,
        tmp_path,
        central_log=central_log,
        edge_log=edge_log,
        group="c-restart",
        events=EVENTS,
    )


def test_quiet_broker_outage_is_not_idle(own_broker, tmp_path: Path) -> None:
    """Services asked to exit when idle wait out a broker outage and the producers' reconnect.

    The outage and the pause after the restart together last longer than the
    idle limit; the central worker and the merger must still be running when
    the second half of the log arrives, and score (merge) it.
    """
    broker, settings = own_broker
    boot = settings.kafka_bootstrap or ""
    create_topics(settings, bootstrap=boot, partitions=3)
    # inline labels: the two logs share event time, a late label of the second would be
    # (rightly) refused as a label for an event that never came before its time
    first = datagen_log(tmp_path, "first", 600, 21, labels="inline")
    second = datagen_log(tmp_path, "second", 600, 22, labels="inline")
    port, controller = int(boot.rsplit(":", 1)[1]), controller_port(broker)
    merger = start_cli(settings, tmp_path, "merger", "merger", "run", "--round-size", "1",
                    "--idle-exit", "6", "--group", "m-quiet")  # fmt: skip
    central = start_cli(settings, tmp_path, "central", "central", "run", "--task", "fraud",
                     "--group", "c-quiet", "--worker-id", "c1", "--idle-exit", "6",
                     "--summary-interval", "1")  # fmt: skip
    wait_for_log(merger, "merger starting", timeout=60)
    wait_for_log(central, "assigned", timeout=90)
    replay = start_cli(settings, tmp_path, "replay1", "replay", str(first), "--no-progress")
    assert wait_exit(replay, timeout=120) == 0
    wait_records(boot, settings.topic("scores"), 600)

    assert local_kafka.stop(broker)
    time.sleep(8)  # longer than --idle-exit
    local_kafka.start(broker, ports=(port, controller))
    time.sleep(4)  # the broker is back, the producers not yet: still under the idle limit
    for name, proc in {"merger": merger, "central": central}.items():
        assert proc.poll() is None, f"{name} stopped as idle during the outage"
    replay = start_cli(settings, tmp_path, "replay2", "replay", str(second), "--no-progress")
    assert wait_exit(replay, timeout=120) == 0

    for name, proc in {"merger": merger, "central": central}.items():
        assert wait_exit(proc, timeout=120) == 0, name
    scores = [r for _p, _o, r in decoded(boot, settings.topic("scores"))]
    assert Counter(r["event_id"] for r in scores) == Counter(event_ids(first) + event_ids(second))
    for proc in (merger, central):
        text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert "Traceback" not in text and "dead letter" not in text, text[-3000:]

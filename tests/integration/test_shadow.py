"""`prism shadow run` on the real stack, hybrid mode: edge vs central scores of the same events.

An edge in hybrid mode scores every event of a fraud log and forwards a
sample; the central worker scores the forwarded events. The shadow job's
disagreement (its /metrics and `prism status --json`) must equal what this
test recomputes from the scores topic itself; an undecodable record on
``scores`` goes to dead-letter; a restart of the job counts nothing twice.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from helpers.services import decoded, read_topic, service_env, wait_exit

from prism.cli import main
from runtime.settings import Settings
from schemas import Codec

pytestmark = pytest.mark.integration
CODEC = Codec()
THRESHOLD = 0.1


def scrape(port: int) -> dict[tuple[str, str], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, s.labels.get("model", "")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def expected(bootstrap: str, topic: str) -> dict[str, float]:
    """The disagreement recomputed from the scores topic: first edge and first central score
    of each event, paired by event id."""
    edge: dict[str, float] = {}
    central: dict[str, float] = {}
    for _p, _o, r in decoded(bootstrap, topic):
        side = central if r["source"] == "central" else edge
        side.setdefault(r["event_id"], float(r["score"]))
    both = sorted(set(edge) & set(central))
    differ = sum((edge[e] >= THRESHOLD) != (central[e] >= THRESHOLD) for e in both)
    gap = sum(abs(edge[e] - central[e]) for e in both)
    return {
        "pairs": len(both),
        "differ": differ,
        "rate": differ / len(both),
        "gap": gap / len(both),
    }


def wait_until(check, what: str, timeout: float = 120.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(proc.log_path).read_text()[-3000:]
            raise AssertionError(f"process exited before {what}:\n{tail}")
        try:
            if value := check():
                return value
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_shadow_disagreement_matches_the_score_topics_and_survives_a_restart(
    test_settings: Settings, prism_topics, spawn, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PRISM_REDIS_PREFIX", f"t{uuid.uuid4().hex[:8]}")  # a registry of its own
    bootstrap = test_settings.kafka_bootstrap or ""
    log = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", "1500", "--sites", "1", "--regions", "1",
                 "--seed", "5", "--fraud-rate", "0.1", "--labels", "inline",
                 "--out", str(log)]) == 0  # fmt: skip
    central = spawn("central", "run", "--task", "fraud", "--group", "shc", "--worker-id", "w1",
                    "--idle-exit", "8", log_name="central.log")  # fmt: skip
    edge = spawn("edge", "run", "--node", "h1", "--source", str(log), "--mode", "hybrid",
                 "--forward-sample", "0.3", "--state-dir", str(tmp_path / "h1"),
                 "--drain-timeout", "60", log_name="edge.log")  # fmt: skip
    shadow = spawn("shadow", "run", "--group", "shg", "--threshold", str(THRESHOLD),
                   "--metrics-port", "0", log_name="shadow.log")  # fmt: skip
    said = re.compile(r"metrics endpoint http://[\d.]+:(\d+)/")
    found = wait_until(lambda: said.search(Path(shadow.log_path).read_text()), "port", proc=shadow)
    port = int(found[1])
    assert wait_exit(edge) == 0 and wait_exit(central) == 0
    want = expected(bootstrap, prism_topics["scores"])
    bad = Producer({"bootstrap.servers": bootstrap})
    bad.produce(prism_topics["scores"], b"\x00not a score", key=b"e-bad")
    bad.produce(prism_topics["scores"], None, key=b"e-tomb")  # a tombstone
    assert bad.flush(30) == 0
    assert want["pairs"] > 100 and 0 < want["differ"] < want["pairs"]  # a test that can fail
    model = "fraud-linear"

    def caught_up():
        m = scrape(port)
        return m if m.get(("prism_shadow_paired_events", model)) == want["pairs"] else None

    metrics = wait_until(caught_up, "the shadow job to pair every event", proc=shadow)
    assert metrics[("prism_shadow_disagreement_ratio", model)] == pytest.approx(
        want["rate"], abs=1e-12
    )
    assert metrics[("prism_shadow_score_gap_ratio", model)] == pytest.approx(want["gap"], abs=1e-9)
    assert metrics[("prism_shadow_pairs_total", model)] == want["pairs"]
    assert metrics[("prism_shadow_decisions_differ_total", model)] == want["differ"]

    def dead_letters():
        got = [r for _p, _o, r in decoded(bootstrap, prism_topics["dead-letter"])]
        return got if len(got) >= 2 else None

    dead = wait_until(dead_letters, "the bad records' dead letters", proc=shadow)
    assert {d["service"] for d in dead} == {"shadow"} and len(dead) == 2
    assert {(d["key"], d["reason_code"]) for d in dead} == {
        (b"e-bad", "bad-marker"),
        (b"e-tomb", "empty"),
    }
    print(f"shadow figures: {want}")

    def status() -> dict:
        out = subprocess.run([sys.executable, "-m", "prism", "status", "--json"],
                             env=service_env(test_settings), capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        return json.loads(out.stdout)["shadow"]

    shown = wait_until(lambda: status().get("shg"), "prism status to show the group")[model]
    assert shown["pairs"] == want["pairs"] and shown["decisions_differ"] == want["differ"]
    assert shown["disagreement_rate"] == pytest.approx(want["rate"], abs=1e-12)

    shadow.terminate()  # a restart reads on from the saved offsets with the saved totals
    assert wait_exit(shadow, 60) == 0
    again = spawn("shadow", "run", "--group", "shg", "--threshold", str(THRESHOLD),
                  "--idle-exit", "5", log_name="shadow2.log")  # fmt: skip
    assert wait_exit(again) == 0
    after = status()["shg"][model]
    assert after["pairs"] == want["pairs"] and after["decisions_differ"] == want["differ"]
    assert len(read_topic(bootstrap, prism_topics["dead-letter"])) == 2  # not sent again

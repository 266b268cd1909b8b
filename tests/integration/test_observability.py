"""The services' /metrics, scraped live: the dashboard reads only what they expose.

A central worker, the merger and an edge agent run against the session's real
Kafka and Redis; one fraud log goes to the central worker's events topic (with
one undecodable record) and to the edge's local topic. Their scrapes must hold
every metric name the Grafana dashboard's PromQL reads, and the histograms
must count what the services did.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from helpers.promql import exposed_names, metric_names
from prometheus_client.parser import text_string_to_metric_families

from prism.cli import main
from runtime.settings import Settings
from schemas import Codec
from schemas.eventlog import read_events

pytestmark = pytest.mark.integration
CODEC = Codec()
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "prism.json"
EVENTS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> list:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return list(text_string_to_metric_families(text))


def value(families: list, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over the series whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for f in families
        for s in f.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        producer.produce(topic, v, key=b"k")
    assert producer.flush(30) == 0


def dashboard_metrics() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {n for p in panels for t in p["targets"] for n in metric_names(t["expr"])}


def test_the_dashboard_reads_only_metrics_the_services_expose(
    test_settings: Settings, prism_topics, unique_topic, spawn, tmp_path, monkeypatch
) -> None:
    s = test_settings
    bootstrap = s.kafka_bootstrap or ""
    monkeypatch.setenv("PRISM_REDIS_PREFIX", f"t{uuid.uuid4().hex[:8]}")  # a registry of its own
    for name, v in (("KAFKA_BOOTSTRAP", bootstrap), ("TOPIC_PREFIX", s.topic_prefix),
                    ("STATE_DIR", str(s.state_dir))):  # fmt: skip
        monkeypatch.setenv(f"PRISM_{name}", v)
    log = tmp_path / "fraud.avro"
    assert main(["datagen", "fraud", "--events", str(EVENTS), "--sites", "1", "--regions", "1",
                 "--seed", "5", "--labels", "inline", "--out", str(log)]) == 0  # fmt: skip
    assert main(["replay", str(log), "--no-progress"]) == 0
    produce(bootstrap, prism_topics["transactions"], [b"\x00not avro"])
    local = unique_topic(1)
    produce(bootstrap, local, [CODEC.encode(e.record_type, e.record) for e in read_events(log)])

    ports = {"central": free_port(), "merger": free_port(), "edge": free_port()}
    spawn("central", "run", "--task", "fraud", "--group", "gobs", "--worker-id", "w1",
          "--checkpoint-every", "100", "--summary-interval", "1",
          "--metrics-port", str(ports["central"]), log_name="central.log")  # fmt: skip
    spawn("merger", "run", "--round-size", "1", "--round-timeout", "1", "--group", "gobs-merge",
          "--metrics-port", str(ports["merger"]), log_name="merger.log")  # fmt: skip
    spawn("edge", "run", "--node", "n1", "--source", f"topic:{local}", "--state-dir",
          str(tmp_path / "n1"), "--summary-every", "100,2s",
          "--metrics-port", str(ports["edge"]), log_name="edge.log")  # fmt: skip

    def done(scrapes: dict[str, list]) -> bool:
        c, m, e = scrapes["central"], scrapes["merger"], scrapes["edge"]
        return (
            value(c, "prism_events_total", kind="events") >= EVENTS
            and value(c, "prism_dead_letters_total") >= 1
            and value(c, "prism_checkpoints_total") >= 1
            and value(m, "prism_merge_rounds_total") >= 2
            and value(e, "prism_edge_events_total") >= EVENTS
            and value(e, "prism_edge_summaries_total", state="delivered") >= 1
            # a score's latency is binned when its batch is acknowledged, a moment after
            # the event counts: equal once the last batch's acks are in
            and value(c, "prism_score_latency_seconds_count")
            == value(c, "prism_events_total", kind="events")
        )

    deadline, scrapes = time.monotonic() + 150, {}
    while time.monotonic() < deadline:
        try:
            scrapes = {name: scrape(port) for name, port in ports.items()}
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        if done(scrapes):
            break
        time.sleep(1)
    assert scrapes and done(scrapes), {k: len(v) for k, v in scrapes.items()}

    exposed = set().union(*(exposed_names(f) for f in scrapes.values()))
    missing = dashboard_metrics() - exposed
    assert not missing, f"the dashboard reads metrics no service exposes: {sorted(missing)}"

    c, m, e = scrapes["central"], scrapes["merger"], scrapes["edge"]
    # every scored event's latency is observed once, Kafka timestamp -> score delivered
    assert value(c, "prism_score_latency_seconds_count") == value(c, "prism_events_total")
    assert value(c, "prism_score_latency_seconds_sum") > 0
    assert value(e, "prism_edge_score_latency_seconds_count") == value(e, "prism_edge_events_total")
    assert value(c, "prism_checkpoint_duration_seconds_count") == value(
        c, "prism_checkpoints_total"
    )
    rounds = value(m, "prism_merge_rounds_total")
    assert value(m, "prism_merge_duration_seconds_count") == rounds
    assert value(m, "prism_round_duration_seconds_count") == rounds
    assert value(e, "prism_edge_checkpoint_duration_seconds_count") >= 1
    assert 0 < value(c, "prism_model_metric_ratio", metric="roc_auc") <= 1
    assert 0 < value(e, "prism_edge_model_metric_ratio", metric="roc_auc", mode="private") <= 1
    for families in scrapes.values():  # the default collectors, on each service's own registry
        assert value(families, "process_cpu_seconds_total") > 0
        assert value(families, "python_info") == 1

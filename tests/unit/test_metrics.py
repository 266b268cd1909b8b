"""Metric plumbing (runtime/metrics.py) and the names every service exposes.

The batch histogram is checked against prometheus_client's own Histogram as
the oracle: same values in, the same exposition out. The naming rules are the
Prometheus conventions, checked over a live exposition of each service's registry.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agents.metrics import EdgeMetrics
from runtime.metrics import LATENCY_BUCKETS, BatchHistogram, service_registry
from runtime.secagg import STEP_TOPICS
from streams.merger.secure import Outcome, SecureConfig, SecureRounds
from streams.merger.secure_loop import SecureFeed
from streams.telemetry import Telemetry

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
values = st.lists(
    st.one_of(
        st.sampled_from([*BUCKETS, 0.0]),  # on a bound: le means "in it"
        st.floats(0, 100, allow_nan=False),
    ),
    max_size=60,
)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple, float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


@given(batches=st.lists(values, max_size=5))
def test_batch_histogram_exposes_what_prometheus_client_would(batches: list[list[float]]) -> None:
    ours, oracle = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lat_seconds", "doc", BUCKETS, {"service": "s"})
    ours.register(batch)
    reference = Histogram("lat_seconds", "doc", ["service"], buckets=BUCKETS, registry=oracle)
    reference.labels("s")  # a labelled child is exposed from its first use
    for i, b in enumerate(batches):
        if i % 2:  # both entry points: a batch, and value by value
            batch.observe_many(np.asarray(b))
        else:
            for v in b:
                batch.observe(v)
        for v in b:
            reference.labels("s").observe(v)
    got, want = samples(ours, "lat_seconds"), samples(oracle, "lat_seconds")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9), key


def test_batch_histogram_refuses_unsorted_buckets() -> None:
    with pytest.raises(ValueError, match="increasing"):
        BatchHistogram("x_seconds", "doc", (1.0, 0.5), {})


def test_every_service_registry_has_the_process_platform_and_gc_collectors() -> None:
    for registry in (
        service_registry(),
        Telemetry("central-fraud").registry,
        EdgeMetrics("n1", lambda: SNAPSHOT).registry,
    ):
        names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
        assert "python_gc_collections" in names


SNAPSHOT = {
    "events": 5,
    "scores_by_source": {"local": 2, "global": 3},
    "offline_scores": 0,
    "dead_letters": {"undecodable": 1},
    "internal_errors": 0,
    "summaries_cut": 2,
    "summaries_delivered": 1,
    "fallback_ratio": 0.4,
    "outbox_unsent": 1,
    "connected": True,
    "global_version": 3,
    "model": "fraud-linear",
    "mode": "private",
    "quality": {"roc_auc": 0.8, "f1": 0.5},
    "dp_epsilon": 2.5,
    "dp_budget_spent": True,
    "secagg_rounds": {"joined": 3, "delivered": 2, "left": 1},
    "secagg_refused": {"bad-signature": 1},
}


def test_the_edge_exposes_its_privacy_spend_and_no_epsilon_without_dp() -> None:
    exposed = samples(EdgeMetrics("n1", lambda: SNAPSHOT).registry, "prism_edge_dp")
    node = (("node", "n1"),)
    assert exposed == {
        ("prism_edge_dp_epsilon", node): 2.5,
        ("prism_edge_dp_budget_spent", node): 1.0,
    }
    plain = SNAPSHOT | {"dp_epsilon": None, "dp_budget_spent": False}
    exposed = samples(EdgeMetrics("n1", lambda: plain).registry, "prism_edge_dp")
    assert exposed == {("prism_edge_dp_budget_spent", node): 0.0}


def _touched_telemetry() -> Telemetry:
    """Every family with a child, so each shows up in the exposition."""
    t = Telemetry("merger")
    t.events.labels("merger", "updates").inc()
    t.dead_letters.labels("merger", "undecodable").inc()
    t.lag.labels("merger", "t", "0").set(1)
    t.metric.labels("merger", "fraud-linear", "roc_auc").set(0.9)
    t.checkpoints.labels("merger").inc()
    t.summaries.labels("merger").inc()
    t.merge_rounds.labels("merger", "m").inc()
    t.excluded.labels("merger", "m").inc()
    t.model_version.labels("merger", "m").set(1)
    t.held_back.labels("merger", "m").inc()
    t.pending.labels("merger").set(0)
    t.checkpoint_seconds.labels("merger").observe(0.01)
    t.merge_seconds.labels("merger", "m").observe(0.001)
    t.round_seconds.labels("merger", "m").observe(3)
    t.score_latency.observe_many([0.002, 0.5])
    t.secagg_rounds.labels("merger", "m", "opened").inc()
    t.secagg_abandoned.labels("merger", "m", "unconfirmed").inc()
    t.secagg_dropouts.labels("merger", "m", "input").inc()
    t.secagg_refused.labels("merger", "bad-signature").inc()
    t.secagg_round_seconds.labels("merger", "m").observe(4)
    return t


PRISM_FAMILIES = {
    "telemetry": lambda: _touched_telemetry().registry,
    "edge": lambda: EdgeMetrics("n1", lambda: SNAPSHOT).registry,
}


@pytest.mark.parametrize("which", PRISM_FAMILIES)
def test_prism_metric_names_follow_the_prometheus_conventions(which: str) -> None:
    text = generate_latest(PRISM_FAMILIES[which]()).decode()
    families = [
        f
        for f in text_string_to_metric_families(text)
        if f.name.startswith("prism_") and not f.name.endswith("_created")  # a counter's start
    ]
    assert families
    for f in families:
        assert re.fullmatch(r"prism_[a-z_]+", f.name), f.name
        assert "per_second" not in f.name, f"{f.name}: a rate is rate() over a counter"
        assert not f.name.endswith("_share"), f"{f.name}: a ratio ends in _ratio"
        sample_names = {s.name for s in f.samples}
        if f.type == "counter":
            assert sample_names <= {f"{f.name}_total", f"{f.name}_created"}, f.name
        if f.type == "histogram":
            assert f.name.endswith("_seconds"), f.name
            bounds = [float(s.labels["le"]) for s in f.samples if s.name.endswith("_bucket")]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf
        if f.name.endswith("_ratio"):
            assert all(0 <= s.value <= 1 for s in f.samples), f.name


def test_the_edge_counts_its_secure_rounds_and_the_merger_records_it_refused() -> None:
    exposed = samples(EdgeMetrics("n1", lambda: SNAPSHOT).registry, "prism_edge_secagg")
    assert exposed == {
        ("prism_edge_secagg_rounds_total", (("node", "n1"), ("outcome", "joined"))): 3,
        ("prism_edge_secagg_rounds_total", (("node", "n1"), ("outcome", "delivered"))): 2,
        ("prism_edge_secagg_rounds_total", (("node", "n1"), ("outcome", "left"))): 1,
        ("prism_edge_secagg_refused_records_total",
         (("node", "n1"), ("reason", "bad-signature"))): 1,
    }  # fmt: skip


def test_the_merger_turns_secure_round_outcomes_into_its_metrics() -> None:
    t = Telemetry("merger")
    rounds = SecureRounds(SecureConfig(), current=lambda _m: None,
                          merged_before=lambda _n, _s: False)  # fmt: skip
    rounds.outcomes = [
        Outcome("fraud-linear", "unmasked", None, 3.0, {"shares": 0, "input": 1}),
        Outcome("fraud-linear", "abandoned", "unconfirmed", 12.0, {"confirm": 2}),
    ]
    topics = {t: t for t in STEP_TOPICS.values()}
    feed = SecureFeed(rounds, consumer=None, producer=None, codec=None,  # type: ignore[arg-type]
                      topics=topics, verifiers={}, dead=None, telemetry=t)  # type: ignore[arg-type]  # fmt: skip
    feed._observe()
    got = samples(t.registry, "prism_secagg")
    model = ("model", "fraud-linear")
    assert got[("prism_secagg_rounds_total", (model, ("outcome", "unmasked"),
                                              ("service", "merger")))] == 1  # fmt: skip
    assert got[("prism_secagg_abandoned_rounds_total", (model, ("reason", "unconfirmed"),
                                                        ("service", "merger")))] == 1  # fmt: skip
    assert got[("prism_secagg_dropouts_total", (model, ("service", "merger"),
                                                ("step", "confirm")))] == 2  # fmt: skip
    assert ("prism_secagg_dropouts_total", (model, ("service", "merger"), ("step", "shares"))) \
        not in got  # fmt: skip
    assert got[("prism_secagg_round_duration_seconds_count", (model, ("service", "merger")))] == 2
    assert got[("prism_secagg_round_duration_seconds_sum", (model, ("service", "merger")))] == 15
    assert rounds.outcomes == []


def test_the_central_latency_buckets_span_a_caught_up_and_a_backlogged_worker() -> None:
    assert LATENCY_BUCKETS[0] <= 0.001 and LATENCY_BUCKETS[-1] >= 60

"""Prometheus metrics of a stream service, in a registry of its own.

A registry per service object (not prometheus_client's global one) lets
several services live in one process -- tests, ``prism up`` -- without
"duplicated timeseries" errors; :meth:`Telemetry.serve` exposes it over HTTP.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class Telemetry:
    """The metrics every Prism stream service reports (labels: service, and the rest)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "prism_events_total",
            "Records processed, by topic kind.",
            ["service", "kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "prism_dead_letters_total",
            "Records sent to dead-letter, by reason.",
            ["service", "reason"],
            registry=r,
        )
        self.events_per_s = Gauge(
            "prism_events_per_second", "Events/s over the last interval.", ["service"], registry=r
        )
        self.lag = Gauge(
            "prism_consumer_lag",
            "High watermark minus position, by partition.",
            ["service", "topic", "partition"],
            registry=r,
        )
        self.metric = Gauge(
            "prism_model_metric",
            "Prequential metric over the sliding window.",
            ["service", "metric"],
            registry=r,
        )
        self.checkpoints = Counter(
            "prism_checkpoints_total", "Checkpoints written.", ["service"], registry=r
        )
        self.summaries = Counter(
            "prism_summaries_published_total", "WeightSummaries published.", ["service"], registry=r
        )
        self.merge_rounds = Counter(
            "prism_merge_rounds_total", "Rounds closed, by model.", ["service", "model"], registry=r
        )
        self.excluded = Counter(
            "prism_excluded_updates_total",
            "Updates a round excluded (screening, staleness), by model.",
            ["service", "model"],
            registry=r,
        )
        self.model_version = Gauge(
            "prism_model_version",
            "Latest published version, by model.",
            ["service", "model"],
            registry=r,
        )
        self.pending = Gauge(
            "prism_pending_events", "Scored events waiting for a label.", ["service"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint; ``port=0`` picks a free one, which is returned."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_address[1])

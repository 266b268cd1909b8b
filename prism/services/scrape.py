"""A Prometheus scrape config for the services of ``prism up``: file-SD targets.

Prometheus's ``file_sd_configs`` re-reads the file when it changes, so one
``prometheus.yml`` pointing at it follows whatever ``prism up`` started. Each
target is labelled with its service name and role (central, merger, edge),
which the Grafana dashboard groups by, as the compose setup's job names do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prism.services.supervisor import Service

__all__ = ["file_sd_targets", "write_scrape_config"]


def _role(name: str) -> str:
    return name.split("-", 1)[0]  # central-fraud -> central, edge-0 -> edge


def file_sd_targets(services: list[Service], host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """One target group per service that serves /metrics (Prometheus file-SD format)."""
    return [
        {
            "targets": [f"{host}:{s.metrics_port}"],
            "labels": {"job": _role(s.name), "prism_service": s.name},
        }
        for s in services
        if s.metrics_port is not None
    ]


def write_scrape_config(home: Path, services: list[Service]) -> tuple[Path, Path]:
    """``prometheus-targets.json`` and a ``prometheus.yml`` that reads it; returns both."""
    home.mkdir(parents=True, exist_ok=True)
    targets = home / "prometheus-targets.json"
    targets.write_text(json.dumps(file_sd_targets(services), indent=1) + "\n")
    config = home / "prometheus.yml"
    config.write_text(
        "# Scrapes every service of `prism up`, which wrote this file and its targets.\n"
        "global:\n"
        "  scrape_interval: 10s\n"
        "scrape_configs:\n"
        "  - job_name: prism\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets))}]\n"
    )
    return config, targets
